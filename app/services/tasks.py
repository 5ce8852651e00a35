"""The one shape of the app's background loops (sweeps, auto-stop, the account plan)."""

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.services.replicas import Leadership


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
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        raise NotImplementedError
