"""Several API processes on one PostgreSQL database behave as one service.

- Leadership: exactly one replica runs the background loops (sweeps, auto-stop, idle alarms, the outbox
  sender). It is the one holding a session advisory lock (`pg_try_advisory_lock`) on a connection of its
  own; the others try again every few seconds, so when the leader dies (its connection closes and
  PostgreSQL releases the lock) another takes over within one retry. On SQLite this process always leads.
- InstanceLocks: mutations of one instance run one at a time: in this process (an asyncio lock per id) and,
  on PostgreSQL, across replicas (a session advisory lock per id, taken without blocking a thread).
"""

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import psycopg

from app.services.db import Database, PgConnection, PostgresDatabase, advisory_key
from app.services.tasks import cancel_and_wait

log = logging.getLogger("ec2_creator")

LEADER_KEY = advisory_key("leader")
POLL_SECONDS = 0.25  # how often a loop looks whether this replica leads (no I/O: a flag)


class Leadership:
    def __init__(self, db: Database, retry_seconds: float) -> None:
        self.db = db
        self.shared = isinstance(db, PostgresDatabase)
        self.retry_seconds = retry_seconds
        self.is_leader = not self.shared
        self._session: PgConnection | None = None
        self._held = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.shared:
            self._task = asyncio.create_task(self._loop(), name="leadership")

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait(self._task)
        self.is_leader = not self.shared
        if self._session is not None:
            await asyncio.to_thread(self._session.close)  # releases the lock at once: another takes over
            self._session = None

    async def _loop(self) -> None:
        while True:
            leader = await asyncio.to_thread(self._check)
            if leader != self.is_leader:
                log.info("this replica %s the leader: it %s the sweeps, auto-stop, idle alarms and notifications",
                         "is now" if leader else "is no longer", "runs" if leader else "leaves to the leader")
            self.is_leader = leader
            await asyncio.sleep(self.retry_seconds)

    def _check(self) -> bool:
        """Keep or take the lock (in a thread); False when the database cannot be reached."""
        try:
            if self._session is None or not self._session.usable:
                self._held = False
                self._session = self.db.session()  # type: ignore[attr-defined]
            if self._held:
                self._session.ping()  # the lock lives as long as this connection
            else:
                self._held = self._session.try_lock(LEADER_KEY)
            return self._held
        except psycopg.Error as exc:
            log.warning("leadership: the database cannot be reached (%s); not leading until it can", exc)
            self._held = False
            if self._session is not None:
                self._session.close()
                self._session = None
            return False

    async def while_leading(self, run) -> None:
        """Run the coroutine function `run` whenever this replica leads; cancel it when it stops leading."""
        while True:
            while not self.is_leader:
                await asyncio.sleep(POLL_SECONDS)
            task = asyncio.create_task(run())
            try:
                while self.is_leader and not task.done():
                    await asyncio.sleep(POLL_SECONDS)
            finally:
                await cancel_and_wait(task)  # a loop that died with an error is logged, and started again


class InstanceLocks:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.shared = isinstance(db, PostgresDatabase)
        self._local: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._session: PgConnection | None = None
        self._session_lock = threading.Lock()  # one statement at a time on the session

    @asynccontextmanager
    async def hold(self, ids: Iterable[str]) -> AsyncIterator[None]:
        """Hold every id's lock (taken in one order, so two holders of several never deadlock)."""
        ordered = sorted(set(ids))
        async with AsyncExitStack() as stack:
            for instance_id in ordered:
                await stack.enter_async_context(self._local[instance_id])
            if self.shared:
                keys = [advisory_key(f"instance:{i}") for i in ordered]
                await self._acquire(keys)
                stack.push_async_callback(asyncio.to_thread, self._release, keys)
            yield

    async def _acquire(self, keys: list[int]) -> None:
        """All of `keys` or none, retried with backoff: a wait never blocks a thread or the event loop."""
        delay = 0.02
        while not await asyncio.to_thread(self._try_all, keys):
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 2)

    def _try_all(self, keys: list[int]) -> bool:
        with self._session_lock:
            if self._session is None or not self._session.usable:
                self._session = self.db.session()  # type: ignore[attr-defined]
            taken: list[int] = []
            for key in keys:
                if not self._session.try_lock(key):
                    for held in taken:
                        self._session.unlock(held)
                    return False
                taken.append(key)
            return True

    def _release(self, keys: list[int]) -> None:
        with self._session_lock:
            if self._session is None or not self._session.usable:
                return  # the connection ended: PostgreSQL released its locks
            for key in keys:
                self._session.unlock(key)
