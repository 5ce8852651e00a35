"""The store: schema version, migration of the original project's SQLite database, WAL. The tests taking
`new_db` run on PostgreSQL too (tests/postgres/test_store_on_postgres.py)."""

import json
import sqlite3
from datetime import UTC, datetime

from app.budget.spending import PriceBook, Spending, instance_cost
from app.config import DEFAULT_PRICES_FILE
from app.core import clock
from app.services.db import SCHEMA_VERSION, Database, ago

BOOK = PriceBook.load(DEFAULT_PRICES_FILE)

ORIGINAL_SCHEMA = """CREATE TABLE instances (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, public_ip TEXT, ami TEXT NOT NULL, instance_type TEXT NOT NULL,
    state TEXT NOT NULL, ssh_string TEXT, security_group_id TEXT, backend_used TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"""


def test_original_database_migrates_without_losing_a_row(tmp_path):
    path = tmp_path / "instances.db"
    with sqlite3.connect(path) as conn:
        conn.execute(ORIGINAL_SCHEMA)
        conn.executemany("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?)", [
            ("i-0123456789abcdef0", "old-1", "1.2.3.4", "ami-0123456789abcdef0", "t3.micro", "running",
             "ssh -i k.pem ec2-user@1.2.3.4", None, "awscli", "2026-02-20 10:00:00", "2026-02-20 10:00:00"),
            ("i-0123456789abcdef1", "old-2", None, "ami-0123456789abcdef0", "t3.micro", "stopped", None,
             "sg-0123456789abcdef0", "awscli", "2026-02-20 11:00:00", "2026-02-20 11:00:00"),
        ])
    db = Database(path)
    db.migrate()
    db.migrate()  # idempotent
    rows = db.list_instances(include_terminated=True)
    assert [r["name"] for r in rows] == ["old-1", "old-2"]
    assert rows[0]["public_ip"] == "1.2.3.4" and rows[1]["security_group_id"] == "sg-0123456789abcdef0"
    assert rows[0]["tags"] == {} and rows[0]["storage_gb"] is None
    conn = db.connect()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_8_moves_the_no_address_sentence_out_of_ssh_string(tmp_path):
    """Issue 25: scripts run $(jq -r .ssh_string); a v7 row holding a sentence there gets null and the reason."""
    path = tmp_path / "instances.db"
    db = Database(path)
    db.migrate()
    sentence = "no public IPv4 address (created with associate_public_ip false): reach it through a bastion"
    with db.transaction():
        db.upsert_instance({"id": "i-0123456789abcdef0", "name": "a", "state": "running", "created_at": "t0",
                            "updated_at": "t0", "ssh_string": sentence})
        db.upsert_instance({"id": "i-0123456789abcdef1", "name": "b", "state": "running", "created_at": "t0",
                            "updated_at": "t0", "ssh_string": "ssh -i k.pem ec2-user@1.2.3.4"})
    conn = db.connect()
    conn.execute("PRAGMA user_version = 7")
    Database(path).migrate()
    rows = {r["id"]: r for r in Database(path).list_instances()}
    assert rows["i-0123456789abcdef0"]["ssh_string"] is None
    assert rows["i-0123456789abcdef0"]["ssh_unavailable"] == sentence
    assert rows["i-0123456789abcdef1"]["ssh_string"] == "ssh -i k.pem ec2-user@1.2.3.4"
    assert rows["i-0123456789abcdef1"]["ssh_unavailable"] is None


def test_upsert_update_and_events(new_db):
    db = new_db
    db.upsert_instance({"id": "i-0123456789abcdef0", "name": "a", "state": "pending", "tags": {"k": "v"},
                        "created_at": "t0", "updated_at": "t0"})
    db.upsert_instance({"id": "i-0123456789abcdef0", "name": "b", "state": "running", "created_at": "t1",
                        "updated_at": "t1"})
    row = db.get_instance("i-0123456789abcdef0")
    assert (row["name"], row["state"], row["created_at"], row["tags"]) == ("b", "running", "t0", {"k": "v"})
    db.update_instance("i-0123456789abcdef0", {"state": "terminated"})
    assert db.list_instances() == [] and len(db.list_instances(include_terminated=True)) == 1
    db.add_event("i-0123456789abcdef0", "stop", "running", "stopping", "api", "req-1")
    assert db.list_events("i-0123456789abcdef0")[0]["request_id"] == "req-1"


