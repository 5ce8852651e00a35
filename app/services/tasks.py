"""The one shape of the app's background loops (sweeps, auto-stop, the account plan)."""

import asyncio


class LoopTask:
    """start() runs `_loop()` as a task of the app's lifespan; stop() cancels it and waits for it."""

    name = "loop"
    _task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        raise NotImplementedError
