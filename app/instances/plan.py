"""When a running instance stops: the plan the recorder arms at every start, and the API re-arms when the auto-stop
or the schedule changes. Without schedules (the default planner here) it is the auto-stop: auto_stop_minutes after
the start. app/schedules/planner.py adds the attached schedule's next stop (set on the service by the wiring: the
instances domain does not import the schedules one, which builds on it)."""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from app.core.clock import TIME_FORMAT, parse_time

AUTO_STOP, SCHEDULE = "auto_stop", "schedule"


class StopPlanner(Protocol):
    def plan(self, row: Mapping[str, Any], now: datetime, at_start: bool) -> tuple[str | None, str | None]:
        """(stop_at, stop_source) for `row` running from `now` on; at_start: it starts now (else the auto-stop
        it runs under is kept)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a schedule of that name exists."""
        ...

    def snoozed(self, row: Mapping[str, Any], stop: datetime, at: datetime) -> datetime:
        """Where its stop, snoozed from `stop` to `at`, lands: there, unless the snooze reached into a later period
        of its schedule (one starts in between and still runs at `at`): that period's stop."""
        ...


def auto_stop_at(row: Mapping[str, Any], now: datetime, at_start: bool) -> datetime | None:
    """The auto-stop of a run: auto_stop_minutes from its start (at_start), else the one it runs under (its
    stop_at while that is the auto-stop's, or auto_stop_minutes from now)."""
    if not at_start and row.get("stop_at") and (row.get("stop_source") or AUTO_STOP) == AUTO_STOP:
        return parse_time(row["stop_at"])
    minutes = row.get("auto_stop_minutes")
    return now + timedelta(minutes=minutes) if minutes else None


class AutoStopOnly:
    """The plan without schedules: the auto-stop alone."""

    def plan(self, row: Mapping[str, Any], now: datetime, at_start: bool) -> tuple[str | None, str | None]:
        at = auto_stop_at(row, now, at_start)
        return (at.strftime(TIME_FORMAT), AUTO_STOP) if at else (None, None)

    def exists(self, name: str) -> bool:
        return False

    def snoozed(self, row: Mapping[str, Any], stop: datetime, at: datetime) -> datetime:
        return at