def test_rendered_list_follows_every_write(new_db):
    db = new_db
    assert json.loads(db.list_instances_json()) == {"instances": []}
    db.upsert_instance({"id": "i-0123456789abcdef0", "name": "a", "state": "running", "tags": {"k": "v"},
                        "login_user": "ec2-user", "created_at": "t0", "updated_at": "t0"})
    listed = json.loads(db.list_instances_json())["instances"]
    assert [i["name"] for i in listed] == ["a"] and listed[0]["tags"] == {"k": "v"}
    assert "request_id" not in listed[0] and "ssh_group" not in listed[0]  # only the public fields
    assert listed[0]["login_user"] == "ec2-user"  # shown since issue 25
    with db.transaction():
        db.update_instance("i-0123456789abcdef0", {"state": "terminated"})
    assert json.loads(db.list_instances_json()) == {"instances": []}
    assert json.loads(db.list_instances_json(include_terminated=True))["instances"][0]["state"] == "terminated"
    assert db.list_instances_json() is db.list_instances_json()  # cached while nothing changes


def test_rows_without_a_scope_are_never_judged_and_launches_are_claimed_at_start(new_db):
    db = new_db
    db.upsert_instance({"id": "i-0123456789abcdef0", "name": "a", "state": "running", "created_at": "t0",
                        "updated_at": "t0"})
    db.connect().execute("INSERT INTO launches (request_id, body_hash, body, status, created_at, updated_at) "
                         "VALUES ('old', 'h', '{}', 'pending', 't0', 't0')")
    assert db.tracked_ids("us-east-1", "", "123456789012") == {}  # claimed only when a sweep sees it
    assert db.claim_unscoped_launches("us-east-1", "") == 1
    assert [launch["request_id"] for launch in db.pending_launches("us-east-1", "")] == ["old"]
    db.update_instance("i-0123456789abcdef0", {"region": "us-east-1", "endpoint": "", "account": "123456789012"})
    assert list(db.tracked_ids("us-east-1", "", "123456789012")) == ["i-0123456789abcdef0"]
    assert db.tracked_ids("us-east-1", "", "210987654321") == {}  # another account's view judges nothing
    assert db.tracked_ids("eu-west-1", "", "123456789012") == {}


