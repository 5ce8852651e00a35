"""Transactions, on both engines: a write transaction says it is one and takes the write lock (whatever its
statements look like); what runs inside it uses its connection; the pool bounds the connections."""

import sqlite3
import threading

import psycopg
import pytest
import sqlalchemy as sa
import sqlalchemy.exc

from app.store import WRITE_LOCK
from tests.store.conftest import execute

ROW = {"name": "a", "state": "running", "created_at": "t0", "updated_at": "t0"}


class OtherWriter:
    """Another process in the middle of a write: SQLite's write lock (BEGIN IMMEDIATE) or PostgreSQL's."""

    def __init__(self, engine_name: str, db_url: str) -> None:
        if engine_name == "postgres":
            self.conn = psycopg.connect(db_url)
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        else:
            self.conn = sqlite3.connect(db_url, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.commit() if isinstance(self.conn, psycopg.Connection) else self.conn.execute("COMMIT")
        self.conn.close()


def _in_thread(run) -> tuple[threading.Event, list]:
    done, errors = threading.Event(), []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        done.set()

    threading.Thread(target=target, daemon=True).start()
    return done, errors


def test_a_write_waits_for_the_write_lock_whatever_its_statement_looks_like(new_db, engine_name, db_url):
    """A `WITH ... UPDATE` (which the old store, reading a statement's first keyword, ran without the lock)
    and a plain upsert both wait for another writer, then run."""
    new_db.kv_set("k", "before")
    writer = OtherWriter(engine_name, db_url)
    done, errors = _in_thread(lambda: new_db._run(
        "WITH wanted AS (SELECT 'after' AS v) UPDATE kv SET value = (SELECT v FROM wanted) WHERE key = 'k'"))
    upsert, upsert_errors = _in_thread(lambda: new_db.upsert_instance({"id": "i-0123456789abcdef0", **ROW}))
    assert not done.wait(0.5) and not upsert.wait(0.01)  # blocked by the other writer
    writer.commit()
    assert done.wait(15) and upsert.wait(15) and errors == upsert_errors == []
    assert new_db.kv_get("k") == "after" and new_db.get_instance("i-0123456789abcdef0") is not None


def test_two_write_transactions_never_interleave(new_db):
    """Revisions grow in commit order: the second writer starts after the first one committed."""
    inside, release = threading.Event(), threading.Event()

    def first() -> None:
        with new_db.write():
            new_db.upsert_instance({"id": "i-0000000000000001", **ROW})
            inside.set()
            release.wait(15)

    first_done, first_errors = _in_thread(first)
    assert inside.wait(15)
    second_done, second_errors = _in_thread(lambda: new_db.upsert_instance({"id": "i-0000000000000002", **ROW}))
    assert not second_done.wait(0.5)  # waiting for the first one's lock
    release.set()
    assert first_done.wait(15) and second_done.wait(15) and first_errors == second_errors == []
    revs = {r["id"]: r["rev"] for r in new_db.list_instances()}
    assert revs["i-0000000000000001"] < revs["i-0000000000000002"]


def test_a_read_or_write_inside_a_write_transaction_uses_its_connection(open_store):
    """One connection in the pool, none to overflow to, a short wait: a read or write inside the transaction
    that took a second connection would time out (on PostgreSQL a second writer would even wait for the
    advisory lock its own transaction holds). It sees what the transaction wrote; others do not yet."""
    db = open_store(pool_size=1, max_overflow=0, pool_timeout=2)
    db.migrate()
    other = open_store()
    with db.write():
        db.upsert_instance({"id": "i-0123456789abcdef0", **ROW})
        assert db.get_instance("i-0123456789abcdef0")["name"] == "a"  # a read: same connection, sees it
        db.kv_set("k", "v")  # a write joining the transaction
        db.add_event("i-0123456789abcdef0", "create", None, "pending", "api")
        with db.read():
            assert [e["action"] for e in db.list_events("i-0123456789abcdef0")] == ["create"]
        assert other.get_instance("i-0123456789abcdef0") is None  # not committed yet
    assert other.get_instance("i-0123456789abcdef0")["name"] == "a" and other.kv_get("k") == "v"


def test_the_catalogue_loads_on_one_connection(open_store):
    """A server with DATABASE_POOL_SIZE=1 and no overflow starts: loading the catalogue reads its two tables
    in one snapshot on one connection (it once held a second one idle while the reads took another)."""
    db = open_store(pool_size=1, max_overflow=0, pool_timeout=2)
    db.migrate()
    db.save_catalog("s", [{"ami_id": "ami-1", "architecture": "x86_64", "root_device_name": "/dev/xvda",
                           "login_user": "ec2-user"}], [{"name": "t3.micro", "architecture": "x86_64"}])
    amis, types, resolved = db.load_catalog("s")
    assert [a["ami_id"] for a in amis] == ["ami-1"] and [t["name"] for t in types] == ["t3.micro"] and resolved


def test_outside_a_transaction_each_call_returns_its_connection(open_store):
    db = open_store(pool_size=1, max_overflow=0, pool_timeout=2)
    db.migrate()
    for number in range(20):
        db.kv_set(f"k{number}", "v")
        assert db.kv_get(f"k{number}") == "v"
    assert db.engine.pool.checkedout() == 0


def test_the_pool_never_holds_more_than_pool_size_plus_overflow(open_store):
    db = open_store(pool_size=2, max_overflow=1, pool_timeout=0.5)
    db.migrate()
    held = [db.engine.connect() for _ in range(3)]
    with pytest.raises(sqlalchemy.exc.TimeoutError):
        db.kv_get("k")  # a fourth would exceed the bound: it waits, then fails (the API answers 503)
    for conn in held:
        conn.close()
    assert db.kv_get("k") is None


def test_a_failed_savepoint_undoes_its_block_only(new_db):
    with new_db.write():
        new_db.kv_set("kept", "1")
        with pytest.raises(sqlalchemy.exc.IntegrityError), new_db.savepoint():
            new_db.kv_set("undone", "1")
            execute(new_db, "INSERT INTO kv (key, value) VALUES ('kept', 'twice')")
        assert new_db.in_transaction
    assert (new_db.kv_get("kept"), new_db.kv_get("undone")) == ("1", None)


def test_a_write_that_cannot_get_the_write_lock_leaves_its_connection_usable(open_store, engine_name, db_url):
    db = open_store(pool_size=1, max_overflow=0)
    db.migrate()
    if engine_name == "postgres":  # a lock_timeout, as a managed PostgreSQL may set for a role
        with db.engine.connect() as conn:
            conn.execute(sa.text("SET lock_timeout = '200ms'"))
            conn.commit()
    else:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout = 200")
    writer = OtherWriter(engine_name, db_url)
    with pytest.raises(sqlalchemy.exc.OperationalError), db.write():
        pass
    assert not db.in_transaction
    writer.commit()
    db.kv_set("after", "yes")  # the same (only) connection, rolled back, not left aborted
    assert db.kv_get("after") == "yes"


def test_a_connection_the_server_dropped_is_replaced_before_use(pg_cluster):
    """PostgreSQL only (a SQLite file has no server to drop a connection)."""
    from app.store import Database

    db = Database(pg_cluster.new_database(), pool_size=1, max_overflow=0)
    try:
        db.migrate()
        db.kv_set("k", "before")
        with db.engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert db.kv_get("k") == "before"  # pool_pre_ping: the dead connection is noticed and replaced
    finally:
        db.dispose()
