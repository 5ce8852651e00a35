"""The stop plan with schedules (app/instances/plan.py has it without): a running instance on a schedule stops at
the schedule's next stop, or at its auto-stop when that comes first. Its auto-stop counts when it was asked for
(auto_stop_minutes given on create or PATCH), or when the instance runs outside the schedule's hours (started by
hand in the evening: the default auto-stop still ends that run); a default auto-stop gives way to the schedule
inside its hours. An instance whose schedule does not exist has its auto-stop alone."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.core.clock import TIME_FORMAT
from app.instances.plan import AUTO_STOP, SCHEDULE, auto_stop_at
from app.schedules.calendar import Calendar, build
from app.store import Database


class Calendars:
    """Each stored schedule's calendar, built once per version of it (its updated_at)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._built: dict[str, tuple[str, Calendar, bool]] = {}

    def of(self, name: str | None) -> tuple[Calendar, bool] | None:
        """(calendar, respect_manual_stop) of the schedule called `name`; None when there is none."""
        if not name:
            return None
        stored = self.db.get_schedule(name)
        return self.of_row(stored) if stored is not None else None

    def of_row(self, stored: Mapping[str, Any]) -> tuple[Calendar, bool]:
        cached = self._built.get(stored["name"])
        if cached is None or cached[0] != stored["updated_at"]:
            calendar = build(stored["timezone"], stored["periods"], stored["holidays"], check_overlaps=False)
            cached = (stored["updated_at"], calendar, bool(stored["respect_manual_stop"]))
            self._built[stored["name"]] = cached
        return cached[1], cached[2]


class SchedulePlanner:
    def __init__(self, db: Database, calendars: Calendars | None = None) -> None:
        self.db = db
        self.calendars = calendars or Calendars(db)

    def exists(self, name: str) -> bool:
        return self.db.get_schedule(name) is not None

    def plan(self, row: Mapping[str, Any], now: datetime, at_start: bool) -> tuple[str | None, str | None]:
        found = self.calendars.of(row.get("schedule"))
        auto = auto_stop_at(row, now, at_start)
        if found is None:
            return (auto.strftime(TIME_FORMAT), AUTO_STOP) if auto else (None, None)
        calendar = found[0]
        inside = calendar.desired(now) == "running"
        if inside and row.get("auto_stop_default") == 1:
            auto = None  # the server's default auto-stop gives way to the schedule inside its hours
        edge = calendar.next_edge(now, "stop")
        scheduled = edge[0] if edge else None
        if scheduled is not None and (auto is None or scheduled <= auto):
            return scheduled.strftime(TIME_FORMAT), SCHEDULE
        return (auto.strftime(TIME_FORMAT), AUTO_STOP) if auto else (None, None)