def test_every_region_of_this_endpoint_and_account_is_swept_stopped_and_counted_never_another_endpoint(new_db):
    db = new_db
    ours, sandbox = "123456789012", "http://127.0.0.1:5000"
    for instance_id, region, endpoint, account, state in [
            ("i-east", "us-east-1", "", ours, "running"), ("i-west", "us-west-2", "", ours, "running"),
            ("i-unknown", "eu-west-1", "", None, "stopped"),  # recorded before the account was known
            ("i-other-account", "ap-south-1", "", "210987654321", "running"),
            ("i-sandbox", "eu-central-1", sandbox, ours, "running"),
            ("i-ended", "sa-east-1", "", ours, "terminated")]:
        db.upsert_instance({"id": instance_id, "name": instance_id, "state": state, "region": region,
                            "endpoint": endpoint, "account": account, "stop_at": "2026-01-01T00:00:00.000000Z",
                            "created_at": "2025-12-01T00:00:00.000000Z", "updated_at": "2025-12-01T00:00:00.000000Z"})
    for request_id, region, endpoint, status in [("r1", "us-east-2", "", "pending"), ("r2", "ca-central-1", "", "lost"),
                                                 ("r3", "eu-north-1", "", "failed"),
                                                 ("r4", "me-south-1", sandbox, "pending")]:
        db.connect().execute("INSERT INTO launches (request_id, body_hash, body, status, created_at, updated_at, "
                             "region, endpoint) VALUES (?, 'h', '{}', ?, 't0', 't0', ?, ?)",
                             (request_id, status, region, endpoint))
    # What a sweep lists: regions with our (or not yet known) live instances, or unsettled launches; this endpoint.
    assert db.regions_in_use("", ours) == {"us-east-1", "us-west-2", "eu-west-1", "us-east-2", "ca-central-1"}
    assert db.regions_in_use("", None) == {"eu-west-1", "us-east-2", "ca-central-1"}
    assert db.has_instances_in("") and db.has_instances_in(sandbox) and not db.has_instances_in("http://other")
    # Auto-stop and the ledger: every region of this endpoint (the account is checked by the auto-stopper).
    due = {r["id"] for r in db.due_for_stop("2026-06-01T00:00:00.000000Z", None, "")}
    assert due == {"i-east", "i-west", "i-other-account"}
    assert db.next_stop_at(None, sandbox) == "2026-01-01T00:00:00.000000Z" and db.next_stop_at(None, "x") is None
    assert {r["id"] for r in db.due_for_stop("2026-06-01T00:00:00.000000Z", "us-west-2", "")} == {"i-west"}
    rows, _ = db.ledger(None, "", "2026-01-01T00:00:00.000000Z")
    assert {r["id"] for r in rows} == {"i-east", "i-west", "i-unknown", "i-other-account"}
    assert {r["id"] for r in db.ledger(None, sandbox, "2026-01-01T00:00:00.000000Z")[0]} == {"i-sandbox"}
    assert {r["id"] for r in db.stopping_before("2026-06-01T00:00:00.000000Z", None, "")} == \
        {"i-east", "i-west", "i-other-account"}


def test_timestamps_of_every_origin_parse_and_unknown_ages_are_old():
    from app.services.db import age_seconds, parse_time, utcnow

    assert parse_time("2026-02-20 10:00:00").isoformat() == "2026-02-20T10:00:00+00:00"  # the original project's
    assert parse_time("2026-11-27T20:29:09+00:00") == parse_time("2026-11-27T20:29:09.000Z")  # CLI v2 and v1
    assert age_seconds(utcnow()) < 5
    assert age_seconds(None) == age_seconds("garbage") == float("inf")


def test_a_retried_key_resends_a_lost_launch_replaces_a_refused_one_and_returns_a_found_one(new_db):
    db = new_db
    first, claimed = db.claim_launch("rid-1", "key", "hash", {"ami_id": "ami-1"}, "us-east-1", "")
    assert claimed and first["status"] == "pending"
    again, claimed = db.claim_launch("rid-2", "key", "hash", {"ami_id": "ami-2"}, "us-east-1", "")
    assert not claimed and again["request_id"] == "rid-1"  # still pending: the holder decides
    db.finish_launch("rid-1", "lost", error="no instance with this request id exists in EC2")
    retry, claimed = db.claim_launch("rid-3", "key", "hash", {"ami_id": "ami-3"}, "us-east-1", "")
    assert claimed and retry["request_id"] == "rid-1" and json.loads(retry["body"]) == {"ami_id": "ami-1"}

    db.finish_launch("rid-1", "failed", error="InvalidAMIID.NotFound")  # EC2 refused: a fresh launch next
    fresh, claimed = db.claim_launch("rid-4", "key", "hash", {"ami_id": "ami-4"}, "us-east-1", "")
    assert claimed and fresh["request_id"] == "rid-4" and json.loads(fresh["body"]) == {"ami_id": "ami-4"}

    db.finish_launch("rid-4", "failed", error="InternalError")
    db.finish_launch("rid-4", "lost")  # only a pending launch can fail: a settled one stays as it is
    assert db.get_launch_by_key("key")["status"] == "failed"
    db.upsert_instance({"id": "i-0123456789abcdef0", "name": "x", "state": "running", "request_id": "rid-4",
                        "created_at": "t0", "updated_at": "t0"})
    found, claimed = db.claim_launch("rid-5", "key", "hash", {}, "us-east-1", "")
    assert not claimed and (found["status"], found["instance_id"]) == ("launched", "i-0123456789abcdef0")
    other, claimed = db.claim_launch("rid-6", "key", "other-hash", {}, "us-east-1", "")
    assert not claimed and other["body_hash"] == "hash"  # same key, other body: the caller answers 409


