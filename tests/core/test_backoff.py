"""The one backoff every retry uses (notifications, idle alarms, cross-replica locks)."""

from app.core.backoff import backoff


def test_backoff_doubles_from_the_first_wait_up_to_the_cap():
    assert [backoff(n, 5, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]  # notifications
    assert [backoff(n, 0.02, 0.5) for n in range(1, 7)] == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5]  # replica locks


def test_backoff_never_overflows_and_never_goes_below_the_first_wait():
    assert backoff(5000, 300, 3600) == 3600
    assert backoff(10**9, 0.02, 0.5) == 0.5
    assert backoff(0, 5, 60) == backoff(-3, 5, 60) == 5
