"""The only SQL in the project: a small SQLite store (WAL, busy timeout, versioned schema).

Methods are synchronous and fast; async code calls them through `asyncio.to_thread`, so the
event loop never waits on the disk. Each thread gets its own connection.
"""

import itertools
import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1

# Columns of the original project's `instances` table, kept so its databases open unchanged.
ORIGINAL_COLUMNS = ("id", "name", "public_ip", "ami", "instance_type", "state", "ssh_string",
                    "security_group_id", "backend_used", "created_at", "updated_at")
ADDED_COLUMNS = {
    "storage_gb": "INTEGER",
    "tags": "TEXT NOT NULL DEFAULT '{}'",
    "login_user": "TEXT",
    "request_id": "TEXT",
    "launched_at": "TEXT",
}
INSTANCE_FIELDS = ORIGINAL_COLUMNS + tuple(ADDED_COLUMNS)
# What the API shows of an instance (the response model's fields, in its order).
PUBLIC_FIELDS = ("id", "name", "public_ip", "ssh_string", "state", "ami", "instance_type", "storage_gb",
                 "security_group_id", "tags", "backend_used", "created_at", "updated_at")

ACTIVE = "state NOT IN ('terminated', 'failed')"


def _tags(text: str | None) -> dict:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        # Bumped after every committed write to `instances`; the rendered list is cached per value.
        self._generations = itertools.count(1)
        self.generation = 0
        self._list_cache: dict[bool, tuple[int, bytes]] = {}

    # -- connection and schema -------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
        return conn

    def migrate(self) -> None:
        """Create or upgrade the schema to SCHEMA_VERSION, keeping every existing row."""
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < 1:
                self._migrate_to_1(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _migrate_to_1(conn: sqlite3.Connection) -> None:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS instances (
                id TEXT PRIMARY KEY, name TEXT, public_ip TEXT, ami TEXT, instance_type TEXT,
                state TEXT, ssh_string TEXT, security_group_id TEXT, backend_used TEXT,
                created_at TEXT, updated_at TEXT)"""
        )
        have = {row["name"] for row in conn.execute("PRAGMA table_info(instances)")}
        for column, decl in ADDED_COLUMNS.items():
            if column not in have:
                conn.execute(f"ALTER TABLE instances ADD COLUMN {column} {decl}")
        conn.execute("UPDATE instances SET tags = '{}' WHERE tags IS NULL")
        conn.execute("CREATE INDEX IF NOT EXISTS instances_state ON instances(state)")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS instance_events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, at TEXT NOT NULL,
                action TEXT NOT NULL, from_state TEXT, to_state TEXT, source TEXT NOT NULL,
                request_id TEXT, aws_error TEXT)"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS events_instance ON instance_events(instance_id, seq)")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS ami_catalog (
                ami_id TEXT PRIMARY KEY, architecture TEXT NOT NULL, root_device_name TEXT NOT NULL,
                login_user TEXT NOT NULL, alias TEXT, image_name TEXT, resolved_at TEXT NOT NULL)"""
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS instance_types (
                name TEXT PRIMARY KEY, architecture TEXT NOT NULL, fetched_at TEXT NOT NULL)"""
        )
        conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # One row per create request, written BEFORE the aws process starts (crash recovery and
        # Idempotency-Key replay). status: pending -> launched | failed.
        conn.execute(
            """CREATE TABLE IF NOT EXISTS launches (
                request_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, body_hash TEXT NOT NULL,
                body TEXT NOT NULL, status TEXT NOT NULL, instance_id TEXT, error TEXT,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS launches_status ON launches(status)")

    # -- instances -------------------------------------------------------------------------
    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        item = dict(row)
        item["tags"] = _tags(item.get("tags"))
        return item

    def get_instance(self, instance_id: str) -> dict | None:
        row = self.connect().execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return self._row(row)

    def list_instances(self, include_terminated: bool = False) -> list[dict]:
        where = "" if include_terminated else f"WHERE {ACTIVE}"
        rows = self.connect().execute(f"SELECT * FROM instances {where} ORDER BY created_at, id")
        return [self._row(r) for r in rows]

    def list_instances_json(self, include_terminated: bool = False) -> bytes:
        """`{"instances": [...]}` rendered once per change of the table, not once per request."""
        generation = self.generation  # read before the query: a later write invalidates the result
        cached = self._list_cache.get(include_terminated)
        if cached is not None and cached[0] == generation:
            return cached[1]
        where = "" if include_terminated else f"WHERE {ACTIVE}"
        rows = self.connect().execute(
            f"SELECT {', '.join(PUBLIC_FIELDS)} FROM instances {where} ORDER BY created_at, id").fetchall()
        items = [dict(zip(PUBLIC_FIELDS, row)) for row in rows]
        for item in items:
            item["tags"] = _tags(item["tags"])
        body = json.dumps({"instances": items}, separators=(",", ":")).encode()
        self._list_cache[include_terminated] = (generation, body)
        return body

    def _written(self) -> None:
        self.generation = next(self._generations)  # atomic: concurrent writers never share a value

    def tracked_ids(self) -> dict[str, dict]:
        """Every instance not yet terminated, by id (what a sweep compares with EC2)."""
        return {r["id"]: r for r in self.list_instances()}

    def upsert_instance(self, fields: dict[str, Any]) -> None:
        fields = dict(fields)
        if "tags" in fields:
            fields["tags"] = json.dumps(fields["tags"] or {}, sort_keys=True)
        columns = [c for c in INSTANCE_FIELDS if c in fields]
        placeholders = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("id", "created_at"))
        self.connect().execute(
            f"INSERT INTO instances ({', '.join(columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            [fields[c] for c in columns],
        )
        self._written()

    def update_instance(self, instance_id: str, fields: dict[str, Any]) -> None:
        if not fields:
            return
        fields = dict(fields)
        if "tags" in fields:
            fields["tags"] = json.dumps(fields["tags"] or {}, sort_keys=True)
        sets = ", ".join(f"{c} = ?" for c in fields)
        self.connect().execute(f"UPDATE instances SET {sets} WHERE id = ?", [*fields.values(), instance_id])
        self._written()

    # -- events ----------------------------------------------------------------------------
    def add_event(self, instance_id: str, action: str, from_state: str | None, to_state: str | None,
                  source: str, request_id: str | None = None, aws_error: str | None = None,
                  at: str | None = None) -> None:
        self.connect().execute(
            "INSERT INTO instance_events (instance_id, at, action, from_state, to_state, source, request_id, "
            "aws_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (instance_id, at or utcnow(), action, from_state, to_state, source, request_id, aws_error),
        )

    def list_events(self, instance_id: str) -> list[dict]:
        rows = self.connect().execute(
            "SELECT at, action, from_state, to_state, source, request_id, aws_error FROM instance_events "
            "WHERE instance_id = ? ORDER BY seq", (instance_id,))
        return [dict(r) for r in rows]

    def transaction(self) -> "_Transaction":
        return _Transaction(self.connect(), self._written)

    # -- launches (one row per create request) ---------------------------------------------------
    def claim_launch(self, request_id: str, idempotency_key: str | None, body_hash: str,
                     body: dict) -> dict | None:
        """Insert a pending launch; if the key is taken, return the existing launch instead.

        A failed launch under the same key is replaced, so a retry after a failure tries again.
        """
        now = utcnow()
        with self.transaction() as conn:
            if idempotency_key is not None:
                row = conn.execute("SELECT * FROM launches WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None and not (row["status"] == "failed" and row["body_hash"] == body_hash):
                    return dict(row)
                conn.execute("DELETE FROM launches WHERE idempotency_key = ?", (idempotency_key,))
            conn.execute(
                "INSERT INTO launches (request_id, idempotency_key, body_hash, body, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                (request_id, idempotency_key, body_hash, json.dumps(body, sort_keys=True), now, now))
        return None

    def finish_launch(self, request_id: str, status: str, instance_id: str | None = None,
                      error: str | None = None) -> None:
        self.connect().execute(
            "UPDATE launches SET status = ?, instance_id = COALESCE(?, instance_id), error = ?, updated_at = ? "
            "WHERE request_id = ?", (status, instance_id, error, utcnow(), request_id))

    def get_launch(self, request_id: str) -> dict | None:
        row = self.connect().execute("SELECT * FROM launches WHERE request_id = ?", (request_id,)).fetchone()
        return dict(row) if row else None

    def get_launch_by_key(self, idempotency_key: str) -> dict | None:
        row = self.connect().execute("SELECT * FROM launches WHERE idempotency_key = ?",
                                     (idempotency_key,)).fetchone()
        return dict(row) if row else None

    def pending_launches(self) -> list[dict]:
        return [dict(r) for r in self.connect().execute("SELECT * FROM launches WHERE status = 'pending'")]

    # -- catalogue ---------------------------------------------------------------------------
    def save_catalog(self, amis: Iterable[dict], types: Iterable[dict]) -> None:
        now = utcnow()
        with self.transaction() as conn:
            conn.execute("DELETE FROM ami_catalog")
            conn.execute("DELETE FROM instance_types")
            conn.executemany(
                "INSERT INTO ami_catalog (ami_id, architecture, root_device_name, login_user, alias, image_name, "
                "resolved_at) VALUES (:ami_id, :architecture, :root_device_name, :login_user, :alias, :image_name, "
                ":resolved_at)",
                [{**a, "resolved_at": now} for a in amis],
            )
            conn.executemany(
                "INSERT INTO instance_types (name, architecture, fetched_at) VALUES (:name, :architecture, "
                ":fetched_at)",
                [{**t, "fetched_at": now} for t in types],
            )
            conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('catalog_resolved_at', ?)", (now,))

    def load_catalog(self) -> tuple[list[dict], list[dict], str | None]:
        conn = self.connect()
        amis = [dict(r) for r in conn.execute("SELECT * FROM ami_catalog")]
        types = [dict(r) for r in conn.execute("SELECT * FROM instance_types")]
        return amis, types, self.kv_get("catalog_resolved_at")

    # -- small key/value facts (security group id, catalogue age) ---------------------------
    def kv_get(self, key: str) -> str | None:
        row = self.connect().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def kv_set(self, key: str, value: str | None) -> None:
        if value is None:
            self.connect().execute("DELETE FROM kv WHERE key = ?", (key,))
        else:
            self.connect().execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))


class _Transaction:
    """`with db.transaction() as conn:` runs the block in one IMMEDIATE transaction."""

    def __init__(self, conn: sqlite3.Connection, on_commit) -> None:
        self.conn = conn
        self.on_commit = on_commit

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        self.on_commit()  # writes inside bumped the generation before they were visible: bump again