def test_a_database_of_ours_made_before_is_made_private(tmp_path):
    path = tmp_path / "instances.db"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    Database(path).migrate()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


# -- one token per person (schema 6): owners, actors, keys of their own ------------------------------------
def test_a_schema_5_database_gains_owners_and_actors_keeping_its_rows(tmp_path):
    path = tmp_path / "instances.db"
    db = Database(path)
    db.migrate()
    conn = db.connect()
    conn.execute("DROP INDEX instances_owner")
    conn.execute("ALTER TABLE instances DROP COLUMN owner")  # what schema 5 had
    conn.execute("ALTER TABLE launches DROP COLUMN owner")
    conn.execute("ALTER TABLE instance_events DROP COLUMN actor")
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO instances (id, name, state, created_at, updated_at) VALUES "
                 "('i-0123456789abcdef0', 'old', 'running', 't0', 't0')")
    conn.execute("INSERT INTO instance_events (instance_id, at, action, source) VALUES "
                 "('i-0123456789abcdef0', 't0', 'create', 'api')")
    Database(path).migrate()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    row = db.get_instance("i-0123456789abcdef0")
    assert row["name"] == "old" and row["owner"] is None  # no owner: an admin's to see
    assert db.list_events("i-0123456789abcdef0")[0]["actor"] is None
    assert db.claim_launch("rid-1", None, "h", {}, "us-east-1", "", "alice", False)[0]["owner"] == "alice"


def test_the_rendered_list_of_one_owner(new_db):
    db = new_db
    for number, owner in enumerate(("alice", "bob", None)):
        db.upsert_instance({"id": f"i-000000000000000{number}", "name": f"n{number}", "state": "running",
                            "owner": owner, "created_at": f"t{number}", "updated_at": "t0"})
    everyone = json.loads(db.list_instances_json())["instances"]
    assert [(i["id"], i["owner"]) for i in everyone] == [
        ("i-0000000000000000", "alice"), ("i-0000000000000001", "bob"), ("i-0000000000000002", None)]
    assert [i["id"] for i in json.loads(db.list_instances_json(owner="bob"))["instances"]] == ["i-0000000000000001"]
    assert json.loads(db.list_instances_json(owner="carol")) == {"instances": []}
    assert db.list_instances_json(owner="bob") is db.list_instances_json(owner="bob")  # cached per owner
    db.update_instance("i-0000000000000001", {"state": "terminated"})
    assert json.loads(db.list_instances_json(owner="bob")) == {"instances": []}
    assert [i["id"] for i in json.loads(db.list_instances_json(True, "bob"))["instances"]] == ["i-0000000000000001"]
    assert len(json.loads(db.list_instances_json())["instances"]) == 2


def test_events_keep_their_actor(new_db):
    new_db.add_event("i-0123456789abcdef0", "stop", "running", "stopping", "api", "req-1", actor="alice")
    new_db.add_event("i-0123456789abcdef0", "observe", "stopping", "stopped", "reconcile")
    assert [e["actor"] for e in new_db.list_events("i-0123456789abcdef0")] == ["alice", None]


