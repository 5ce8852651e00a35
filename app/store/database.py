"""The store's facade: one object with every query, grouped by what they serve (app/store/instances.py,
launches.py, events.py, outbox.py, catalogue.py, reservations.py, schedules.py, kv.py); its transactions in base.py.

Methods are synchronous and short; async code calls them through `asyncio.to_thread`, so the event loop
never waits on the database.
"""

from pathlib import Path

from app.store.base import StoreBase
from app.store.catalogue import CatalogueQueries
from app.store.events import EventQueries
from app.store.instances import InstanceQueries
from app.store.kv import KvQueries
from app.store.launches import LaunchQueries
from app.store.outbox import OutboxQueries
from app.store.reservations import ReservationQueries
from app.store.schedules import ScheduleQueries
from app.store.schema import upgrade


class Database(InstanceQueries, LaunchQueries, EventQueries, OutboxQueries, CatalogueQueries, ReservationQueries,
               ScheduleQueries, KvQueries, StoreBase):
    def migrate(self) -> None:
        """Create or upgrade the schema to the head revision, keeping every existing row (app/store/schema.py)."""
        with self.write(wait_seconds=300) as conn:  # another replica migrating: wait for it, then find the head
            upgrade(conn, self.name)


def open_database(url: str, path: Path | None = None, pool_size: int = 5, max_overflow: int = 5) -> Database:
    """DATABASE_URL's store: PostgreSQL for a postgresql:// URL, else the SQLite file (at `path`, when given:
    the settings' resolved path)."""
    from app.store.engine import is_postgres_url

    target: str | Path = url if is_postgres_url(url) or path is None else path
    return Database(target, pool_size=pool_size, max_overflow=max_overflow)
