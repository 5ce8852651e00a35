"""The one shape of the app's background loops (sweeps, auto-stop, the account plan)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol


class Leader(Protocol):
    """What a loop needs of the replicas' leadership (app/core/leadership.py): to run only while leading."""

    def while_leading(self, run: Callable[[], Awaitable[None]]) -> Coroutine[Any, Any, None]: ...


log = logging.getLogger("ec2_creator")


async def cancel_and_wait(task: asyncio.Task) -> None:
    """Cancel `task` and wait until it has ended. Python 3.11's asyncio.wait_for can swallow a cancellation
    that arrives just as what it waits for completes (gh-86296): the loop then carries on, and a bare
    `await task` would wait for its next round (an hour, at a long interval). So cancel again until it ends."""
    interrupted = False
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=0.5)
        except asyncio.CancelledError:  # our caller is being cancelled too: end the task first, then go
            interrupted = True
    if not task.cancelled() and task.exception() is not None:
        log.error("%s ended with an error", task.get_name(), exc_info=task.exception())
    if interrupted:
        raise asyncio.CancelledError


class LoopTask:
    """start() runs `_loop()` as a task of the app's lifespan; stop() cancels it and waits for it. With
    `leadership` set (app/core/leadership.py), the loop runs only while this replica leads."""

    name = "loop"
    _task: asyncio.Task | None = None
    leadership: Leader | None = None

    def start(self) -> None:
        loop = self._loop() if self.leadership is None else self.leadership.while_leading(self._loop)
        self._task = asyncio.create_task(loop, name=self.name)

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        raise NotImplementedError


class WakeableLoop(LoopTask):
    """A LoopTask that runs a round, then sleeps until `next_delay()` says or until `wake()` is called. A round
    that fails is logged, and the loop pauses `failure_delay` seconds (no busy loop on a broken database)."""

    failure_delay = 60.0

    def __init__(self) -> None:
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something this loop watches changed: look again now."""
        self._wake.set()

    async def round(self) -> None:
        raise NotImplementedError

    async def next_delay(self) -> float:
        return self.failure_delay

    def failed(self, exc: Exception) -> None:
        log.exception("%s: round failed", self.name, exc_info=exc)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            delay = None
            try:
                await self.round()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one bad round
                self.failed(exc)
                delay = self.failure_delay
            try:
                await asyncio.wait_for(self._wake.wait(), delay or await self.next_delay())
            except TimeoutError:
                pass
