"""`make db-copy FROM=... TO=...` (app/store/copy.py): a team's SQLite file moves to PostgreSQL with every row of
every table, ids continue where they stopped, a non-empty target is refused untouched, and a failure leaves
nothing behind. The last test moves a real server's database with the real make target."""

import hashlib
import sqlite3
import subprocess
from contextlib import closing

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from app.store import Database
from app.store.copy import copy_store, identity_columns, main
from app.store.rows import LaunchStatus
from app.store.schema import HEAD
from app.store.tables import metadata
from tests.store.legacy import db_v8
from tests.support.processes import ROOT, safe_env, wait_until
from tests.support.server import ApiServer

ALICE = "i-0a11ce00000000001"
BOB = "i-0b0b0000000000002"
GONE = "i-0d0d0000000000003"
STOP_AT = "2026-12-07T03:00:00.000000Z"
PASSWORD = "s3cret-Pw"  # the cluster trusts loopback: any password connects, and none may be printed


def populate(db: Database) -> None:
    """Something in every table, through the store's own write functions (what the server calls)."""
    db.enable_notifications()  # kv: instance events queue notifications from now on
    db.upsert_instance({
        "id": ALICE, "name": "alices-box", "state": "running", "owner": "alice", "ami": "ami-0123456789abcdef0",
        "instance_type": "t3.micro", "public_ip": "198.51.100.7", "tags": {"team": "lab", "note": "naïve ✓"},
        "storage_gb": 8, "login_user": "ec2-user", "request_id": "rid-alice", "region": "us-east-1",
        "endpoint": "", "account": "123456789012", "auto_stop_minutes": 90, "stop_at": STOP_AT,
        "associate_public_ip": 1, "stop_when_idle": {"cpu_below_percent": 5, "for_minutes": 30},
        "idle_alarm": {"name": "ec2cl-idle-i-0a11ce00000000001", "cpu_below_percent": 5, "for_minutes": 30},
        "ssh_from": "203.0.113.7/32", "ssh_group": "sg-0123456789abcdef0",
        "created_at": "2026-12-07T01:00:00.000000Z", "updated_at": "2026-12-07T01:30:00.000000Z",
        "launched_at": "2026-12-07T01:00:05.000000Z"})
    db.upsert_instance({"id": BOB, "name": "bobs-box", "state": "stopped", "owner": "bob", "tags": {},
                        "region": "us-east-1", "endpoint": "", "account": "123456789012", "associate_public_ip": 0,
                        "created_at": "2026-12-06T09:00:00.000000Z", "updated_at": "2026-12-06T18:00:00.000000Z"})
    db.upsert_instance({"id": GONE, "name": "old", "state": "terminated", "created_at": "2026-11-01T00:00:00.000000Z",
                        "updated_at": "2026-11-02T00:00:00.000000Z"})
    db.set_missing(BOB, 1, "2026-12-07T01:00:00.000000Z")
    for instance_id, action, before, after, source, actor in [
            (ALICE, "create", None, "pending", "api", "alice"), (ALICE, "observed", "pending", "running", "reconcile",
                                                                None),
            (BOB, "create", None, "pending", "api", "bob"), (BOB, "stop", "running", "stopping", "api", "root"),
            (GONE, "terminate", "running", "terminated", "auto_stop", None)]:
        db.add_event(instance_id, action, before, after, source, f"rid-{instance_id}", public_ip="198.51.100.7",
                     actor=actor, http_request_id=f"req-{action}", at="2026-12-07T01:00:00.000000Z")
    db.claim_launch("rid-alice", "key-alice", "hash-a", {"name": "alices-box", "auto_stop_minutes": 90},
                    "us-east-1", "", "alice", False)
    db.finish_launch("rid-alice", LaunchStatus.LAUNCHED, ALICE)
    db.claim_launch("rid-failed", None, "hash-f", {"name": "x"}, "us-east-1", "", "bob", False)
    db.finish_launch("rid-failed", LaunchStatus.FAILED, error="InsufficientInstanceCapacity")
    with db.write():
        db.reserve("create:rid-next", {"2026-12": 0.42, "2027-01": 1.25}, "2999-01-01T00:00:00.000000Z")
    db.save_catalog("us-east-1|", [{"ami_id": "ami-0123456789abcdef0", "architecture": "x86_64",
                                    "root_device_name": "/dev/xvda", "login_user": "ec2-user",
                                    "alias": "amazon-linux-2023", "image_name": "al2023-ami"}],
                    [{"name": "t3.micro", "architecture": "x86_64"}])
    db.kv_set("aws_cli_version:/usr/bin/aws:1:2", "aws-cli/2.15.0")
    with db.write() as conn:  # a schedule (issue 27), its box attached and snoozed
        conn.execute(sa.text("INSERT INTO schedules (name, timezone, periods, holidays, respect_manual_stop, "
                             "created_at, updated_at) VALUES ('office', 'Europe/Berlin', :periods, '[\"2026-12-24\"]', "
                             "1, '2026-12-07T00:00:00.000000Z', '2026-12-07T00:00:00.000000Z')"),
                     {"periods": '[{"days": "mon-fri", "start": "09:00", "stop": "18:00"}]'})
        conn.execute(sa.text("UPDATE instances SET schedule = 'office', snoozed_until = '2026-12-07T19:00:00.000000Z' "
                             "WHERE id = :id"), {"id": ALICE})
    db.queue_notification("budget:80:2026-12", "budget_80", None, {"percent": 80})
    db.queue_notification("auto_stop_warning:i-0a11ce00000000001", "auto_stop_warning", ALICE, {"in": 10})
    for note in db.unexpanded_notifications(100):
        db.expand_notification(note["id"], note["event"] or f"instance_{note['to_state']}", ["webhook", "email"])
    claimed = db.claim_deliveries("2999-01-01T00:00:00.000000Z", "2999-01-01T00:01:00.000000Z", 3)
    db.finish_delivery(claimed[0]["id"], "sent", None, None, "2999-01-01T00:01:00.000000Z")
    db.finish_delivery(claimed[1]["id"], "pending", "connection refused", "2026-12-07T02:00:00.000000Z",
                       "2999-01-01T00:01:00.000000Z")
    # The newest notification is gone (pruned once sent): its id stays taken, as SQLite's AUTOINCREMENT keeps it.
    with db.write() as conn:
        newest = conn.execute(sa.text("SELECT MAX(id) FROM notifications")).scalar_one()
        conn.execute(sa.text("DELETE FROM deliveries WHERE notification_id = :n"), {"n": newest})
        conn.execute(sa.text("DELETE FROM notifications WHERE id = :n"), {"n": newest})


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the store, all columns, in primary key order."""
    store = Database(url)
    try:
        with store.read() as conn:
            return {t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                    for t in metadata.sorted_tables}
    finally:
        store.dispose()


def id_counters(url: str) -> dict[str, int]:
    """What the database itself says of each generated id column's last value given."""
    found = {}
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            for table in metadata.sorted_tables:
                for column in identity_columns(table):
                    # NULL: no value given yet
                    [(last,)] = conn.execute(
                        "SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence(%s, %s) AS regclass))",
                        (table.name, column.name)).fetchall()
                    found[f"{table.name}.{column.name}"] = last or 0
    else:
        with closing(sqlite3.connect(url)) as conn:
            found = {f"{name}.{'seq' if name == 'instance_events' else 'id'}": seq
                     for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")}
    return found


def with_password(url: str) -> str:
    return url.replace("ec2cl@", f"ec2cl:{PASSWORD}@")


@pytest.fixture
def sqlite_store(tmp_path):
    db = Database(tmp_path / "team.db")
    db.migrate()
    populate(db)
    db.dispose()
    return str(tmp_path / "team.db")


def test_every_row_of_every_table_moves_to_postgresql_and_ids_continue(sqlite_store, pg_cluster, capsys, tmp_path):
    before = dump(sqlite_store)
    assert all(before.values()), {name: len(rows) for name, rows in before.items()}  # every table has rows
    high = id_counters(sqlite_store)
    target = with_password(pg_cluster.new_database())

    assert main([sqlite_store, target]) == 0
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err and "ec2cl:***@" in out
    for name, rows in before.items():
        assert f"  {name} " in out and f" {len(rows)} rows" in out
    assert dump(target) == before  # row for row, every column
    assert dump(sqlite_store) == before  # the source is only read
    assert id_counters(target) == high  # the newest notification's id stays taken though its row is gone

    # The replicas go on from there: the next event, its notification and deliveries get new ids.
    pg = Database(target)
    try:
        pg.add_event(ALICE, "stop", "running", "stopping", "auto_stop")
        with pg.read() as conn:
            seq = conn.execute(sa.text("SELECT MAX(seq) FROM instance_events")).scalar_one()
        assert seq == high["instance_events.seq"] + 1
        assert pg.queue_notification("budget:100:2026-12", "budget_100", None, {"percent": 100})
        fresh = pg.unexpanded_notifications(10)
        assert [n["action"] for n in fresh] == ["stop", None]
        assert min(n["id"] for n in fresh) == high["notifications.id"] + 1
        for note in fresh:
            pg.expand_notification(note["id"], note["event"] or "instance_stopping", ["webhook"])
        assert max(d["id"] for d in pg.list_deliveries(100)) == high["deliveries.id"] + 2
        row = pg.get_instance(ALICE)
        assert (row["owner"], row["stop_at"], row["auto_stop_minutes"], row["stop_when_idle"], row["tags"]) == (
            "alice", STOP_AT, 90, {"cpu_below_percent": 5, "for_minutes": 30}, {"team": "lab", "note": "naïve ✓"})
    finally:
        pg.dispose()

    # And back (PostgreSQL to SQLite) the same way.
    back = str(tmp_path / "back.db")
    assert main([target, back]) == 0
    assert dump(back) == dump(target)
    assert id_counters(back) == id_counters(target)


def test_a_non_empty_target_is_refused_and_left_as_it_was(sqlite_store, pg_cluster, capsys, tmp_path):
    target = pg_cluster.new_database()
    copy_store(sqlite_store, target)
    kept, counters = dump(target), id_counters(target)
    with psycopg.connect(target) as conn:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()

    other = str(tmp_path / "other.db")
    old = db_v8.open_database(other, other)  # of an older version: a refused copy does not even migrate it
    old.migrate()
    old.upsert_instance({"id": "i-0e0e0000000000004", "name": "n", "state": "running", "created_at": "t0",
                         "updated_at": "t0"})
    capsys.readouterr()
    assert main([other, with_password(target)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and PASSWORD not in err
    assert "TO is not empty: " in err and "instances (3 rows)" in err and "kv (" in err
    assert "Nothing was written" in err
    assert dump(target) == kept and id_counters(target) == counters
    with closing(sqlite3.connect(other)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (8,)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'alembic_version'").fetchall() == []
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == revision

    # A database a replica has already started on (its kv and catalogue only) is not empty either.
    started = pg_cluster.new_database()
    store = Database(started)
    store.migrate()
    store.kv_set("aws_cli_version:/usr/bin/aws:1:2", "aws-cli/2.15.0")
    store.dispose()
    assert main([sqlite_store, started]) == 1
    assert "TO is not empty: kv (1 row)." in capsys.readouterr().err


def test_a_failure_midway_leaves_the_target_without_a_table(sqlite_store, pg_cluster, capsys):
    # PostgreSQL's text cannot hold NUL, SQLite's can: the last table's row fails after the others were copied.
    with closing(sqlite3.connect(sqlite_store)) as conn, conn:
        conn.execute("INSERT INTO reservations (key, usd, until) VALUES (?, 1.0, '2999')", ("bad\x00key",))
    target = with_password(pg_cluster.new_database())
    assert main([sqlite_store, target]) == 1
    err = capsys.readouterr().err
    assert "db-copy failed: copying reservations: " in err and "NUL" in err
    assert "Nothing was written to TO" in err and PASSWORD not in err
    with psycopg.connect(target) as conn:  # not even the schema: one transaction
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_an_older_database_is_migrated_then_copied(tmp_path, pg_cluster, capsys):
    path = str(tmp_path / "v8.db")
    old = db_v8.open_database(path, path)  # the store before Alembic, schema 8
    old.migrate()
    old.upsert_instance({"id": ALICE, "name": "kept", "state": "running", "owner": "alice", "auto_stop_minutes": 60,
                         "stop_at": STOP_AT, "created_at": "t0", "updated_at": "t0"})
    target = pg_cluster.new_database()
    assert main([path, target]) == 0
    assert f"migrated from revision none (before Alembic, or new) to {HEAD}" in capsys.readouterr().out
    assert dump(target) == dump(path)
    assert dump(target)["instances"][0][metadata.tables["instances"].c.keys().index("owner")] == "alice"


def test_what_is_refused_before_anything_is_opened(tmp_path, capsys, monkeypatch):
    missing, to = tmp_path / "nope.db", tmp_path / "to.db"
    assert main([str(missing), str(to)]) == 1
    assert f"FROM: no such database file: {missing}" in capsys.readouterr().err
    assert not missing.exists() and not to.exists()
    Database(tmp_path / "a.db").migrate()
    assert main([str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'a.db'}"]) == 1
    assert "FROM and TO are the same database" in capsys.readouterr().err
    assert main([str(tmp_path / "a.db"), f"mysql://root:{PASSWORD}@db/x"]) == 1
    err = capsys.readouterr().err
    assert "TO: names an engine this service does not speak" in err and PASSWORD not in err
    monkeypatch.delenv("DB_COPY_FROM", raising=False)
    monkeypatch.delenv("DB_COPY_TO", raising=False)
    assert main([]) == 2 and main(["only-one"]) == 2
    assert "usage: make db-copy FROM=<database> TO=<database>" in capsys.readouterr().err
    assert not to.exists()


TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef"}


def test_alice_keeps_her_box_and_its_auto_stop_across_make_db_copy(emulator, fresh_emulator, pg_cluster,
                                                                     tmp_path):
    """A real server on SQLite, `make db-copy` as the guide says, a real server on PostgreSQL."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("".join(f'[[users]]\nname = "{name}"\nsha256 = "{hashlib.sha256(t.encode()).hexdigest()}"\n'
                              f'role = "user"\n\n' for name, t in TOKENS.items()))
    tokens.chmod(0o600)
    (tmp_path / "sqlite").mkdir()
    server = ApiServer(tmp_path / "sqlite", emulator.url, API_TOKENS_FILE=str(tokens))
    try:
        with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {TOKENS['alice']}"}) \
                as alice:
            created = alice.post("/instances", json={"name": "alices-box", "ami": "amazon-linux-2023",
                                                     "instance_type": "t3.micro", "auto_stop_minutes": 120})
            assert created.status_code == 201, created.text
            box = created.json()["id"]
            mine = wait_until(lambda: (r := alice.get(f"/instances/{box}").json())["state"] == "running"
                              and r["stop_at"] and r, timeout=30)
            events = alice.get(f"/instances/{box}/events").json()["events"]
    finally:
        server.stop()

    target = pg_cluster.new_database()
    done = subprocess.run(["make", "--no-print-directory", "db-copy", f"FROM={server.db_path}",
                           f"TO={with_password(target)}"], cwd=ROOT, env=safe_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert "  instances " in done.stdout

    (tmp_path / "pg").mkdir()
    server = ApiServer(tmp_path / "pg", emulator.url, API_TOKENS_FILE=str(tokens), DATABASE_URL=target)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            alice = {"Authorization": f"Bearer {TOKENS['alice']}"}
            got = client.get(f"/instances/{box}", headers=alice)
            assert got.status_code == 200, got.text
            assert (got.json()["owner"], got.json()["stop_at"], got.json()["auto_stop_minutes"]) == (
                "alice", mine["stop_at"], 120)
            assert client.get(f"/instances/{box}/events", headers=alice).json()["events"][:len(events)] == events
            theirs = client.get(f"/instances/{box}", headers={"Authorization": f"Bearer {TOKENS['bob']}"})
            assert theirs.status_code == 404  # still alice's alone
    finally:
        server.stop()
