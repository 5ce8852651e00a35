"""The service's clock: every "now" the service reasons with (budget periods, stop_at, event times).

It is the system clock, unless the test harness starts a server with CLOCK_START (a UTC time): the
clock then starts there and runs at the normal pace, so a test can watch a month end or a schedule
come without waiting for it. Loops still sleep on the monotonic clock: only "what time is it" moves.
"""

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC) + _offset


def start_at(at: datetime | None) -> None:
    """From now on the clock reads `at` and runs from there (None: the system clock again)."""
    global _offset
    _offset = timedelta(0) if at is None else at.astimezone(UTC) - datetime.now(UTC)


def shift(delta: timedelta) -> None:
    """Move the clock by `delta` (unit tests)."""
    global _offset
    _offset += delta
