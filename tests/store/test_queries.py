"""The store's queries, on both engines (tests/store/conftest.py): what each one reads and writes."""

import json
from datetime import UTC, datetime

from app.budget.spending import PriceBook, Spending, instance_cost
from app.config import DEFAULT_PRICES_FILE
from app.core import clock
from app.core.clock import ago
from tests.store.conftest import execute

BOOK = PriceBook.load(DEFAULT_PRICES_FILE)
ROW = {"name": "a", "state": "running", "created_at": "t0", "updated_at": "t0"}


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
    execute(db, "INSERT INTO launches (request_id, body_hash, body, status, created_at, updated_at) "
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
        execute(db, "INSERT INTO launches (request_id, body_hash, body, status, created_at, updated_at, region, "
                    "endpoint) VALUES (:r, 'h', '{}', :s, 't0', 't0', :region, :endpoint)",
                {"r": request_id, "s": status, "region": region, "endpoint": endpoint})
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
    from app.core.clock import age_seconds, parse_time, utcnow

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


def test_a_replicas_cached_list_shows_the_other_replicas_writes(new_db, open_store, engine_name):
    other = open_store()  # another replica on PostgreSQL; another store object on one SQLite file
    assert json.loads(new_db.list_instances_json()) == {"instances": []}
    other.upsert_instance({"id": "i-0123456789abcdef0", **ROW})
    listed = json.loads(new_db.list_instances_json())["instances"]
    # SQLite: one process writes the file (its writes bump its own generation); PostgreSQL: every replica's count.
    assert [i["id"] for i in listed] == (["i-0123456789abcdef0"] if engine_name == "postgres" else [])
    new_db.update_instance("i-0123456789abcdef0", {"name": "renamed"})
    assert json.loads(new_db.list_instances_json())["instances"][0]["name"] == "renamed"


def test_rows_sort_byte_by_byte_on_both_engines(new_db):
    # Under a natural-language collation 'b' < 'C' and '_' is ignored; the store sorts as SQLite does.
    for instance_id, created in [("i-b", "2026-01-01T00:00:00.000000Z"), ("i-C", "2026-01-01T00:00:00.000000Z"),
                                 ("i-z", "2025-12-31T23:59:59.000000Z")]:
        new_db.upsert_instance({"id": instance_id, **ROW, "created_at": created})
    assert [r["id"] for r in new_db.list_instances()] == ["i-z", "i-C", "i-b"]


def test_booleans_json_and_notifications_round_trip(new_db):
    new_db.upsert_instance({"id": "i-0123456789abcdef0", **ROW, "associate_public_ip": True,
                            "stop_when_idle": {"cpu_below_percent": 5.0, "for_minutes": 30},
                            "idle_alarm": {"name": "x", "status": "pending", "error": None}})
    row = new_db.get_instance("i-0123456789abcdef0")
    assert row["associate_public_ip"] == 1 and row["stop_when_idle"] == {"cpu_below_percent": 5.0, "for_minutes": 30}
    new_db.update_instance("i-0123456789abcdef0", {"region": "us-east-1", "endpoint": ""})
    # json text extraction in SQL: a pending alarm is work for the keeper; a set one without error is not
    assert [r["id"] for r in new_db.alarm_work("us-east-1", "", None, "9999")] == ["i-0123456789abcdef0"]
    held = '{"cpu_below_percent":5.0,"for_minutes":30}'
    new_db.update_instance("i-0123456789abcdef0", {"alarm_held": held,
                                                   "idle_alarm": {"name": "x", "status": "set", "error": None}})
    assert new_db.alarm_work("us-east-1", "", None, "9999") == []
    assert new_db.queue_notification("budget:x", "budget_80", None, {}) is True
    assert new_db.queue_notification("budget:x", "budget_80", None, {}) is False  # once per key
    new_db.kv_set("k", "1")
    new_db.kv_set("k", "2")
    assert new_db.kv_get("k") == "2"
    new_db.kv_set("k", None)
    assert new_db.kv_get("k") is None


def test_an_event_queues_its_notification_in_its_transaction_once_notifications_are_on(new_db):
    """What the trigger of schema 4 did, now done by add_event: nothing while notifications are off; then one
    notification per event, with the event's state, address and HTTP request id; gone with a rolled-back event."""
    new_db.add_event("i-0123456789abcdef0", "stop", "running", "stopping", "api")
    assert new_db.unexpanded_notifications(10) == []  # off: nothing queued (old events are not sent later)
    new_db.enable_notifications()
    new_db.add_event("i-0123456789abcdef0", "start", "stopped", "pending", "api", "rid", public_ip="1.2.3.4",
                     http_request_id="abc")
    queued = new_db.unexpanded_notifications(10)
    assert [(n["action"], n["source"], n["from_state"], n["to_state"]) for n in queued] == [
        ("start", "api", "stopped", "pending")]
    data = execute(new_db, "SELECT key, data, instance_id FROM notifications")
    assert len(data) == 1 and data[0][0].startswith("event:") and data[0][2] == "i-0123456789abcdef0"
    assert json.loads(data[0][1]) == {"to_state": "pending", "public_ip": "1.2.3.4", "http_request_id": "abc"}
    assert new_db.list_events("i-0123456789abcdef0")[-1]["http_request_id"] == "abc"
    try:
        with new_db.write():
            new_db.add_event("i-0123456789abcdef0", "observe", "pending", "running", "reconcile")
            raise RuntimeError("the sweep fails after the event")
    except RuntimeError:
        pass
    assert len(new_db.unexpanded_notifications(10)) == 1  # the event and its notification went back together
    assert len(new_db.list_events("i-0123456789abcdef0")) == 2


def test_reservations_are_seen_by_every_replica_and_expire(new_db, open_store):
    other = open_store()
    new_db.reserve("create:1", 0.25, "2999-01-01T00:00:00.000000Z")
    other.reserve("create:2", 0.5, "2999-01-01T00:00:00.000000Z")
    other.reserve("create:dead", 1.0, "2000-01-01T00:00:00.000000Z")  # its replica died: expired
    assert new_db.reserved_usd("2026-11-28T00:00:00.000000Z") == other.reserved_usd("2026-11-28T00:00:00.000000Z") \
        == 0.75
    other.unreserve("create:1")  # written: counted by the ledger now (and the expired one is swept away)
    assert new_db.reserved_usd("2026-11-28T00:00:00.000000Z") == 0.5
    assert execute(new_db, "SELECT count(*) FROM reservations") == [(1,)]


def test_a_budget_release_the_store_refuses_is_logged_not_raised(new_db, monkeypatch, caplog):
    import sqlalchemy.exc

    from app.budget.spending import HORIZON, Charges, horizon, period_label
    from app.config import Settings

    spending = Spending(100.0, PriceBook.load(Settings().prices_file), new_db, "us-east-1", "")
    spending.shared = True  # reservations in the database, as on PostgreSQL
    spending.admit("create:1", Charges((0.25, 0.25, *[0.0] * (HORIZON - 2)), (0.0,) * HORIZON, (0.0,) * HORIZON),
                   "this create")  # a run reaching into next month: a row per month
    assert new_db.reserved_usd("2026-01-01T00:00:00.000000Z") == 0.5
    assert sorted(new_db.reservations("2026-01-01T00:00:00.000000Z")["create:1"]) == [
        period_label(start) for start, _ in horizon(clock.now())[:2]]

    def refuse(key: str) -> None:
        raise sqlalchemy.exc.OperationalError("DELETE ...", {}, Exception("the server closed the connection"))

    monkeypatch.setattr(new_db, "unreserve", refuse)
    spending.release("create:1")  # the launch happened: this must not turn it into a 503
    assert "not released" in caplog.text
    spending.release("stop:nothing-reserved")  # nothing was reserved: no write at all


def test_the_listed_fields_are_the_response_models():
    from app.instances.schemas import STORED_FIELDS
    from app.store.instances import PUBLIC_FIELDS

    assert PUBLIC_FIELDS == STORED_FIELDS
