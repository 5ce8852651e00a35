# ruff: noqa
# mypy: ignore-errors
"""FROZEN: app/services/db.py as it was before the store moved to SQLAlchemy and Alembic (schema 8), kept
to build the databases the service finds in the field (tests/store/test_migrations.py). Never imported by
the app. Only its imports were changed (the rows moved to app.store.rows, the time helpers to the clock).

The only SQL in the project: a small SQLite store (WAL, busy timeout, versioned schema).

Methods are synchronous and fast; async code calls them through `asyncio.to_thread`, so the
event loop never waits on the disk. Each thread gets its own connection.
"""

import functools
import hashlib
import itertools
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from app.config import redact_url
from app.core import clock
from app.instances.schemas import STORED_FIELDS
from app.store.rows import EventRow, InstanceRow, InstanceState, LaunchRow, LaunchStatus

SCHEMA_VERSION = 8

# Columns of the original project's `instances` table, kept so its databases open unchanged.
ORIGINAL_COLUMNS = ("id", "name", "public_ip", "ami", "instance_type", "state", "ssh_string",
                    "security_group_id", "backend_used", "created_at", "updated_at")
ADDED_COLUMNS = {
    "storage_gb": "INTEGER",
    "tags": "TEXT NOT NULL DEFAULT '{}'",
    "login_user": "TEXT",
    "request_id": "TEXT",
    "launched_at": "TEXT",
    # v2: which EC2 the instance lives in (a sweep judges only its own: same endpoint, region and
    # account; a row with none of them recorded yet is claimed by the first sweep that sees it),
    # and how long it has been missing.
    "region": "TEXT",
    "endpoint": "TEXT",
    "account": "TEXT",
    "missing_since": "TEXT",
    "missed_sweeps": "INTEGER NOT NULL DEFAULT 0",
    # v3, the spend guard: when a running instance is stopped by the scheduler, and whether it was
    # launched with a public IPv4 (NULL: unknown, as for one we did not launch).
    "auto_stop_minutes": "INTEGER",
    "stop_at": "TEXT",
    "associate_public_ip": "INTEGER",
    # Bumped by every write of the row, in commit order: what the spend ledger re-reads after a write.
    "rev": "INTEGER NOT NULL DEFAULT 0",
    # v5, idle stop by CloudWatch: the setting asked for and the alarm's public view (JSON), what
    # CloudWatch holds (the setting as canonical JSON; NULL: no alarm), and when to try again after a failure.
    "stop_when_idle": "TEXT",
    "idle_alarm": "TEXT",
    "alarm_held": "TEXT",
    "alarm_attempts": "INTEGER NOT NULL DEFAULT 0",
    "alarm_retry_at": "TEXT",
    # v6, one token per person: who created it through the API (a name of API_TOKENS_FILE, or "admin" for
    # API_TOKEN); NULL for an instance adopted from EC2 or created without tokens (admins only see those).
    "owner": "TEXT",
    # v8, SSH that works: who may reach port 22 (a CIDR or "none"; NULL: not managed here), why ssh_string is
    # null, and the security group made for this instance alone (NULL once deleted, or when there is none).
    "ssh_from": "TEXT",
    "ssh_unavailable": "TEXT",
    "ssh_group": "TEXT",
}
# Columns holding JSON (decoded when read).
JSON_FIELDS: dict[str, dict | None] = {"tags": {}, "stop_when_idle": None, "idle_alarm": None}
INSTANCE_FIELDS = ORIGINAL_COLUMNS + tuple(ADDED_COLUMNS)
# What the API shows of an instance: the response model's stored fields, in its order.
PUBLIC_FIELDS = STORED_FIELDS

ENDED = tuple(s.value for s in InstanceState if s.ended)
ACTIVE = f"state NOT IN {ENDED!r}"
# An instance that is shutting down or ended needs no idle alarm any more.
ALARMABLE = f"state NOT IN {(InstanceState.SHUTTING_DOWN.value, *ENDED)!r}"
WANT = f"(CASE WHEN {ALARMABLE} THEN stop_when_idle END)"  # the setting CloudWatch should hold
# The alarm keeper's rows: this EC2's, of this account (a row whose account is not known yet counts).
ALARM_SCOPE = "region = ? AND endpoint = ? AND (CAST(? AS TEXT) IS NULL OR account IS NULL OR account = ?)"
# Evaluated inside the writing statement, under SQLite's write lock: revisions grow in commit order, so
# a reader that saw revision N has seen every row written before it.
NEXT_REV = "(SELECT COALESCE(MAX(rev), 0) + 1 FROM instances)"
KV_UPSERT = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
EVENT_COLUMNS = "at, action, from_state, to_state, source, request_id, aws_error, public_ip, actor"


def _scope(region: str | None, endpoint: str) -> tuple[str, tuple[str, ...]]:
    """The rows of one EC2: an endpoint and a region, or (region None) every region recorded for the endpoint.
    Another endpoint's rows never match (a sandbox's fake credentials must never reach real AWS)."""
    if region is None:
        return "endpoint = ? AND region IS NOT NULL", (endpoint,)
    return "region = ? AND endpoint = ?", (region, endpoint)


def _decode(column: str, text: str | None) -> Any:
    """A JSON column's value; its default when empty or unreadable (written by something else)."""
    default = JSON_FIELDS[column]
    if not text:
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return default
    return value if isinstance(value, dict) else default


def canonical_json(value: Any) -> str | None:
    """The one text of a JSON value (compared as text in SQL); None stays NULL."""
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    if "tags" in fields:
        fields["tags"] = json.dumps(fields["tags"] or {}, sort_keys=True)
    for column in ("stop_when_idle", "idle_alarm"):
        if column in fields:
            fields[column] = canonical_json(fields[column])
    return fields


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> str:
    return clock.now().strftime(TIME_FORMAT)


def ago(seconds: float) -> str:
    """The timestamp `seconds` before now, comparable as text with utcnow() values."""
    return (clock.now() - timedelta(seconds=seconds)).strftime(TIME_FORMAT)


