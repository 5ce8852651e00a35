"""Migrations, on both engines: a fresh database, the original project's (version 0) and one made by the
store before Alembic (schema 8, built by that very code: tests/store/legacy/db_v8.py) all end with the same
tables, columns and indexes, keeping their rows; a newer schema is refused untouched; replicas starting at
once migrate once; an older service refuses the migrated database."""

import logging
import sqlite3
import threading

import psycopg
import pytest
import sqlalchemy as sa

from app.store import SCHEMA_VERSION, Database, SchemaTooNew
from app.store.tables import metadata
from tests.store.conftest import execute
from tests.store.legacy import db_v8

ORIGINAL_SCHEMA = """CREATE TABLE instances (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, public_ip TEXT, ami TEXT NOT NULL, instance_type TEXT NOT NULL,
    state TEXT NOT NULL, ssh_string TEXT, security_group_id TEXT, backend_used TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"""
ORIGINAL_ROWS = [
    ("i-0123456789abcdef0", "old-1", "1.2.3.4", "ami-0123456789abcdef0", "t3.micro", "running",
     "ssh -i k.pem ec2-user@1.2.3.4", None, "awscli", "2026-02-20 10:00:00", "2026-02-20 10:00:00"),
    ("i-0123456789abcdef1", "old-2", None, "ami-0123456789abcdef0", "t3.micro", "stopped",
     "no public IPv4 address: reach it through a bastion", "sg-0123456789abcdef0", "awscli",
     "2026-02-20 11:00:00", "2026-02-20 11:00:00"),
]


def schema(url: str, nullability: bool = True, types: bool = True) -> dict:
    """Tables -> their columns (name, type, nullable) and indexes (name, columns, unique, where), as the
    database itself reports them; and the triggers. A primary key column's nullability is left out: SQLite
    reports `key TEXT PRIMARY KEY` as nullable, and `key TEXT NOT NULL, PRIMARY KEY (key)` as not."""
    engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url)) \
        if url.startswith("postgresql://") else sa.create_engine(f"sqlite:///{url}")
    try:
        inspector = sa.inspect(engine)
        found: dict = {}
        for table in inspector.get_table_names():
            if table in ("alembic_version", "sqlite_sequence"):
                continue
            key = set(inspector.get_pk_constraint(table)["constrained_columns"])
            columns = {(c["name"], str(c["type"]) if types else None,
                        c["nullable"] if nullability and c["name"] not in key else None)
                       for c in inspector.get_columns(table)}
            indexes = {(i["name"], tuple(i["column_names"]), bool(i["unique"]), _where(i))
                       for i in inspector.get_indexes(table)}
            found[table] = (columns, indexes)
        with engine.connect() as conn:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal" if engine.dialect.name == "postgresql" \
                else "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            found["triggers"] = sorted(r[0] for r in conn.execute(sa.text(query)))
        return found
    finally:
        engine.dispose()


def _where(index: dict) -> str:
    options = index.get("dialect_options") or {}
    where = options.get("postgresql_where")
    if where is None:
        where = options.get("sqlite_where")
    return "" if where is None else str(where)


def fresh_schema(request, engine_name: str, tmp_path, nullability: bool = True, types: bool = True) -> dict:
    url = request.getfixturevalue("pg_cluster").new_database() if engine_name == "postgres" \
        else str(tmp_path / "fresh.db")
    store = Database(url)
    try:
        store.migrate()
    finally:
        store.dispose()
    return schema(url, nullability, types)


def legacy_store(db_url: str):
    """The store as it was before Alembic (schema 8), on the same database."""
    return db_v8.open_database(db_url, db_url)


def test_the_migrations_make_the_tables_declared_in_tables_py(new_db, db_url):
    made = schema(db_url)
    assert set(made) - {"triggers", "schema_version"} == set(metadata.tables)
    for name, table in metadata.tables.items():
        assert {c[0] for c in made[name][0]} == {c.name for c in table.columns}, name
        assert {i[0] for i in made[name][1]} \
            >= {i.name for i in table.indexes}, name
    assert made["triggers"] == []


def test_a_schema_8_database_made_by_the_store_before_alembic_converges_keeping_its_rows(
        open_store, db_url, engine_name, request, tmp_path):
    old = legacy_store(db_url)
    old.migrate()  # schema 8, with the notification trigger of schema 4
    old.enable_notifications()
    old.upsert_instance({"id": "i-0123456789abcdef0", "name": "kept", "state": "running", "tags": {"k": "v"},
                         "owner": "alice", "ssh_from": "203.0.113.7/32", "created_at": "t0", "updated_at": "t0"})
    old.add_event("i-0123456789abcdef0", "create", None, "pending", "api", "rid-1", actor="alice")  # + notification
    old.claim_launch("rid-1", "key-1", "h", {"ami_id": "ami-1"}, "us-east-1", "", "alice", False)
    old.reserve("create:1", 0.25, "2999-01-01T00:00:00.000000Z")
    before = schema(db_url)
    assert before["triggers"] == ["notify_instance_event"]

    store = open_store()
    store.migrate()
    store.migrate()  # idempotent
    assert schema(db_url) == fresh_schema(request, engine_name, tmp_path)  # the trigger is gone too
    row = store.get_instance("i-0123456789abcdef0")
    assert (row["name"], row["tags"], row["owner"], row["ssh_from"]) == ("kept", {"k": "v"}, "alice", "203.0.113.7/32")
    assert [(e["action"], e["actor"], e["http_request_id"]) for e in store.list_events("i-0123456789abcdef0")] == [
        ("create", "alice", None)]
    assert store.get_launch_by_key("key-1")["owner"] == "alice"
    assert store.reserved_usd("2026-01-01T00:00:00.000000Z") == 0.25
    # The trigger's notification is kept; the next event's is written by the store, once.
    store.add_event("i-0123456789abcdef0", "stop", "running", "stopping", "api", http_request_id="abc")
    assert [n["action"] for n in store.unexpanded_notifications(10)] == ["create", "stop"]
    # An older replica restarting now refuses the database instead of migrating it its own way.
    with pytest.raises(db_v8.SchemaTooNew, match=f"schema version {SCHEMA_VERSION}"):
        legacy_store(db_url).migrate()


