"""Stopping background loops: a cancellation Python 3.11's wait_for swallows does not keep shutdown waiting."""

import asyncio
import time

from app.core.loops import LoopTask, WakeableLoop, cancel_and_wait


class Sweeper(LoopTask):
    """The reconciler's shape: wait for a wake-up (or the interval), then do a round of work."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.rounds = 0

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), 3600)
            except TimeoutError:
                pass
            self.wake.clear()
            self.rounds += 1
            await asyncio.sleep(0.01)


def test_a_loop_woken_as_it_is_cancelled_still_stops_at_once():
    async def scenario() -> tuple[float, int, bool]:
        loop = Sweeper()
        loop.start()
        await asyncio.sleep(0.05)
        loop.wake.set()  # a request asks for a sweep ...
        await asyncio.sleep(0)  # ... and its wait ends just as shutdown cancels the loop
        t0 = time.monotonic()
        await asyncio.wait_for(loop.stop(), 10)
        return time.monotonic() - t0, loop.rounds, loop._task.done()

    took, rounds, done = asyncio.run(scenario())
    assert done and took < 2
    assert rounds == 1  # the swallowed cancellation let it start one more round: that round was cut short


def test_a_caller_cancelled_while_waiting_still_ends_the_task_first():
    async def scenario() -> bool:
        started = asyncio.Event()

        async def stubborn() -> None:
            started.set()
            for _ in range(3):  # swallows two cancellations, then gives in
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue
            await asyncio.sleep(3600)

        task = asyncio.create_task(stubborn())
        await started.wait()
        stopper = asyncio.create_task(cancel_and_wait(task))
        await asyncio.sleep(0.1)
        stopper.cancel()
        try:
            await stopper
        except asyncio.CancelledError:
            pass
        return task.done()

    assert asyncio.run(scenario())


class Counting(WakeableLoop):
    """Rounds counted; the first one fails."""

    name = "counting"
    failure_delay = 3600.0

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0

    async def round(self) -> None:
        self.rounds += 1
        if self.rounds == 1:
            raise RuntimeError("a bad round")

    async def next_delay(self) -> float:
        return 3600.0


def test_a_wakeable_loop_outlives_a_failed_round_and_runs_again_when_woken(caplog):
    async def scenario() -> int:
        loop = Counting()
        loop.start()
        await asyncio.sleep(0.05)  # the first round failed: paused for failure_delay...
        loop.wake()  # ...unless woken
        await asyncio.sleep(0.05)
        loop.wake()
        await asyncio.sleep(0.05)
        await loop.stop()
        return loop.rounds

    assert asyncio.run(scenario()) == 3
    assert "counting: round failed" in caplog.text and "a bad round" in caplog.text
