"""Queries of the schedules table (office hours by name, app/schedules/) and of the instances attached to one."""

import json
from typing import Any

from app.core.clock import utcnow
from app.store.base import StoreBase
from app.store.instances import ACTIVE, instance_row
from app.store.rows import InstanceRow

COLUMNS = "name, timezone, periods, holidays, respect_manual_stop, created_at, updated_at"


def schedule_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored schedule as the API shows it: periods and holidays decoded, respect_manual_stop a bool."""
    return {**row, "periods": json.loads(row["periods"]), "holidays": json.loads(row["holidays"]),
            "respect_manual_stop": bool(row["respect_manual_stop"])}


class ScheduleQueries(StoreBase):
    def list_schedules(self) -> list[dict[str, Any]]:
        return [schedule_row(r) for r in self._all(f"SELECT {COLUMNS} FROM schedules ORDER BY name")]

    def get_schedule(self, name: str) -> dict[str, Any] | None:
        row = self._one(f"SELECT {COLUMNS} FROM schedules WHERE name = :name", {"name": name})
        return schedule_row(row) if row is not None else None

    def put_schedule(self, name: str, timezone: str, periods: list[dict], holidays: list[str],
                     respect_manual_stop: bool, create: bool) -> bool:
        """Write a schedule: a new one (create; False when the name is taken) or a change of an existing one
        (False when there is none)."""
        now = utcnow()
        values = {"name": name, "timezone": timezone, "periods": json.dumps(periods), "holidays": json.dumps(holidays),
                  "respect": int(respect_manual_stop), "now": now}
        if create:
            return self._run("INSERT INTO schedules (name, timezone, periods, holidays, respect_manual_stop, "
                             "created_at, updated_at) VALUES (:name, :timezone, :periods, :holidays, :respect, :now, "
                             ":now) ON CONFLICT (name) DO NOTHING", values) == 1
        return self._run("UPDATE schedules SET timezone = :timezone, periods = :periods, holidays = :holidays, "
                         "respect_manual_stop = :respect, updated_at = :now WHERE name = :name", values) == 1

    def delete_schedule(self, name: str) -> bool:
        return self._run("DELETE FROM schedules WHERE name = :name", {"name": name}) == 1

    def scheduled_instances(self, name: str | None = None) -> list[InstanceRow]:
        """Instances not terminated with a schedule attached (with `name`: that one), oldest first."""
        which = "schedule IS NOT NULL" if name is None else "schedule = :name"
        return [instance_row(r) for r in self._all(
            f"SELECT * FROM instances WHERE {ACTIVE} AND {which} ORDER BY created_at, id", {"name": name})]
