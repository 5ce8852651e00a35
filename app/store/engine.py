"""The store's engine: one SQLAlchemy engine (a pool of connections) built from DATABASE_URL, and the
PostgreSQL sessions that hold advisory locks (leadership, per-instance locks) outside that pool.

- SQLite (a file path or sqlite:///path): WAL, a 10 s busy timeout; the pysqlite driver's own transaction
  handling is switched off and SQLAlchemy's `begin` event emits BEGIN itself (SQLAlchemy's documented
  recipe), so a write transaction begins IMMEDIATE (the one writer at a time, from its first statement)
  and DDL is transactional (a migration is all or nothing).
- PostgreSQL (postgresql://...): psycopg 3, no server-side prepared statements (a replica still on the old
  code keeps working after a migration adds a column), TCP keepalives (a replica cut off the network is
  noticed in seconds: it may hold the write lock or the leadership). A write transaction takes one
  transaction-scoped advisory lock first (WRITE_LOCK): writers run one at a time, as on SQLite, across
  every replica.
"""

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from app.config import redact_url as redact_url  # the one redaction of a database URL (re-exported)
from app.core.locks import advisory_key as advisory_key  # the key of a lock name (re-exported)

# What a broken or busy store raises, on either engine (SQLAlchemy wraps the drivers' errors; a driver's own
# error can still reach a caller that used the driver directly).
STORE_ERRORS: tuple[type[Exception], ...] = (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, psycopg.Error)

# Every write transaction on PostgreSQL takes this transaction-scoped advisory lock first.
WRITE_LOCK = 0x45433243_00000001
# Execution options SQLite's begin listener reads: a write transaction (BEGIN IMMEDIATE); one statement
# read on its own (no BEGIN at all: the statement is its own transaction).
WRITE_OPTION = "ec2cl_write"
SINGLE_READ_OPTION = "ec2cl_single_read"

_PG_OPTIONS: dict[str, Any] = {
    "connect_timeout": 10, "prepare_threshold": None, "keepalives": 1, "keepalives_idle": 10,
    "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 20000,
    "options": "-c idle_in_transaction_session_timeout=60000",
}


def is_postgres_url(url: str) -> bool:
    return str(url).startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str | Path) -> Path:
    """The file of a SQLite DATABASE_URL (a path, or sqlite:///path)."""
    text = str(url)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]
    return Path(text).expanduser()


def make_private(path: Path) -> None:
    """The database (and a directory made for it) is readable by its owner only: it names every instance. A
    file of ours from before this rule is made private too."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite gives -wal/-shm the same mode
    for each in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            info = each.stat()
            if info.st_uid == os.getuid() and info.st_mode & 0o077:
                each.chmod(0o600)
        except OSError:
            pass  # absent, or not ours to change


def use_wal(conn: sqlite3.Connection, timeout: float = 10.0) -> None:
    """Put the file in WAL mode (it stays so: later connections find it there and change nothing). Switching
    needs the file to itself, and SQLite answers "database is locked" at once, busy timeout or not, while
    another connection holds a lock (two stores opening a new file together, one already migrating it): retry
    for up to `timeout` seconds, as the busy timeout would."""
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _pg_connect(url: str):
    return lambda: psycopg.connect(url, **_PG_OPTIONS)


def create_store_engine(url: str | Path, pool_size: int = 5, max_overflow: int = 5,
                        pool_timeout: float = 30) -> Engine:
    """The pooled engine of DATABASE_URL: at most pool_size + max_overflow connections at once; a caller that
    finds none free waits up to pool_timeout seconds."""
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout}
    if is_postgres_url(str(url)):
        # A connection the server (or the network) dropped is noticed before use and replaced.
        pool["pool_pre_ping"] = True
        # The URL is libpq's (hosts lists, sslmode...): psycopg reads it as it is, SQLAlchemy only pools.
        return sa.create_engine("postgresql+psycopg://", creator=_pg_connect(str(url)), hide_parameters=True, **pool)
    path = sqlite_path(url)

    def connect() -> sqlite3.Connection:
        make_private(path)
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        use_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    # No pre-ping: a file has no server to drop a connection.
    engine = sa.create_engine(f"sqlite:///{path}", creator=connect, poolclass=sa.pool.QueuePool,
                              hide_parameters=True, **pool)

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # pysqlite begins nothing itself: the begin event does

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif not options.get(SINGLE_READ_OPTION):
            conn.exec_driver_sql("BEGIN")

    return engine


class LockSession:
    """A PostgreSQL connection of its own, outside the pool, in autocommit: session advisory locks taken on
    it are held until unlocked or the connection ends (app/core/leadership.py)."""

    def __init__(self, engine: Engine) -> None:
        self.conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    @property
    def usable(self) -> bool:
        return not (self.conn.closed or self.conn.invalidated)

    def try_lock(self, key: int) -> bool:
        return bool(self.conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())

    def unlock(self, key: int) -> None:
        self.conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    def ping(self) -> None:
        self.conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.conn.close()


def session_engine(url: str) -> Engine:
    """Connections for LockSession: one each, never pooled (closing it releases its locks)."""
    return sa.create_engine("postgresql+psycopg://", creator=_pg_connect(url), poolclass=NullPool,
                            hide_parameters=True)


def store_error_reason(exc: BaseException) -> str:
    """What a store error says, fit for a log line or an answer: the driver's own message (SQLAlchemy's text
    adds the statement; its parameters are hidden anyway), or what the pool ran out of."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        return str(exc.orig).strip()
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return "every connection of the pool is busy (DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW)"
    return str(exc).split("\n", 1)[0]
