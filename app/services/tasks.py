"""The one shape of the app's background loops (sweeps, auto-stop, the account plan)."""

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.services.replicas import Leadership

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
    `leadership` set (app/services/replicas.py), the loop runs only while this replica leads."""

    name = "loop"
    _task: asyncio.Task | None = None
    leadership: "Leadership | None" = None

    def start(self) -> None:
        loop = self._loop() if self.leadership is None else self.leadership.while_leading(self._loop)
        self._task = asyncio.create_task(loop, name=self.name)

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        raise NotImplementedError
