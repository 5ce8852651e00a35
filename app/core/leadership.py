"""Several API processes on one PostgreSQL database behave as one service.

- Leadership: exactly one replica runs the background loops (sweeps, auto-stop, idle alarms, the outbox
  sender). It is the one holding a session advisory lock (`pg_try_advisory_lock`) on a connection of its
  own; the others try again every few seconds, so when the leader dies (its connection closes and
  PostgreSQL releases the lock) another takes over within one retry. On SQLite this process always leads.
- InstanceLocks: mutations of one instance run one at a time: in this process (an asyncio lock per id) and,
  on PostgreSQL, across replicas (a session advisory lock per id, taken without blocking a thread).
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

from app.core.backoff import backoff
from app.core.errors import Unavailable
from app.core.locks import LockSession, LockSessions, advisory_key
from app.core.loops import cancel_and_wait

log = logging.getLogger("ec2_creator")

LEADER_KEY = advisory_key("leader")
POLL_SECONDS = 0.25  # how often a loop looks whether this replica leads (no I/O: a flag)


class Leadership:
    def __init__(self, db: LockSessions, retry_seconds: float) -> None:
        self.db = db
        self.shared = db.is_postgres
        self.retry_seconds = retry_seconds
        self.is_leader = not self.shared
        self._session: LockSession | None = None
        self._held = False
        self._task: asyncio.Task | None = None
        self._guard = threading.Lock()  # a check still running in its thread and stop() never overlap
        self._stopped = False

    def start(self) -> None:
        if self.shared:
            self._task = asyncio.create_task(self._loop(), name="leadership")

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait(self._task)
        self.is_leader = not self.shared
        await asyncio.to_thread(self._close)  # releases the lock at once: another takes over

    def _close(self) -> None:
        with self._guard:
            self._stopped, self._held = True, False
            if self._session is not None:
                self._session.close()
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
        with self._guard:
            return False if self._stopped else self._check_locked()

    def _check_locked(self) -> bool:
        try:
            if self._session is None or not self._session.usable:
                self._held = False
                self._session = self.db.session()
            if self._held:
                self._session.ping()  # the lock lives as long as this connection
            else:
                self._held = self._session.try_lock(LEADER_KEY)
            return self._held
        except self.db.errors as exc:
            log.warning("leadership: the database cannot be reached (%s); not leading until it can", exc)
            self._held = False
            if self._session is not None:
                self._session.close()
                self._session = None
            return False

    async def while_leading(self, run) -> None:
        """Run the coroutine function `run` whenever this replica leads; cancel it when it stops leading. A
        loop that died with an error is logged and started again, after a pause that doubles up to a minute."""
        deaths = 0
        while True:
            while not self.is_leader:
                await asyncio.sleep(POLL_SECONDS)
            task = asyncio.create_task(run())
            try:
                while self.is_leader and not task.done():
                    await asyncio.sleep(POLL_SECONDS)
            finally:
                await cancel_and_wait(task)
            if task.done() and not task.cancelled():
                deaths += 1
                await asyncio.sleep(backoff(deaths, 1.0, 60.0))


class InstanceLocks:
    def __init__(self, db: LockSessions, wait_seconds: float = 120.0) -> None:
        self.db = db
        self.shared = db.is_postgres
        self.wait_seconds = wait_seconds  # then 503 instance_busy (another replica's call takes this long)
        self._local: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._session: LockSession | None = None
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
        """All of `keys` or none, retried with backoff: a wait never blocks a thread or the event loop. A
        caller cancelled while an attempt runs in its thread releases what that attempt took."""
        deadline = time.monotonic() + self.wait_seconds
        attempts = 0
        while True:
            attempt = asyncio.ensure_future(asyncio.to_thread(self._try_all, keys))
            try:
                if await asyncio.shield(attempt):
                    return
            except asyncio.CancelledError:
                with contextlib.suppress(BaseException):  # cancelled either way: what it took goes back
                    if await attempt:
                        await asyncio.to_thread(self._release, keys)
                raise
            if time.monotonic() > deadline:
                raise Unavailable(f"Another replica has been changing this instance for {self.wait_seconds:g} s; "
                                  "nothing was sent to AWS. Retry shortly.", code="instance_busy", retry_after=5)
            attempts += 1
            await asyncio.sleep(backoff(attempts, 0.02, 0.5))

    def _try_all(self, keys: list[int]) -> bool:
        with self._session_lock:
            if self._session is None or not self._session.usable:
                self._session = self.db.session()
            taken: list[int] = []
            try:
                for key in keys:
                    if not self._session.try_lock(key):
                        break
                    taken.append(key)
                else:
                    return True
            except BaseException:
                self._unlock(taken)
                raise
            self._unlock(taken)
            return False

    def _unlock(self, keys: list[int]) -> None:
        """Best effort (the session lock held): a broken connection released everything already."""
        for key in keys:
            try:
                if self._session is not None and self._session.usable:
                    self._session.unlock(key)
            except self.db.errors:
                return

    def _release(self, keys: list[int]) -> None:
        with self._session_lock:
            self._unlock(keys)
