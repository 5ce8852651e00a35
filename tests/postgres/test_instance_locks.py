"""Per-instance locks across replicas (app/core/leadership.py), on a real PostgreSQL database."""

import asyncio

import pytest

from app.core.errors import Unavailable
from app.core.leadership import InstanceLocks
from app.store import Database, advisory_key

DB_ENGINE = "postgres"
KEY = advisory_key("instance:i-0123456789abcdef0")


def test_a_cancelled_waiter_leaks_no_lock_and_a_long_wait_is_a_503(new_db):
    other = Database(new_db.url).session()  # another replica, changing the instance
    assert other.try_lock(KEY)

    async def scenario() -> None:
        locks = InstanceLocks(new_db, wait_seconds=0.5)
        waiter = asyncio.create_task(locks.hold(["i-0123456789abcdef0"]).__aenter__())
        await asyncio.sleep(0.2)
        waiter.cancel()  # e.g. shutdown while it waits
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(Unavailable) as busy:
            async with locks.hold(["i-0123456789abcdef0"]):
                pass
        assert busy.value.code == "instance_busy"
        other.unlock(KEY)  # the other replica is done
        async with locks.hold(["i-0123456789abcdef0"]):
            assert not other.try_lock(KEY)  # held by this replica now
        assert other.try_lock(KEY)  # and released after: nothing leaked by the cancelled waiter

    asyncio.run(scenario())
    other.close()