def test_an_idempotency_key_is_its_owners(new_db):
    db = new_db
    first, claimed = db.claim_launch("rid-1", "key", "hash", {}, "us-east-1", "", "alice", False)
    assert claimed and first["owner"] == "alice"
    db.finish_launch("rid-1", "lost")
    # A lost launch is re-sent for its owner only: bob's identical request does not take alice's key over.
    theirs, claimed = db.claim_launch("rid-2", "key", "hash", {}, "us-east-1", "", "bob", False)
    assert not claimed and theirs["owner"] == "alice" and theirs["status"] == "lost"
    theirs, claimed = db.claim_launch("rid-2", "key", "hash", {}, "us-east-1", "", "root", True)
    assert not claimed  # an admin's own key is not alice's either
    again, claimed = db.claim_launch("rid-3", "key", "hash", {}, "us-east-1", "", "alice", False)
    assert claimed and again["request_id"] == "rid-1"
    # A key kept without an owner (before tokens per person): an admin may use it, a user may not.
    db.claim_launch("rid-4", "old-key", "hash", {}, "us-east-1", "")
    db.finish_launch("rid-4", "failed")
    assert not db.claim_launch("rid-5", "old-key", "hash", {}, "us-east-1", "", "alice", False)[1]
    fresh, claimed = db.claim_launch("rid-6", "old-key", "hash", {}, "us-east-1", "", "root", True)
    assert claimed and (fresh["request_id"], fresh["owner"]) == ("rid-6", "root")


def _when(day: str) -> str:
    return f"2026-{day}:00.000000Z"


def test_a_short_retention_keeps_what_the_budget_needs_for_this_and_the_last_month(new_db):
    # EVENTS_RETENTION_DAYS=7 on 20 November: the ledger of November (and of October) must not change,
    # while what is older than October goes, but for the event giving each instance's state on 1 October.
    db = new_db
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    busy, old = "i-0123456789abcdef0", "i-0123456789abcdef1"
    for instance_id, created, state, ip in ((busy, _when("09-25T10:00"), "running", "3.3.3.3"),
                                            (old, _when("08-01T10:00"), "stopped", None)):
        db.upsert_instance({"id": instance_id, "name": instance_id, "state": state, "instance_type": "t3.micro",
                            "region": "us-east-1", "endpoint": "", "storage_gb": 10, "public_ip": ip, "tags": {},
                            "created_at": created, "updated_at": created})
    history = [  # running, stopped, running... with an address while running in November
        (busy, "09-25T10:00", "pending", None), (busy, "09-25T10:01", "running", "1.1.1.1"),
        (busy, "09-28T08:00", None, None),  # no state: the ledger skips it, so must the pruning
        (busy, "10-05T09:00", "stopped", None), (busy, "10-20T09:00", "running", "2.2.2.2"),
        (busy, "10-28T18:00", "stopped", None), (busy, "11-02T08:00", "running", "3.3.3.3"),
        (busy, "11-06T20:00", "stopped", None), (busy, "11-09T07:30", "running", "3.3.3.3"),
        (busy, "11-14T19:00", "stopped", None), (busy, "11-17T08:00", "running", "3.3.3.3"),
        (old, "08-01T10:00", "pending", None), (old, "08-01T10:01", "running", None),
        (old, "08-03T10:00", "stopped", None),
    ]
    for instance_id, day, state, ip in history:
        db.add_event(instance_id, "observe", None, state, "reconcile", at=_when(day), public_ip=ip)
    month, last_month = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)

    def ledger() -> tuple[dict[str, float], dict[str, float]]:
        spending = Spending(100.0, BOOK, db, "us-east-1", "")
        this = {item["id"]: item["spent_usd"] for item in spending.summary(now).instances}
        last = {i: instance_cost(db.get_instance(i), db.list_events(i), BOOK, last_month, month, now).spent_usd
                for i in (busy, old)}
        return this, last

    clock.start_at(now)
    try:
        before = ledger()
        assert before[0][busy] > 1.0  # compute, address and storage since 1 November
        pruned, _ = db.prune(ago(7 * 86400))
    finally:
        clock.start_at(None)
    assert ledger() == before
    # Older than October: only the event giving the state on 1 October (running, with its address) is kept.
    assert pruned == 4
    assert [(e["at"][:16], e["to_state"]) for e in db.list_events(busy)][:2] == [
        ("2026-09-25T10:01", "running"), ("2026-10-05T09:00", "stopped")]
    assert len(db.list_events(busy)) == 9
    assert [e["to_state"] for e in db.list_events(old)] == ["stopped"]
