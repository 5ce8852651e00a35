"""Advisory locks across replicas (PostgreSQL): the key of a name, and what leadership and the per-instance
locks (app/core/leadership.py) need of the store that opens the lock sessions (app/store/, LockSession)."""

import hashlib
from typing import Protocol


def advisory_key(name: str) -> int:
    """A 64-bit advisory lock key for a name (an instance id, 'leader', the write lock)."""
    return int.from_bytes(hashlib.sha256(f"ec2-creator-local:{name}".encode()).digest()[:8], "big", signed=True)


class LockSession(Protocol):
    """A connection of its own: a session advisory lock taken on it is held until unlocked or it closes."""

    @property
    def usable(self) -> bool: ...

    def try_lock(self, key: int) -> bool: ...

    def unlock(self, key: int) -> None: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


class LockSessions(Protocol):
    """Where lock sessions come from (the store). Not shared (SQLite): one process, no session is ever opened.
    `errors`: what a session raises when the database cannot be used."""

    @property
    def is_postgres(self) -> bool: ...

    @property
    def errors(self) -> tuple[type[Exception], ...]: ...

    def session(self) -> LockSession: ...