def parse_time(value: str | None) -> datetime | None:
    """A stored timestamp (ours, EC2's, or the original project's 'YYYY-MM-DD HH:MM:SS') as UTC."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def stored_time(value: str | None) -> str | None:
    """An EC2 timestamp in our format: CLI v1 prints `...09.000Z`, v2 `...09+00:00`; None when unreadable."""
    at = parse_time(value)
    return at.strftime(TIME_FORMAT) if at else None


def age_seconds(value: str | None) -> float:
    """Seconds since a stored timestamp; infinite when there is none (an unknown age is an old one)."""
    at = parse_time(value)
    return float("inf") if at is None else (clock.now() - at).total_seconds()


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the service."""


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        # Bumped after every committed write to `instances`; the rendered list is cached per value.
        self._generations = itertools.count(1)
        self._generation = 0
        self._list_cache: dict[tuple[bool, str | None], tuple[int, bytes]] = {}

    # -- connection and schema -------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._create_private()
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
        return conn

    def _create_private(self) -> None:
        """The database (and a directory made for it) is readable by its owner only: it names every
        instance. A file of ours from before this rule is made private too."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite gives -wal/-shm the same mode
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            try:
                info = path.stat()
                if info.st_uid == os.getuid() and info.st_mode & 0o077:
                    path.chmod(0o600)
            except OSError:
                pass  # absent, or not ours to change

    # -- what differs between the engines (PostgresDatabase overrides these) ------------------------
    @property
    def name(self) -> str:
        return str(self.path)

    @staticmethod
    def _begin_write(conn) -> None:
        conn.execute("BEGIN IMMEDIATE")  # SQLite's one writer at a time, from the first statement on

    @staticmethod
    def _begin_read(conn) -> None:
        conn.execute("BEGIN")

    @staticmethod
    def _user_version(conn) -> int:
        return conn.execute("PRAGMA user_version").fetchone()[0]

    @staticmethod
    def _set_user_version(conn, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")

    @staticmethod
    def _json_text(column: str, key: str) -> str:
        """SQL for the text of `key` in a JSON object column."""
        return f"json_extract({column}, '$.{key}')"

    def migrate(self) -> None:
        """Create or upgrade the schema to SCHEMA_VERSION, keeping every existing row."""
        conn = self.connect()
        self._begin_write(conn)
        try:
            version = self._user_version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the database {self.name} has schema version {version}, newer than this version of "
                    f"ec2-creator-local understands ({SCHEMA_VERSION}); upgrade the service, or point "
                    "DATABASE_URL at another file. Nothing was changed.")
            if version < 1:
                self._migrate_to_1(conn)
            if version < 2:
                self._migrate_to_2(conn)
            if version < 3:
                self._migrate_to_3(conn)
            if version < 4:
                self._migrate_to_4(conn)
            if version < 5:
                self._migrate_to_5(conn)
            if version < 6:
                self._migrate_to_6(conn)
            if version < 7:
                self._migrate_to_7(conn)
            if version < 8:
                self._migrate_to_8(conn)
            self._set_user_version(conn, SCHEMA_VERSION)
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
        _add_instance_columns(conn)
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
        # Idempotency-Key replay). status: pending -> launched | failed (EC2 refused) | lost (never seen).
        conn.execute(
            """CREATE TABLE IF NOT EXISTS launches (
                request_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, body_hash TEXT NOT NULL,
                body TEXT NOT NULL, status TEXT NOT NULL, instance_id TEXT, error TEXT,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS launches_status ON launches(status)")

    @staticmethod
    def _migrate_to_2(conn: sqlite3.Connection) -> None:
        """Scope rows by (endpoint, region); the catalogue caches become per scope; prune by time."""
        _add_instance_columns(conn)
        have = _columns(conn, "launches")
        for column in ("region", "endpoint"):
            if column not in have:
                conn.execute(f"ALTER TABLE launches ADD COLUMN {column} TEXT")
        # Caches, refetched on demand: now keyed by scope (endpoint + region).
        conn.execute("DROP TABLE IF EXISTS ami_catalog")
        conn.execute("DROP TABLE IF EXISTS instance_types")
        conn.execute("DELETE FROM kv WHERE key = 'catalog_resolved_at'")
        conn.execute(
            """CREATE TABLE ami_catalog (
                scope TEXT NOT NULL, ami_id TEXT NOT NULL, architecture TEXT NOT NULL,
                root_device_name TEXT NOT NULL, login_user TEXT NOT NULL, alias TEXT, image_name TEXT,
                resolved_at TEXT NOT NULL, PRIMARY KEY (scope, ami_id))"""
        )
        conn.execute(
            """CREATE TABLE instance_types (
                scope TEXT NOT NULL, name TEXT NOT NULL, architecture TEXT NOT NULL, fetched_at TEXT NOT NULL,
                PRIMARY KEY (scope, name))"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS events_at ON instance_events(at)")

    @staticmethod
    def _migrate_to_3(conn: sqlite3.Connection) -> None:
        """Auto-stop and public-IP columns; each event keeps the public IP recorded with it (the ledger
        counts IPv4 hours from them)."""
        _add_instance_columns(conn)
        have = _columns(conn, "instance_events")
        if "public_ip" not in have:
            conn.execute("ALTER TABLE instance_events ADD COLUMN public_ip TEXT")
        conn.execute("CREATE INDEX IF NOT EXISTS instances_stop_at ON instances(stop_at) WHERE stop_at IS NOT NULL")
        conn.execute("CREATE INDEX IF NOT EXISTS instances_rev ON instances(rev)")

    @staticmethod
    def _migrate_to_8(conn: sqlite3.Connection) -> None:
        """ssh_from, ssh_unavailable and the per-instance group; the sentence once kept in ssh_string moves to
        ssh_unavailable (scripts run $(jq -r .ssh_string))."""
        _add_instance_columns(conn)
        conn.execute("UPDATE instances SET ssh_unavailable = ssh_string, ssh_string = NULL "
                     "WHERE ssh_string IS NOT NULL AND ssh_string NOT LIKE 'ssh %'")

    @staticmethod
    def _migrate_to_7(conn: sqlite3.Connection) -> None:
        """The spend guard's reservations, where every replica on one PostgreSQL database sees them: one row
        per admitted create or start whose record is not written yet, until it is (or `until` passes)."""
        conn.execute("CREATE TABLE IF NOT EXISTS reservations (key TEXT PRIMARY KEY, usd REAL NOT NULL, "
                     "until TEXT NOT NULL)")

    @staticmethod
    def _migrate_to_6(conn: sqlite3.Connection) -> None:
        """One token per person: each instance and launch keeps its owner, each event who asked for it."""
        _add_instance_columns(conn)
        if "owner" not in _columns(conn, "launches"):
            conn.execute("ALTER TABLE launches ADD COLUMN owner TEXT")
        if "actor" not in _columns(conn, "instance_events"):
            conn.execute("ALTER TABLE instance_events ADD COLUMN actor TEXT")
        conn.execute("CREATE INDEX IF NOT EXISTS instances_owner ON instances(owner)")

    @staticmethod
    def _migrate_to_5(conn: sqlite3.Connection) -> None:
        """Idle stop by CloudWatch: the setting, the alarm, and what CloudWatch holds."""
        _add_instance_columns(conn)

    @staticmethod
    def _migrate_to_4(conn: sqlite3.Connection) -> None:
        """The notifications outbox: one row per notification, one delivery per channel. While notifications
        are on (kv notify_enabled), a trigger writes an instance event's notification in the same statement
        as the event, so no crash can keep one without the other."""
        conn.execute(
            """CREATE TABLE IF NOT EXISTS notifications (
                id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, event TEXT, event_seq INTEGER,
                instance_id TEXT, data TEXT, at TEXT NOT NULL, expanded INTEGER NOT NULL DEFAULT 0)"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS notifications_new ON notifications(id) WHERE expanded = 0")
        conn.execute("CREATE INDEX IF NOT EXISTS notifications_at ON notifications(at)")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS deliveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT, notification_id INTEGER NOT NULL, channel TEXT NOT NULL,
                status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at TEXT, lease_until TEXT,
                last_error TEXT, created_at TEXT NOT NULL, sent_at TEXT, UNIQUE (notification_id, channel))"""
        )
        conn.execute("CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_at) WHERE status = 'pending'")
        if isinstance(conn, PgConnection):
            conn.raw.execute(PG_NOTIFY_TRIGGER)
            return
        conn.execute(
            """CREATE TRIGGER IF NOT EXISTS notify_instance_event AFTER INSERT ON instance_events
               WHEN EXISTS (SELECT 1 FROM kv WHERE key = 'notify_enabled')
               BEGIN
                 INSERT OR IGNORE INTO notifications (key, event_seq, instance_id, data, at)
                 VALUES ('event:' || NEW.seq, NEW.seq, NEW.instance_id,
                         json_object('to_state', NEW.to_state, 'public_ip', NEW.public_ip), NEW.at);
               END"""
        )

    # -- instances -------------------------------------------------------------------------
    @staticmethod
    def _row(row: sqlite3.Row) -> InstanceRow:
        item = dict(row)
        for column in JSON_FIELDS:
            item[column] = _decode(column, item.get(column))
        item["state"] = InstanceState(item["state"] or InstanceState.PENDING)
        return InstanceRow(**item)  # type: ignore[typeddict-item]  # the columns are INSTANCE_FIELDS

    @staticmethod
    def _launch(row: sqlite3.Row) -> LaunchRow:
        item = dict(row)
        item["status"] = LaunchStatus(item["status"])
        return LaunchRow(**item)  # type: ignore[typeddict-item]

    def get_instance(self, instance_id: str) -> InstanceRow | None:
        row = self.connect().execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return self._row(row) if row is not None else None

    def count_by_state(self) -> dict[str, int]:
        return {r[0] or "pending": r[1] for r in self.connect().execute(
            "SELECT state, COUNT(*) FROM instances GROUP BY state")}

    def get_instances(self, ids: list[str]) -> dict[str, InstanceRow]:
        """The recorded rows among `ids`, by id (in one read)."""
        found: dict[str, InstanceRow] = {}
        with self.read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                for r in conn.execute(f"SELECT * FROM instances WHERE id IN ({marks})", chunk):
                    found[r["id"]] = self._row(r)
        return found

    def require_instance(self, instance_id: str) -> InstanceRow:
        """A row this code has just written (or locked): its absence is a bug, not a 404."""
        row = self.get_instance(instance_id)
        if row is None:
            raise LookupError(f"instance {instance_id} is not recorded")
        return row

    def list_instances(self, include_terminated: bool = False) -> list[InstanceRow]:
        where = "" if include_terminated else f"WHERE {ACTIVE}"
        rows = self.connect().execute(f"SELECT * FROM instances {where} ORDER BY created_at, id")
        return [self._row(r) for r in rows]

    def list_instances_json(self, include_terminated: bool = False, owner: str | None = None) -> bytes:
        """`{"instances": [...]}` rendered once per change of the table, not once per request; with `owner`,
        only that owner's instances (rendered and cached per owner)."""
        generation = self.generation  # read before the query: a later write invalidates the result
        cached = self._list_cache.get((include_terminated, owner))
        if cached is not None and cached[0] == generation:
            return cached[1]
        conditions = ([] if include_terminated else [ACTIVE]) + ([] if owner is None else ["owner = ?"])
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self.connect().execute(
            f"SELECT {', '.join(PUBLIC_FIELDS)} FROM instances {where} ORDER BY created_at, id",
            () if owner is None else (owner,)).fetchall()
        items = [dict(zip(PUBLIC_FIELDS, row, strict=True)) for row in rows]
        for item in items:
            for column in JSON_FIELDS:
                item[column] = _decode(column, item[column])
        body = json.dumps({"instances": items}, separators=(",", ":")).encode()
        self._list_cache[(include_terminated, owner)] = (generation, body)
        return body

    @property
    def generation(self) -> int:
        """Changes whenever a write to `instances` commits: what cached views of the table are keyed by."""
        return self._generation

    def _written(self) -> None:
        self._generation = next(self._generations)  # atomic: concurrent writers never share a value

    def tracked_ids(self, region: str, endpoint: str, account: str) -> dict[str, InstanceRow]:
        """Every instance of this EC2 (endpoint, region, account) not yet terminated, by id: what a sweep
        judges. Rows of another EC2, or recorded before the scope was kept, are never judged here."""
        rows = self.connect().execute(
            f"SELECT * FROM instances WHERE {ACTIVE} AND region = ? AND endpoint = ? AND account = ?",
            (region, endpoint, account))
        return {r["id"]: self._row(r) for r in rows}

    def has_instances_in(self, endpoint: str) -> bool:
        """Whether this endpoint has a live instance on record, in any region."""
        row = self.connect().execute(f"SELECT 1 FROM instances WHERE {ACTIVE} AND endpoint = ? AND region IS NOT NULL "
                                     "LIMIT 1", (endpoint,)).fetchone()
        return row is not None

    def regions_in_use(self, endpoint: str, account: str | None) -> set[str]:
        """The regions of this endpoint where the account has a live instance on record (or one whose account
        is not known yet), or a launch whose outcome is not settled (pending, or lost: its instance may still
        show): what a sweep lists besides the server's own region. Another endpoint's are never included."""
        conn = self.connect()
        params: tuple[str, ...]
        if account is None:
            mine, params = "account IS NULL", (endpoint, endpoint)
        else:
            mine, params = "(account IS NULL OR account = ?)", (endpoint, account, endpoint)
        rows = conn.execute(
            f"SELECT DISTINCT region FROM instances WHERE {ACTIVE} AND endpoint = ? AND region IS NOT NULL AND {mine} "
            "UNION SELECT DISTINCT region FROM launches WHERE status IN ('pending', 'lost') AND endpoint = ? "
            "AND region IS NOT NULL", params)
        return {r[0] for r in rows}

    def claim_unscoped_launches(self, region: str, endpoint: str) -> int:
        """Launches from before v2 were sent to the EC2 the server first runs against (a lookup by their
        RequestId settles them either way); instance rows are claimed only when a sweep sees them."""
        with self.transaction() as conn:
            return conn.execute("UPDATE launches SET region = ?, endpoint = ? WHERE region IS NULL",
                                (region, endpoint)).rowcount

    def set_missing(self, instance_id: str, missed_sweeps: int, missing_since: str | None) -> None:
        """Bookkeeping of a tracked instance a sweep did not see (no public field changes)."""
        self.connect().execute("UPDATE instances SET missed_sweeps = ?, missing_since = ? WHERE id = ?",
                               (missed_sweeps, missing_since, instance_id))

    def upsert_instance(self, fields: dict[str, Any]) -> None:
        fields = _encode(fields)
        columns = [c for c in INSTANCE_FIELDS if c in fields and c != "rev"]
        placeholders = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in [*columns, "rev"] if c not in ("id", "created_at"))
        self.connect().execute(
            f"INSERT INTO instances ({', '.join(columns)}, rev) VALUES ({placeholders}, {NEXT_REV}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            [fields[c] for c in columns],
        )
        self._written()

    def update_instance(self, instance_id: str, fields: dict[str, Any]) -> None:
        if not fields:
            return
        fields = _encode(fields)
        fields.pop("rev", None)
        sets = ", ".join(f"{c} = ?" for c in fields)
        self.connect().execute(f"UPDATE instances SET {sets}, rev = {NEXT_REV} WHERE id = ?",
                               [*fields.values(), instance_id])
        self._written()

    # -- events ----------------------------------------------------------------------------
    def add_event(self, instance_id: str, action: str, from_state: str | None, to_state: str | None,
                  source: str, request_id: str | None = None, aws_error: str | None = None,
                  at: str | None = None, public_ip: str | None = None, actor: str | None = None) -> None:
        """actor: who asked for it through the API (None: the reconciler, the auto-stop, a server without tokens)."""
        self.connect().execute(
            "INSERT INTO instance_events (instance_id, at, action, from_state, to_state, source, request_id, "
            "aws_error, public_ip, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (instance_id, at or utcnow(), action, from_state, to_state, source, request_id, aws_error, public_ip,
             actor),
        )

    def list_events(self, instance_id: str) -> list[EventRow]:
        rows = self.connect().execute(
            f"SELECT {EVENT_COLUMNS} FROM instance_events WHERE instance_id = ? ORDER BY seq", (instance_id,))
        return [EventRow(**r) for r in rows]  # type: ignore[typeddict-item]

    def ledger(self, region: str | None, endpoint: str, since: str,
               after_rev: int | None = None) -> tuple[list[InstanceRow], dict[str, list[EventRow]]]:
        """What the spend ledger reads, in one transaction, with their events in order: this EC2's
        instances (of `region`; None: of every region of the endpoint) not terminated or changed since
        `since`; or, with `after_rev`, only those written after that revision."""
        conn = self.connect()
        scope, where = _scope(region, endpoint)
        params: tuple[object, ...]
        if after_rev is None:
            which, params = f"{scope} AND ({ACTIVE} OR updated_at >= ?)", (*where, since)
        else:
            which, params = f"{scope} AND rev > ?", (*where, after_rev)
        with self.read():
            rows = [self._row(r) for r in conn.execute(f"SELECT * FROM instances WHERE {which}", params)]
            events: dict[str, list[EventRow]] = {}
            for r in conn.execute(f"SELECT instance_id, {EVENT_COLUMNS} FROM instance_events WHERE instance_id IN "
                                  f"(SELECT id FROM instances WHERE {which}) ORDER BY seq", params):
                item = dict(r)
                events.setdefault(item.pop("instance_id"), []).append(EventRow(**item))  # type: ignore[typeddict-item]
        return rows, events

    def due_for_stop(self, now: str, region: str | None, endpoint: str) -> list[InstanceRow]:
        """Running instances of this EC2 (of `region`; None: of every region of the endpoint) whose stop_at has
        come (EC2 cannot stop a pending one yet)."""
        scope, params = _scope(region, endpoint)
        return [self._row(r) for r in self.connect().execute(
            "SELECT * FROM instances WHERE stop_at IS NOT NULL AND stop_at <= ? AND state = 'running' "
            f"AND {scope} ORDER BY stop_at", (now, *params))]

    # -- idle alarms (CloudWatch) -------------------------------------------------------------
    def alarm_work(self, region: str, endpoint: str, account: str | None, now: str) -> list[InstanceRow]:
        """Instances of this EC2 (and account) whose alarm in CloudWatch is not what is asked (none once it is
        shutting down), due now; and those whose shown idle_alarm no longer fits (nothing to send for them)."""
        return [self._row(r) for r in self.connect().execute(
            f"SELECT * FROM instances WHERE {ALARM_SCOPE} AND ((COALESCE({WANT}, '') != COALESCE(alarm_held, '') "
            f"AND (alarm_retry_at IS NULL OR alarm_retry_at <= ?)) OR ({WANT} IS NULL AND alarm_held IS NULL AND "
            f"idle_alarm IS NOT NULL) OR ({WANT} = alarm_held AND (idle_alarm IS NULL OR "
            f"{self._json_text('idle_alarm', 'status')} != 'set' OR "
            f"{self._json_text('idle_alarm', 'error')} IS NOT NULL))) "
            "ORDER BY id", (region, endpoint, account, account, now))]

    def next_alarm_retry(self, region: str, endpoint: str, account: str | None) -> str | None:
        row = self.connect().execute(
            f"SELECT MIN(alarm_retry_at) FROM instances WHERE {ALARM_SCOPE} AND alarm_retry_at IS NOT NULL AND "
            f"COALESCE({WANT}, '') != COALESCE(alarm_held, '')", (region, endpoint, account, account)).fetchone()
        return row[0] if row else None

    def with_alarms(self, region: str, endpoint: str, account: str | None) -> list[InstanceRow]:
        """Instances of this EC2 (and account) that ask for an idle alarm or are recorded as holding one."""
        return [self._row(r) for r in self.connect().execute(
            f"SELECT * FROM instances WHERE {ALARM_SCOPE} AND ({WANT} IS NOT NULL OR alarm_held IS NOT NULL)",
            (region, endpoint, account, account))]

    def next_stop_at(self, region: str | None, endpoint: str) -> str | None:
        scope, params = _scope(region, endpoint)
        row = self.connect().execute(
            "SELECT MIN(stop_at) FROM instances WHERE stop_at IS NOT NULL AND state = 'running' "
            f"AND {scope}", params).fetchone()
        return row[0] if row else None

    def read(self) -> "_Read":
        """`with db.read():` one consistent snapshot for several SELECTs."""
        return _Read(self.connect(), self._begin_read)

    def transaction(self, instances: bool = True) -> "_Transaction":
        """instances=False: the block writes no instance row (the rendered list stays cached)."""
        return _Transaction(self.connect(), self._written if instances else _nothing, self._begin_write)

    def savepoint(self) -> "_Savepoint":
        """Inside a transaction: a failure in the block undoes the block alone, then propagates."""
        return _Savepoint(self.connect())

    # -- launches (one row per create request) ---------------------------------------------------
    def claim_launch(self, request_id: str, idempotency_key: str | None, body_hash: str, body: dict,
                     region: str, endpoint: str, owner: str | None = None,
                     admin: bool = True) -> tuple[LaunchRow, bool]:
        """Insert a pending launch, or find the one that holds this Idempotency-Key.

        Returns (launch, claimed). A key is its owner's: one held by someone else (an owner other than
        `owner`; an admin may also use a key of no owner) is returned, never claimed. Under the same key, owner
        and body:
        - a launch whose instance is recorded after all is launched: returned, not claimed;
        - a *lost* launch (its outcome was unknown, and lookups found nothing) is claimed again as it
          was (same request id and recorded parameters), so the retry sends EC2 the exact request it
          sent before, client token and RequestId tag included, and EC2's own dedupe holds;
        - a *failed* one (EC2 refused it) is replaced by a fresh launch.
        """
        now = utcnow()
        with self.transaction() as conn:
            if idempotency_key is not None:
                found = conn.execute("SELECT * FROM launches WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if found is not None:
                    row = self._launch(found)
                    if row["status"] not in (LaunchStatus.FAILED, LaunchStatus.LOST) or row["body_hash"] != body_hash:
                        return row, False
                    if row["owner"] != owner and not (admin and row["owner"] is None):
                        return row, False
                    instance = conn.execute("SELECT id FROM instances WHERE request_id = ?",
                                            (row["request_id"],)).fetchone()
                    if instance is not None:
                        conn.execute("UPDATE launches SET status = ?, instance_id = ?, error = NULL, updated_at = ? "
                                     "WHERE request_id = ?",
                                     (LaunchStatus.LAUNCHED, instance["id"], now, row["request_id"]))
                        return {**row, "status": LaunchStatus.LAUNCHED, "instance_id": instance["id"]}, False
                    if row["status"] == LaunchStatus.LOST:
                        conn.execute("UPDATE launches SET status = ?, error = NULL, created_at = ?, updated_at = ?, "
                                     "region = ?, endpoint = ? WHERE request_id = ?",
                                     (LaunchStatus.PENDING, now, now, region, endpoint, row["request_id"]))
                        return {**row, "status": LaunchStatus.PENDING, "created_at": now}, True
                    conn.execute("DELETE FROM launches WHERE request_id = ?", (row["request_id"],))
            conn.execute(
                "INSERT INTO launches (request_id, idempotency_key, body_hash, body, status, created_at, updated_at, "
                "region, endpoint, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request_id, idempotency_key, body_hash, json.dumps(body, sort_keys=True), LaunchStatus.PENDING,
                 now, now, region, endpoint, owner))
            return self._launch(conn.execute("SELECT * FROM launches WHERE request_id = ?",
                                             (request_id,)).fetchone()), True

    def finish_launch(self, request_id: str, status: LaunchStatus, instance_id: str | None = None,
                      error: str | None = None) -> None:
        """launched (whatever it was: EC2 shows its instance), or failed / lost (only while pending)."""
        only_pending = "" if status == LaunchStatus.LAUNCHED else " AND status = 'pending'"
        self.connect().execute(
            "UPDATE launches SET status = ?, instance_id = COALESCE(?, instance_id), error = ?, updated_at = ? "
            f"WHERE request_id = ?{only_pending}", (status, instance_id, error, utcnow(), request_id))

    def settled_without_instance(self, region: str, endpoint: str) -> dict[str, LaunchRow]:
        """Launches recorded failed or lost, by request id: if EC2 shows one's instance, it launched."""
        return {r["request_id"]: self._launch(r) for r in self.connect().execute(
            "SELECT * FROM launches WHERE status IN ('failed', 'lost') AND region = ? AND endpoint = ?",
            (region, endpoint))}

    def get_launch(self, request_id: str) -> LaunchRow | None:
        row = self.connect().execute("SELECT * FROM launches WHERE request_id = ?", (request_id,)).fetchone()
        return self._launch(row) if row else None

    def get_launch_by_key(self, idempotency_key: str) -> LaunchRow | None:
        row = self.connect().execute("SELECT * FROM launches WHERE idempotency_key = ?",
                                     (idempotency_key,)).fetchone()
        return self._launch(row) if row else None

    def pending_launches(self, region: str, endpoint: str) -> list[LaunchRow]:
        return [self._launch(r) for r in self.connect().execute(
            "SELECT * FROM launches WHERE status = 'pending' AND region = ? AND endpoint = ?", (region, endpoint))]

    def prune(self, before: str) -> tuple[int, int]:
        """Forget events and finished launches older than `before`; instance rows are never pruned.

        Events are kept back to the start of the previous budget period whatever `before` says: the spend
        ledger replays them to know what this month and the last one cost (a short retention must not
        erase spending and let the budget admit more)."""
        from app.budget.spending import period_bounds  # the budget's own months (it imports this module)

        this_month = period_bounds(clock.now())[0]
        last_month = period_bounds(this_month - timedelta(microseconds=1))[0].strftime(TIME_FORMAT)
        events_before = min(before, last_month)
        with self.transaction() as conn:
            # Each instance keeps its newest event (its history starts there) and its newest state change
            # before the cutoff: its state when the previous period began, which the ledger counts from.
            events = conn.execute(
                "DELETE FROM instance_events WHERE at < ? "
                "AND seq NOT IN (SELECT MAX(seq) FROM instance_events GROUP BY instance_id) "
                "AND seq NOT IN (SELECT MAX(seq) FROM instance_events WHERE at < ? AND to_state IS NOT NULL "
                "GROUP BY instance_id)", (events_before, events_before)).rowcount
            launches = conn.execute("DELETE FROM launches WHERE status != 'pending' AND updated_at < ?",
                                    (before,)).rowcount
            # Notifications with every delivery finished (or none at all), like the events they tell of.
            conn.execute("DELETE FROM deliveries WHERE status != 'pending' AND created_at < ?", (before,))
            # A budget crossing is kept for two months whatever the retention: it is sent once per month.
            keep_budget = (clock.now() - timedelta(days=62)).strftime(TIME_FORMAT)
            conn.execute("DELETE FROM notifications WHERE at < ? AND (event IS NULL OR event NOT LIKE 'budget%' "
                         "OR at < ?) AND id NOT IN (SELECT notification_id FROM deliveries)", (before, keep_budget))
        return events, launches

    # -- notifications (the outbox) -----------------------------------------------------------
    def enable_notifications(self) -> None:
        """From now on instance events queue notifications (the trigger of schema 4 reads this). Never
        switched off: another replica may still send; rows nobody sends are dropped as old news."""
        self.kv_set("notify_enabled", "1")

    def queue_notification(self, key: str, event: str, instance_id: str | None, data: dict) -> bool:
        """A notification that is not an instance event (an auto-stop warning, a budget crossing); once per key."""
        return self.connect().execute(
            "INSERT INTO notifications (key, event, instance_id, data, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (key, event, instance_id, json.dumps(data), utcnow())).rowcount == 1

    def unexpanded_notifications(self, limit: int) -> list[dict]:
        rows = self.connect().execute(
            "SELECT n.id, n.event, n.at, e.action, e.source, e.from_state, e.to_state FROM notifications n "
            "LEFT JOIN instance_events e ON e.seq = n.event_seq WHERE n.expanded = 0 ORDER BY n.id LIMIT ?",
            (limit,))
        return [dict(r) for r in rows]

    def expand_notification(self, notification_id: int, event: str | None, channels: list[str]) -> None:
        """Name the notification and give it one pending delivery per channel, at once."""
        now = utcnow()
        with self.transaction(instances=False) as conn:
            conn.execute("UPDATE notifications SET event = ?, expanded = 1 WHERE id = ?", (event, notification_id))
            conn.executemany(
                "INSERT INTO deliveries (notification_id, channel, status, next_at, created_at) "
                "VALUES (?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
                [(notification_id, c, now, now) for c in channels])

    def stopping_before(self, horizon: str, region: str | None, endpoint: str) -> list[dict]:
        """Running instances of this EC2 (None: of every region of the endpoint) whose auto-stop comes before
        `horizon`."""
        scope, params = _scope(region, endpoint)
        rows = self.connect().execute(
            "SELECT id, stop_at, state, public_ip FROM instances WHERE stop_at IS NOT NULL AND stop_at <= ? "
            f"AND state IN ('pending', 'running') AND {scope}", (horizon, *params))
        return [dict(r) for r in rows]

    def claim_deliveries(self, now: str, lease_until: str, limit: int) -> list[dict]:
        """Take up to `limit` due deliveries for `lease_until` (another replica skips them meanwhile)."""
        due = ("SELECT id FROM deliveries WHERE status = 'pending' AND next_at <= ? AND "
               "(lease_until IS NULL OR lease_until <= ?) ORDER BY next_at, id LIMIT ?")
        if self.connect().execute(due, (now, now, 1)).fetchone() is None:
            return []  # the usual answer, without taking the write lock
        with self.transaction(instances=False) as conn:
            ids = [r[0] for r in conn.execute(due, (now, now, limit))]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            conn.execute(f"UPDATE deliveries SET lease_until = ? WHERE id IN ({marks})", (lease_until, *ids))
            rows = conn.execute(
                "SELECT d.id, d.channel, d.attempts, d.created_at, n.key, n.event, n.instance_id, n.data, n.at "
                f"FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE d.id IN ({marks}) "
                "ORDER BY d.next_at, d.id", ids)
            return [dict(r) for r in rows]

    def finish_delivery(self, delivery_id: int, status: str, error: str | None, next_at: str | None,
                        lease: str) -> None:
        """Record a try, if our lease still holds (a replica that took the delivery over records its own)."""
        sent = utcnow() if status == "sent" else None
        self.connect().execute(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_error = COALESCE(?, last_error), "
            "next_at = ?, lease_until = NULL, sent_at = ? WHERE id = ? AND lease_until = ?",
            (status, error, next_at, sent, delivery_id, lease))

    def release_deliveries(self, ids: list[int], lease: str) -> None:
        self.connect().executemany("UPDATE deliveries SET lease_until = NULL WHERE id = ? AND lease_until = ?",
                                   [(i, lease) for i in ids])

    def list_deliveries(self, limit: int) -> list[dict]:
        rows = self.connect().execute(
            "SELECT d.id, n.key, n.event, n.instance_id, d.channel, d.status, d.attempts, d.created_at, d.sent_at, "
            "d.next_at, d.last_error FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "ORDER BY d.id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    # -- catalogue ---------------------------------------------------------------------------
    def save_catalog(self, scope: str, amis: Iterable[dict], types: Iterable[dict]) -> None:
        """The AMI catalogue and free-tier types of one EC2 (scope: endpoint and region)."""
        now = utcnow()
        with self.transaction() as conn:
            conn.execute("DELETE FROM ami_catalog WHERE scope = ?", (scope,))
            conn.execute("DELETE FROM instance_types WHERE scope = ?", (scope,))
            conn.executemany(
                "INSERT INTO ami_catalog (scope, ami_id, architecture, root_device_name, login_user, alias, "
                "image_name, resolved_at) VALUES (:scope, :ami_id, :architecture, :root_device_name, :login_user, "
                ":alias, :image_name, :resolved_at)",
                [{**a, "scope": scope, "resolved_at": now} for a in amis],
            )
            conn.executemany(
                "INSERT INTO instance_types (scope, name, architecture, fetched_at) VALUES (:scope, :name, "
                ":architecture, :fetched_at)",
                [{**t, "scope": scope, "fetched_at": now} for t in types],
            )
            conn.execute(KV_UPSERT, (f"catalog_resolved_at:{scope}", now))

    def load_catalog(self, scope: str) -> tuple[list[dict], list[dict], str | None]:
        conn = self.connect()
        columns = "ami_id, architecture, root_device_name, login_user, alias, image_name"
        amis = [dict(r) for r in conn.execute(f"SELECT {columns} FROM ami_catalog WHERE scope = ?", (scope,))]
        types = [dict(r) for r in conn.execute("SELECT name, architecture FROM instance_types WHERE scope = ?",
                                               (scope,))]
        return amis, types, self.kv_get(f"catalog_resolved_at:{scope}")

    # -- budget reservations (replicas on PostgreSQL) ------------------------------------------
    # A reservation is one row per budget period it reaches: key "<reservation>@YYYY-MM".
    def reservations(self, now: str) -> dict[str, dict[str, float]]:
        """What admitted creates and starts of every replica reserve, their records not written yet:
        reservation -> USD per period ("YYYY-MM"; "" for a row of an older version, meaning the current one)."""
        held: dict[str, dict[str, float]] = {}
        for key, usd in self.connect().execute("SELECT key, usd FROM reservations WHERE until > ?", (now,)):
            name, _, period = str(key).partition("@")
            held.setdefault(name, {})[period] = float(usd)
        return held

    def reserved_usd(self, now: str) -> float:
        """What every replica reserves, in every period."""
        return sum(sum(amounts.values()) for amounts in self.reservations(now).values())

    def reserve(self, key: str, amounts: dict[str, float] | float, until: str) -> None:
        if not isinstance(amounts, dict):
            amounts = {"": float(amounts)}
        conn = self.connect()  # inside the admission's transaction (its caller holds the write lock)
        for period, usd in amounts.items():
            conn.execute("INSERT INTO reservations (key, usd, until) VALUES (?, ?, ?) ON CONFLICT (key) DO "
                             "UPDATE SET usd = excluded.usd, until = excluded.until",
                             (f"{key}@{period}" if period else key, usd, until))

    def unreserve(self, key: str) -> None:
        """Forget a reservation (each period's row), and any that expired (their replica died before it could)."""
        # "@" < "A": the keys "<key>@..." are exactly those in [key + "@", key + "A") byte-wise.
        self.connect().execute("DELETE FROM reservations WHERE key = ? OR (key >= ? AND key < ?) OR until <= ?",
                               (key, key + "@", key + "A", utcnow()))

    def unresolved_launches(self, endpoint: str) -> list[LaunchRow]:
        """Launches of this endpoint (any region) whose outcome is not known yet: they hold budget."""
        return [self._launch(r) for r in self.connect().execute(
            "SELECT * FROM launches WHERE status = 'pending' AND endpoint = ?", (endpoint,))]

    # -- small key/value facts (security group id, catalogue age) ---------------------------
    def kv_get(self, key: str) -> str | None:
        row = self.connect().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def kv_set(self, key: str, value: str | None) -> None:
        if value is None:
            self.connect().execute("DELETE FROM kv WHERE key = ?", (key,))
        else:
            self.connect().execute(KV_UPSERT, (key, value))


def _nothing() -> None:
    pass


def _add_instance_columns(conn) -> None:
    """Every column of ADDED_COLUMNS the instances table lacks (each migration that adds some calls this)."""
    have = _columns(conn, "instances")
    for column, decl in ADDED_COLUMNS.items():
        if column not in have:
            conn.execute(f"ALTER TABLE instances ADD COLUMN {column} {decl}")


def _columns(conn, table: str) -> set[str]:
    """The column names of `table`, on either engine."""
    if isinstance(conn, PgConnection):
        return conn.columns(table)
    return {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}


class _Transaction:
    """`with db.transaction() as conn:` runs the block in one IMMEDIATE transaction."""

    def __init__(self, conn: sqlite3.Connection, on_commit, begin) -> None:
        self.conn = conn
        self.on_commit = on_commit
        self.begin = begin

    def __enter__(self) -> sqlite3.Connection:
        self.begin(self.conn)
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        self.on_commit()  # writes inside bumped the generation before they were visible: bump again


class _Read:
    """A snapshot for several SELECTs; inside a transaction already, that transaction is the snapshot."""

    def __init__(self, conn: sqlite3.Connection, begin) -> None:
        self.conn = conn
        self.begin = begin
        self.nested = False

    def __enter__(self) -> sqlite3.Connection:
        self.nested = self.conn.in_transaction
        if not self.nested:
            self.begin(self.conn)
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.nested:
            self.conn.execute("COMMIT")


class _Savepoint:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("SAVEPOINT one_row")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK TO SAVEPOINT one_row")
        self.conn.execute("RELEASE SAVEPOINT one_row")


# -- PostgreSQL (DATABASE_URL=postgresql://...) ---------------------------------------------------
# The SQL above is written once, in the subset both engines speak (standard upserts, `?` parameters);
# the few differences are translated here, so the schema and its migrations are the same on both.

# Every write transaction takes this transaction-scoped advisory lock first: writers run one at a time,
# as in SQLite, across every replica (revisions grow in commit order; a launch claim sees the last one).
PG_WRITE_LOCK = 0x45433243_00000001
PG_NOTIFY_TRIGGER = """
CREATE OR REPLACE FUNCTION notify_instance_event() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF EXISTS (SELECT 1 FROM kv WHERE key = 'notify_enabled') THEN
    INSERT INTO notifications (key, event_seq, instance_id, data, at)
    VALUES ('event:' || NEW.seq, NEW.seq, NEW.instance_id,
            json_build_object('to_state', NEW.to_state, 'public_ip', NEW.public_ip)::text, NEW.at)
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NEW;
END $fn$;
DROP TRIGGER IF EXISTS notify_instance_event ON instance_events;
CREATE TRIGGER notify_instance_event AFTER INSERT ON instance_events
  FOR EACH ROW EXECUTE FUNCTION notify_instance_event();
"""
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_DDL_TEXT = re.compile(r"\bTEXT\b")
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


# What a broken or busy store raises, on either engine.
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str, named: bool = False) -> str:
    """A statement of this module as psycopg takes it: %s or %(name)s parameters; in DDL, TEXT compares
    byte by byte as in SQLite (timestamps and ids sort the same on both) and AUTOINCREMENT is an identity."""
    out = sql.replace("%", "%%")
    out = _NAMED.sub(r"%(\1)s", out) if named else out.replace("?", "%s")
    if out.lstrip().upper().startswith(("CREATE TABLE", "ALTER TABLE")):
        out = out.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        out = re.sub(r"\bREAL\b", "DOUBLE PRECISION", out)  # SQLite's REAL is 8 bytes, PostgreSQL's 4
        out = _DDL_TEXT.sub('TEXT COLLATE "C"', out)
    return out


def _pg_params(params: Any) -> Any:
    """Booleans are stored as 0/1 INTEGERs, as SQLite stores them."""
    if isinstance(params, dict):
        return {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
    return [int(v) if isinstance(v, bool) else v for v in params]


class PgRow(tuple):
    """A row as sqlite3.Row gives it: by position, by column name, and dict(row)."""

    names: tuple[str, ...]

    def __new__(cls, names: tuple[str, ...], values: Iterable[Any]) -> "PgRow":
        row = super().__new__(cls, values)
        row.names = names
        return row

    def keys(self) -> tuple[str, ...]:
        return self.names

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)


def _pg_rows(cursor):
    names = tuple(column.name for column in cursor.description or ())
    return lambda values: PgRow(names, values)


class PgConnection:
    """One psycopg connection that runs this module's SQL. Autocommit, like the SQLite connections: a
    transaction is begun explicitly; a write outside one is its own transaction, under PG_WRITE_LOCK."""

    def __init__(self, url: str) -> None:
        # No prepared statements: a replica still on the old code keeps working after a migration adds a
        # column (a cached plan of SELECT * would fail). Keepalives and a TCP timeout: a replica cut off the
        # network is noticed in seconds, not hours (it may hold the write lock or the leadership).
        self.raw = psycopg.connect(url, autocommit=True, row_factory=_pg_rows, connect_timeout=10,
                                   prepare_threshold=None, keepalives=1, keepalives_idle=10,
                                   keepalives_interval=5, keepalives_count=3, tcp_user_timeout=20000,
                                   options="-c idle_in_transaction_session_timeout=60000")

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    @property
    def usable(self) -> bool:
        return not (self.raw.closed or self.raw.broken)

    def execute(self, sql: str, params: Any = ()):
        statement, values = pg_sql(sql, isinstance(params, dict)), _pg_params(params)
        if self.in_transaction or not _WRITE.match(sql):
            return self.raw.execute(statement, values)
        with self.raw.transaction():
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (PG_WRITE_LOCK,))
            return self.raw.execute(statement, values)

    def executemany(self, sql: str, rows: Iterable[Any]):
        rows = list(rows)
        statement = pg_sql(sql, bool(rows) and isinstance(rows[0], dict))
        cursor = self.raw.cursor()
        if self.in_transaction:
            cursor.executemany(statement, [_pg_params(r) for r in rows])
            return cursor
        with self.raw.transaction():
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (PG_WRITE_LOCK,))
            cursor.executemany(statement, [_pg_params(r) for r in rows])
        return cursor

    def columns(self, table: str) -> set[str]:
        return {r[0] for r in self.raw.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s", (table,))}

    # Session advisory locks (app/core/leadership.py): held until unlocked or the connection ends.
    def try_lock(self, key: int) -> bool:
        row = self.raw.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        return bool(row and row[0])

    def unlock(self, key: int) -> None:
        self.raw.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def ping(self) -> None:
        self.raw.execute("SELECT 1")

    def close(self) -> None:
        self.raw.close()


def advisory_key(name: str) -> int:
    """A 64-bit advisory lock key for a name (an instance id, 'leader')."""
    return int.from_bytes(hashlib.sha256(f"ec2-creator-local:{name}".encode()).digest()[:8], "big", signed=True)


class PostgresDatabase(Database):
    """The store on PostgreSQL: the same schema, migrations and methods; one connection per thread."""

    def __init__(self, url: str) -> None:
        super().__init__(Path(redact_url(url)))
        self.url = url

    @property
    def name(self) -> str:
        return redact_url(self.url)

    def connect(self) -> PgConnection:  # type: ignore[override]
        conn = getattr(self._local, "conn", None)
        if conn is None or not conn.usable:  # a server restart breaks it: the next call reconnects
            conn = PgConnection(self.url)
            self._local.conn = conn
        return conn

    @property
    def generation(self) -> int:
        """Another replica's writes count too: every write of a row bumps its revision (rows are never deleted)."""
        return self.connect().execute("SELECT COALESCE(MAX(rev), 0) FROM instances").fetchone()[0]

    @staticmethod
    def _begin_write(conn) -> None:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (PG_WRITE_LOCK,))
        except BaseException:  # a lock_timeout, a cancel: no transaction may stay open on this connection
            if conn.usable:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _begin_read(conn) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")

    @staticmethod
    def _user_version(conn) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return row[0] or 0

    @staticmethod
    def _set_user_version(conn, version: int) -> None:
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    @staticmethod
    def _json_text(column: str, key: str) -> str:
        return f"(({column})::jsonb ->> '{key}')"

    def session(self) -> PgConnection:
        """A connection of its own (advisory locks held for as long as it lives)."""
        return PgConnection(self.url)


def open_database(url: str, path: Path) -> Database:
    """DATABASE_URL's store: PostgreSQL for a postgresql:// URL, else the SQLite file at `path`."""
    return PostgresDatabase(url) if is_postgres_url(url) else Database(path)

