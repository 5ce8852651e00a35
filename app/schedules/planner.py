"""The stop plan with schedules (app/instances/plan.py has it without): a running instance on a schedule stops at
the schedule's next stop (back-to-back periods run on through their shared minute), or at its auto-stop when that
comes first. Its auto-stop counts when it was asked for (auto_stop_minutes given on create or PATCH), or when it
both starts and falls outside the schedule's hours (started by hand in the evening: the default auto-stop ends
that run); a default auto-stop that starts or ends inside the schedule's hours gives way to the schedule (a box
started at 06:00 for a 09:00-17:00 schedule runs to 17:00, not to 14:00 and then off all day). An instance whose
schedule does not exist has its auto-stop alone."""

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

    def snoozed(self, row: Mapping[str, Any], stop: datetime, at: datetime) -> datetime:
        found = self.calendars.of(row.get("schedule"))
        if found is None or found[0].desired(at) != "running" or \
                not any(action == "start" for _, action in found[0].edges(stop, at)):
            return at
        return found[0].next_stop(at) or at

    def plan(self, row: Mapping[str, Any], now: datetime, at_start: bool) -> tuple[str | None, str | None]:
        found = self.calendars.of(row.get("schedule"))
        auto = auto_stop_at(row, now, at_start)
        if found is None:
            return (auto.strftime(TIME_FORMAT), AUTO_STOP) if auto else (None, None)
        calendar = found[0]
        if auto is not None and row.get("auto_stop_default") == 1 and "running" in (calendar.desired(now),
                                                                                    calendar.desired(auto)):
            auto = None  # the server's default auto-stop gives way to the schedule inside its hours
        scheduled = calendar.next_stop(now)
        if scheduled is not None and (auto is None or scheduled <= auto):
            return scheduled.strftime(TIME_FORMAT), SCHEDULE
        return (auto.strftime(TIME_FORMAT), AUTO_STOP) if auto else (None, None)
