"""What the schedule routes call: the definitions (create, change, delete), and a preview of what one would do
and save. Reads and writes the store only: no `aws` process. Methods are synchronous (callers run them in a
worker thread), but wake(), which the routes call on the event loop after a create or a change."""

from datetime import datetime, timedelta
from typing import Any

from app.auth.tokens import Caller
from app.budget.spending import Rates
from app.core import clock
from app.core.clock import TIME_FORMAT, utcnow
from app.core.errors import Conflict, NotFound
from app.instances.service import InstanceService
from app.schedules.calendar import Calendar
from app.schedules.planner import Calendars
from app.schedules.schemas import ScheduleBody, ScheduleCreate
from app.store import Database


class ScheduleService:
    def __init__(self, db: Database, instances: InstanceService, calendars: Calendars) -> None:
        self.db = db
        self.instances = instances
        self.calendars = calendars
        self.on_changed = lambda: None  # the scheduler's wake-up, set by the app

    def get(self, name: str) -> dict[str, Any]:
        found = self.db.get_schedule(name)
        if found is None:
            raise NotFound(f"No schedule named {name!r}. GET /schedules lists them.", code="schedule_not_found")
        return found

    def create(self, body: ScheduleCreate) -> dict[str, Any]:
        with self.db.transaction():  # instances tagged with the name before it existed follow it from now on
            if not self.db.put_schedule(body.name, *self._stored(body), create=True):
                raise Conflict(f"A schedule named {body.name!r} exists already: PUT /schedules/{body.name} changes "
                               "it.", code="schedule_exists")
            self._replan(body.name)
        return self.get(body.name)

    def replace(self, name: str, body: ScheduleBody) -> dict[str, Any]:
        """A new definition: the running instances on it are planned again (their next stop), unless snoozed."""
        with self.db.transaction():
            if not self.db.put_schedule(name, *self._stored(body), create=False):
                raise NotFound(f"No schedule named {name!r}: POST /schedules creates one.", code="schedule_not_found")
            self._replan(name)
        return self.get(name)

    def delete(self, name: str, caller: Caller) -> None:
        with self.db.transaction():  # no attach slips between the check and the delete
            self.get(name)
            self._refuse_in_use(name, caller)
            self.db.delete_schedule(name)

    def _refuse_in_use(self, name: str, caller: Caller) -> None:
        attached = self.db.scheduled_instances(name)
        if attached:
            shown = [r["id"] for r in attached if caller.may_see(r["owner"])]
            hidden = len(attached) - len(shown)
            raise Conflict(f"Schedule {name!r} is attached to {len(attached)} instance(s): "
                           f"{', '.join(shown) or 'none of yours'}{f' and {hidden} more' if hidden else ''}. Detach it "
                           "first (PATCH /instances/{id} with {\"schedule\": null}).", code="schedule_in_use",
                           extra={"instance_ids": shown})

    @staticmethod
    def _stored(body: ScheduleBody) -> tuple[str, list[dict], list[str], bool]:
        periods = [p.model_dump(exclude_none=True) for p in body.periods]
        return body.timezone, periods, body.holidays, body.respect_manual_stop

    def _replan(self, name: str) -> None:
        """Its instances follow the new definition from now on: edges before now are not acted on, the running
        ones' stops are planned again (a snoozed stop is kept), the scheduler fills in the next starts."""
        for row in self.db.scheduled_instances(name):
            fields = self.instances.recorder.attach(row, name)
            self.db.update_instance(row["id"], {**fields, "updated_at": utcnow()})

    def wake(self) -> None:
        """After a create or a change (on the event loop): the auto-stop and the scheduler look again."""
        self.instances.on_stop_at_changed()
        self.on_changed()

    # -- preview ----------------------------------------------------------------------------------------
    def preview(self, name: str, days: int, caller: Caller) -> dict[str, Any]:
        """The edges of the next `days` days with the instances they act on (those the caller may see), the hours
        each would run, and the compute and IPv4 this saves against running them all the time."""
        stored = self.get(name)
        calendar, _ = self.calendars.of_row(stored)
        start = clock.now()
        end = start + timedelta(days=days)
        rows = [r for r in self.db.scheduled_instances(name) if caller.may_see(r["owner"])]
        ids = [r["id"] for r in rows]
        edges = calendar.edges(start, end)
        running = running_hours(calendar, start, end)
        off = days * 24 - running
        savings = 0.0
        book = self.instances.spending.book
        for row in rows:
            rates = Rates.of(book, row["instance_type"], row["region"], row["storage_gb"])
            if rates is not None:
                has_ip = row["associate_public_ip"] != 0  # launched with a public IPv4 (or not known: counted)
                savings += off * (rates.compute + (rates.ipv4 if has_ip else 0.0))
        return {"name": name, "timezone": stored["timezone"], "start": start.strftime(TIME_FORMAT),
                "end": end.strftime(TIME_FORMAT), "days": days,
                "actions": [{"at": at.strftime(TIME_FORMAT), "action": action, "instance_ids": ids}
                            for at, action in edges],
                "running_hours": round(running, 2), "estimated_savings_usd": round(savings, 4)}


def running_hours(calendar: Calendar, start: datetime, end: datetime) -> float:
    """Hours between start and end that the calendar wants its instances running (from its state at start: the
    last edge before it; none: stopped)."""
    up = calendar.desired(start) == "running"
    since, total = start, 0.0
    for at, action in calendar.edges(start, end):
        if up:
            total += (at - since).total_seconds()
        up, since = action == "start", at
    if up:
        total += (end - since).total_seconds()
    return total / 3600
