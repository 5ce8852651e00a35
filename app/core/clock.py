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


# -- stored times: how the store writes and reads timestamps (text, comparable as text) ---------------------
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> str:
    """Now, as the store writes it."""
    return now().strftime(TIME_FORMAT)


def ago(seconds: float) -> str:
    """The timestamp `seconds` before now, comparable as text with utcnow() values."""
    return (now() - timedelta(seconds=seconds)).strftime(TIME_FORMAT)


def parse_time(value: str | None) -> datetime | None:
    """A stored timestamp (ours, EC2's, or the original project's 'YYYY-MM-DD HH:MM:SS') as UTC."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def stored_time(value: str | None) -> str | None:
    """An EC2 timestamp in our format: CLI v1 prints `...09.000Z`, v2 `...09+00:00`; None when unreadable."""
    at = parse_time(value)
    return at.strftime(TIME_FORMAT) if at else None


def age_seconds(value: str | None) -> float:
    """Seconds since a stored timestamp; infinite when there is none (an unknown age is an old one)."""
    at = parse_time(value)
    return float("inf") if at is None else (now() - at).total_seconds()


def period_bounds(at: datetime) -> tuple[datetime, datetime]:
    """The budget period: the calendar month (UTC) holding `at` (the store keeps events back to the start of
    the previous one: the spend ledger replays them)."""
    start = at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end
