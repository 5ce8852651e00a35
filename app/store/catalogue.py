"""Queries of the AMI catalogue and the free-tier instance types, cached per EC2 (scope: endpoint and region)."""

from collections.abc import Iterable

import sqlalchemy as sa

from app.core.clock import utcnow
from app.store.base import StoreBase
from app.store.kv import KV_UPSERT, KvQueries


class CatalogueQueries(KvQueries, StoreBase):
    def save_catalog(self, scope: str, amis: Iterable[dict], types: Iterable[dict]) -> None:
        """The AMI catalogue and free-tier types of one EC2."""
        now = utcnow()
        amis, types = list(amis), list(types)
        with self.write() as conn:
            conn.execute(sa.text("DELETE FROM ami_catalog WHERE scope = :scope"), {"scope": scope})
            conn.execute(sa.text("DELETE FROM instance_types WHERE scope = :scope"), {"scope": scope})
            if amis:
                conn.execute(sa.text(
                    "INSERT INTO ami_catalog (scope, ami_id, architecture, root_device_name, login_user, alias, "
                    "image_name, resolved_at) VALUES (:scope, :ami_id, :architecture, :root_device_name, "
                    ":login_user, :alias, :image_name, :resolved_at)"),
                    [{"alias": None, "image_name": None, **a, "scope": scope, "resolved_at": now} for a in amis])
            if types:
                conn.execute(sa.text(
                    "INSERT INTO instance_types (scope, name, architecture, fetched_at) VALUES (:scope, :name, "
                    ":architecture, :fetched_at)"), [{**t, "scope": scope, "fetched_at": now} for t in types])
            conn.execute(sa.text(KV_UPSERT), {"key": f"catalog_resolved_at:{scope}", "value": now})

    def load_catalog(self, scope: str) -> tuple[list[dict], list[dict], str | None]:
        with self.read():  # one snapshot, one connection: the reads below join it
            amis = self._all("SELECT ami_id, architecture, root_device_name, login_user, alias, image_name "
                             "FROM ami_catalog WHERE scope = :scope", {"scope": scope})
            types = self._all("SELECT name, architecture FROM instance_types WHERE scope = :scope", {"scope": scope})
        return amis, types, self.kv_get(f"catalog_resolved_at:{scope}")
