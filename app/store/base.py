"""How the store's queries get a connection: reads from the pool; writes in a transaction that says it is
one (`store.write()`); a read or write inside a transaction uses that transaction's connection.

The transaction of the running code is in a context variable (one per store): a method called inside
`with store.write():` (in the same thread, or anything that copies its context) joins it, so it sees what the
transaction wrote and never waits on a second connection for a lock its own transaction holds.
"""

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.store.engine import (
    SINGLE_READ_OPTION,
    STORE_ERRORS,
    WRITE_LOCK,
    WRITE_OPTION,
    LockSession,
    create_store_engine,
    is_postgres_url,
    redact_url,
    session_engine,
    sqlite_path,
)


class StoreBase:
    def __init__(self, url: str | Path, pool_size: int = 5, max_overflow: int = 5, pool_timeout: float = 30) -> None:
        self.url = str(url)
        self.is_postgres = is_postgres_url(self.url)
        self.errors = STORE_ERRORS  # what a session or a statement raises when the database cannot be used
        self.path = None if self.is_postgres else sqlite_path(url)
        self.engine = create_store_engine(url, pool_size, max_overflow, pool_timeout)
        self._sessions = session_engine(self.url) if self.is_postgres else None
        self._current: ContextVar[Connection | None] = ContextVar(f"store-{id(self)}", default=None)
        # SQLite: bumped after every committed write to `instances` (one process writes the file's rows that
        # this process shows); the rendered list is cached per value.
        self._generations = itertools.count(1)
        self._generation = 0
        self._list_cache: dict[tuple[bool, str | None], tuple[int, bytes]] = {}

    @property
    def name(self) -> str:
        """What a log line may say of the database (the password hidden)."""
        return redact_url(self.url) if self.is_postgres else str(self.path)

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown; a later call opens new ones)."""
        self.engine.dispose()
        if self._sessions is not None:
            self._sessions.dispose()

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def write(self, instances: bool = True, wait_seconds: float | None = None) -> Iterator[Connection]:
        """One write transaction: SQLite BEGIN IMMEDIATE, PostgreSQL the write lock first. Inside one already:
        that one. instances=False: the block writes no instance row (the rendered list stays cached).
        wait_seconds (SQLite): how long to wait for another writer, instead of the connection's 10 s."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            if wait_seconds is not None and not self.is_postgres:  # on the driver: no transaction begins
                dbapi: Any = conn.connection.dbapi_connection
                dbapi.execute(f"PRAGMA busy_timeout = {int(wait_seconds * 1000)}")
            conn.execution_options(**{WRITE_OPTION: True})
            token = self._current.set(conn)
            try:
                with conn.begin():
                    if self.is_postgres:
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})
                    yield conn
            finally:
                self._current.reset(token)
                if wait_seconds is not None and not self.is_postgres and not conn.invalidated:
                    conn.connection.dbapi_connection.execute("PRAGMA busy_timeout = 10000")  # type: ignore[union-attr]
                if instances:
                    self._written()  # writes inside bumped the generation before they were visible: bump again

    # The name callers have used since the first version.
    transaction = write

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One consistent snapshot for several SELECTs; inside a transaction already, that transaction."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            if self.is_postgres:
                conn.execution_options(isolation_level="REPEATABLE READ")
            token = self._current.set(conn)
            try:
                with conn.begin():
                    yield conn
            finally:
                self._current.reset(token)

    @contextmanager
    def savepoint(self) -> Iterator[Connection]:
        """Inside a transaction: a failure in the block undoes the block alone, then propagates."""
        conn = self._current.get()
        if conn is None:
            raise RuntimeError("a savepoint needs a transaction (store.write())")
        with conn.begin_nested():
            yield conn

    @property
    def in_transaction(self) -> bool:
        """Whether the running code's transaction is still open in the database (SQLite gives up a whole
        transaction on some errors: disk full, I/O error)."""
        conn = self._current.get()
        if conn is None or conn.closed or conn.invalidated:
            return False
        dbapi: Any = conn.connection.dbapi_connection
        if self.is_postgres:
            return dbapi.info.transaction_status != dbapi.info.transaction_status.IDLE
        return bool(dbapi.in_transaction)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection to read with: the running transaction's, else one from the pool for this call, its
        statement a transaction of its own (no BEGIN and ROLLBACK around one SELECT)."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            if self.is_postgres:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                conn.execution_options(**{SINGLE_READ_OPTION: True})
            yield conn

    @contextmanager
    def _writing(self, instances: bool = False) -> Iterator[Connection]:
        """A connection to write with: the running transaction's, else a write transaction of its own."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.write(instances=instances) as conn:
            yield conn

    def _all(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._reading() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params or {}).mappings()]

    def _one(self, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        with self._reading() as conn:
            row = conn.execute(sa.text(sql), params or {}).mappings().first()
            return dict(row) if row is not None else None

    def _scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        with self._reading() as conn:
            return conn.execute(sa.text(sql), params or {}).scalar()

    def _run(self, sql: str, params: dict[str, Any] | list[dict[str, Any]] | None = None,
             instances: bool = False) -> int:
        """One write statement (several parameter sets: executemany); the rows it changed."""
        with self._writing(instances) as conn:
            return conn.execute(sa.text(sql), params or {}).rowcount

    # -- the rendered list's key ------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Changes whenever a write to `instances` commits: what cached views of the table are keyed by. On
        PostgreSQL another replica's writes count too: every write of a row bumps its revision."""
        if self.is_postgres:
            return int(self._scalar("SELECT COALESCE(MAX(rev), 0) FROM instances"))
        return self._generation

    def _written(self) -> None:
        self._generation = next(self._generations)  # atomic: concurrent writers never share a value

    # -- sessions for advisory locks (PostgreSQL) -------------------------------------------------------
    def session(self) -> LockSession:
        """A connection of its own (advisory locks held for as long as it lives), outside the pool."""
        if self._sessions is None:
            raise RuntimeError("advisory lock sessions exist on PostgreSQL only")
        return LockSession(self._sessions)
