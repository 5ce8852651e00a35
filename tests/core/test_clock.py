"""The service's clock: the system clock unless a test moves it."""

from datetime import UTC, datetime, timedelta

from app.core import clock
from app.core.clock import utcnow


def test_the_clock_is_the_system_clock_by_default():
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1


def test_start_at_moves_every_now_and_the_clock_keeps_running():
    try:
        clock.start_at(datetime(2026, 12, 31, 23, 59, 50, tzinfo=UTC))
        first = clock.now()
        assert datetime(2026, 12, 31, 23, 59, 49, tzinfo=UTC) < first < datetime(2026, 12, 31, 23, 59, 52, tzinfo=UTC)
        assert utcnow().startswith("2026-12-31T23:59:5")  # stored times follow it
        clock.shift(timedelta(seconds=20))
        assert clock.now().year == 2027 and clock.now() > first
    finally:
        clock.start_at(None)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1
