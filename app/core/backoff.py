"""One doubling backoff for every retry the service makes: notifications, idle alarms, cross-replica locks."""


def backoff(attempts: int, first: float, cap: float) -> float:
    """The wait before retry number `attempts` (1: the first retry): `first`, doubled for each attempt after
    it, never more than `cap`, and no overflow however many attempts have failed."""
    return min(cap, first * 2 ** min(max(0, attempts - 1), 64))