def test_the_original_projects_database_converges_keeping_its_rows(open_store, db_url, engine_name, request,
                                                                    tmp_path):
    """Version 0: the original project's `instances` table (SQLite; on PostgreSQL the same DDL, as a team
    would have copied it)."""
    if engine_name == "postgres":
        with psycopg.connect(db_url) as conn:
            conn.execute(ORIGINAL_SCHEMA)
            conn.cursor().executemany("INSERT INTO instances VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                                      ORIGINAL_ROWS)
    else:
        with sqlite3.connect(db_url) as conn:
            conn.execute(ORIGINAL_SCHEMA)
            conn.executemany("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?)", ORIGINAL_ROWS)
    store = open_store()
    store.migrate()
    store.migrate()
    rows = store.list_instances(include_terminated=True)
    assert [r["name"] for r in rows] == ["old-1", "old-2"]
    assert rows[0]["public_ip"] == "1.2.3.4" and rows[1]["security_group_id"] == "sg-0123456789abcdef0"
    assert rows[0]["tags"] == {} and rows[0]["storage_gb"] is None
    assert rows[1]["ssh_string"] is None and rows[1]["ssh_unavailable"].startswith("no public IPv4")  # schema 8
    # The same tables, columns and indexes as a fresh one (its NOT NULLs are the original project's own; on
    # PostgreSQL so are its column types: plain TEXT, not the store's byte-wise TEXT).
    types = engine_name == "sqlite"
    assert schema(db_url, False, types) == fresh_schema(request, engine_name, tmp_path, False, types)
    if engine_name == "sqlite":
        with sqlite3.connect(db_url) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_schema_7_database_moves_the_no_address_sentence_out_of_ssh_string(open_store, db_url, engine_name):
    old = legacy_store(db_url)
    old.migrate()
    sentence = "no public IPv4 address (created with associate_public_ip false): reach it through a bastion"
    old.upsert_instance({"id": "i-0123456789abcdef0", "name": "a", "state": "running", "created_at": "t0",
                         "updated_at": "t0", "ssh_string": sentence})
    old.upsert_instance({"id": "i-0123456789abcdef1", "name": "b", "state": "running", "created_at": "t0",
                         "updated_at": "t0", "ssh_string": "ssh -i k.pem ec2-user@1.2.3.4"})
    old.connect().execute("UPDATE schema_version SET version = 7" if engine_name == "postgres"
                          else "PRAGMA user_version = 7")
    store = open_store()
    store.migrate()
    rows = {r["id"]: r for r in store.list_instances()}
    assert (rows["i-0123456789abcdef0"]["ssh_string"], rows["i-0123456789abcdef0"]["ssh_unavailable"]) == \
        (None, sentence)
    assert (rows["i-0123456789abcdef1"]["ssh_string"], rows["i-0123456789abcdef1"]["ssh_unavailable"]) == \
        ("ssh -i k.pem ec2-user@1.2.3.4", None)


def test_a_schema_newer_than_this_code_is_refused_untouched(open_store, db_url, engine_name):
    # Written by a newer service before Alembic ... (a version number only)
    if engine_name == "postgres":
        with psycopg.connect(db_url) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION + 1,))
    else:
        with sqlite3.connect(db_url) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this version of "
                                           rf"ec2-creator-local understands \({SCHEMA_VERSION}\); upgrade the service"):
        open_store().migrate()
    assert set(schema(db_url)) <= {"schema_version", "triggers"}  # nothing was made


def test_a_revision_newer_than_this_code_is_refused_untouched(new_db, open_store, db_url):
    newer = f"{SCHEMA_VERSION + 1:04d}"
    execute(new_db, "UPDATE alembic_version SET version_num = :v", {"v": newer})
    before = schema(db_url)
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        open_store().migrate()
    assert schema(db_url) == before
    assert execute(new_db, "SELECT version_num FROM alembic_version") == [(newer,)]


def test_replicas_starting_at_once_migrate_once(db_url, caplog):
    stores = [Database(db_url) for _ in range(3)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def migrate(store: Database) -> None:
        try:
            start.wait()
            store.migrate()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    caplog.set_level(logging.INFO, logger="alembic.runtime.migration")
    threads = [threading.Thread(target=migrate, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        ran = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Running upgrade")]
        assert len(ran) == SCHEMA_VERSION  # each revision once, by one replica
        assert execute(stores[0], "SELECT version_num FROM alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]
    finally:
        for store in stores:
            store.dispose()


def test_a_database_of_ours_made_before_is_made_private(tmp_path):
    path = tmp_path / "instances.db"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    store = Database(path)
    store.migrate()
    store.dispose()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
