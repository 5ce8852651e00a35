"""The scheduler: a lifespan task (the leader's) that starts instances when their schedule says so.

Every SCHEDULE_TICK_SECONDS it looks at the edges that passed since its last check (kept in the store, so a
restart catches up): an instance whose last edge since then is a start, and which is stopped, is started; with
respect_manual_stop false, one stopped while its schedule runs is started too. After downtime a start is done
only while its period still runs (its last edge is that start). Every start due in one check goes out as ONE
coalesced `start-instances` call per region, each admitted by the spend guard first: one that does not fit is not
started, and its event and notification `schedule_start_refused` say why (it is not tried again that period:
started by hand, it runs to the period's stop). With respect_manual_stop false, only a person's stop (the API, the
console) is undone, not the auto-stop's, the budget guard's or an idle alarm's. Stops need no tick: a scheduled
stop is the instance's stop_at (app/schedules/planner.py), which the auto-stop acts on at its minute.

Each check also keeps what the instances show: `schedule_error` (no schedule of that name: nothing is done for
it) and `next_start_at` while stopped.
"""

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from app.aws.batching import by_region
from app.aws.batching import send as send_batch
from app.config import Settings
from app.core import clock
from app.core.clock import TIME_FORMAT, parse_time
from app.core.errors import ApiError
from app.core.loops import WakeableLoop
from app.instances.plan import SCHEDULE
from app.instances.service import InstanceService
from app.schedules.calendar import Calendar
from app.schedules.planner import Calendars
from app.store import Database
from app.store.rows import InstanceRow, InstanceState

log = logging.getLogger("ec2_creator.schedules")

CHECKED_KEY = "schedules_checked_at"  # the kv key: edges up to this instant have been acted on
ENFORCE_LOOKBACK = timedelta(days=8)  # how far back the last start of a running period is looked for


def missing_schedule(name: str) -> str:
    return (f"No schedule named {name!r} exists: nothing is started or stopped for this instance by a schedule. "
            "Create it (POST /schedules) or change the instance's tag Schedule (the Jenkins off-hours job reads "
            "that tag too).")


class Scheduler(WakeableLoop):
    name = "schedules"

    def __init__(self, settings: Settings, db: Database, aws, service: InstanceService, calendars: Calendars) -> None:
        self.db = db
        self.aws = aws
        self.service = service
        self.calendars = calendars
        self.tick = settings.schedule_tick_seconds
        self.failure_delay = self.tick
        super().__init__()
        self._told: set[tuple[str, str]] = set()  # (instance, start edge) whose refusal was recorded

    async def round(self) -> None:
        await self.check()

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, ApiError):
            log.warning("schedules: starting failed (%s); retrying in %g s", exc.detail, self.tick)
        else:
            super().failed(exc)

    async def next_delay(self) -> float:
        return self.tick

    async def check(self) -> list[str]:
        """One check: the ids started."""
        now = clock.now()
        due = await asyncio.to_thread(self._evaluate, now)
        started = await self._start(due) if due else []
        await asyncio.to_thread(self.db.kv_set, CHECKED_KEY, now.strftime(TIME_FORMAT))
        return started

    def _evaluate(self, now: datetime) -> list[tuple[InstanceRow, datetime]]:
        """Keep each scheduled instance's schedule_error and next_start_at; return those to start (with the edge
        they start for)."""
        checked = parse_time(self.db.kv_get(CHECKED_KEY)) or now
        schedules = {s["name"]: self.calendars.of_row(s) for s in self.db.list_schedules()}
        next_starts: dict[str, str | None] = {}
        due: list[tuple[InstanceRow, datetime]] = []
        recorder = self.service.recorder
        for row in self.db.scheduled_instances():
            if row["endpoint"] != recorder.endpoint or (row["account"] and recorder.account and
                                                        row["account"] != recorder.account):
                continue  # another EC2's or account's: left to a server talking to it
            name = row["schedule"] or ""
            found = schedules.get(name)
            fields: dict = {}
            error = None if found else missing_schedule(name)
            if row["schedule_error"] != error:
                fields["schedule_error"] = error
            next_start = None
            if found is not None and row["state"] == InstanceState.STOPPED:
                calendar, respect = found
                if name not in next_starts:
                    edge = calendar.next_edge(now, "start")
                    next_starts[name] = edge[0].strftime(TIME_FORMAT) if edge else None
                next_start = next_starts[name]
                since = max(checked, parse_time(row["schedule_since"]) or checked)
                start = _due_start(calendar, respect or not self._stopped_by_hand(row), since, now)
                if start is not None:
                    due.append((row, start))
            if row["state"] == InstanceState.STOPPED and row["next_start_at"] != next_start:
                fields["next_start_at"] = next_start
            if fields:
                self.db.update_instance(row["id"], fields)
        return due

    def _stopped_by_hand(self, row: InstanceRow) -> bool:
        """Whether its last stop was a person's (through the API, or outside it: the console) and not its auto-stop,
        its schedule, the budget guard or its idle alarm (EC2's own stop, seen as one outside the API): only those
        are undone when the schedule does not respect manual stops."""
        source = self.db.last_stop_source(row["id"])  # one indexed row, not the history, at every check
        return source == "api" or (source == "reconcile" and row["stop_when_idle"] is None)

    async def _start(self, due: list[tuple[InstanceRow, datetime]]) -> list[str]:
        """Admit each (the free-tier types, then the budget), then start the admitted ones with one call per
        region; the refused ones get a schedule_start_refused event."""
        edges = {row["id"]: at for row, at in due}
        seen = {row["id"]: (row["schedule"], row["schedule_since"]) for row, _ in due}
        started: list[str] = []
        keys: list[str] = []
        async with self.service.locks.hold(list(edges)):
            with self.service.reconciler.mutating():
                rows = await asyncio.to_thread(self.db.get_instances, list(edges))
                admitted: list[InstanceRow] = []
                for instance_id, row in rows.items():
                    if row["state"] != InstanceState.STOPPED or (row["schedule"], row["schedule_since"]) != \
                            seen[instance_id]:
                        continue  # started, or its schedule changed or detached, meanwhile
                    key = f"schedule:{instance_id}:{uuid.uuid4().hex}"
                    try:
                        self.service.check_start_policy(row)
                        await asyncio.to_thread(self.service.admit_starts, key, [row])
                    except ApiError as exc:
                        await asyncio.to_thread(self._refused, row, edges[instance_id], exc)
                        continue
                    keys.append(key)
                    admitted.append(row)
                try:
                    for region, chunk in by_region(admitted):
                        started += await self._send(chunk, region, edges)
                finally:
                    for key in keys:
                        await asyncio.to_thread(self.service.spending.release, key)
        if started:
            log.info("schedules: started %s", ", ".join(started))
            self.service.reconciler.request_sweep()
            self.service.on_stop_at_changed()
        return started

    async def _send(self, rows: dict[str, InstanceRow], region: str | None,
                    edges: dict[str, datetime]) -> list[str]:
        ids = list(rows)
        recorder = self.service.recorder
        recorder.transitions |= set(ids)  # a sweep meanwhile leaves these to our record
        try:
            answered, failed = await send_batch(self.aws, "start_instance.sh", "StartingInstances", ids, region,
                                                background=True)
            for instance_id, change in answered.items():
                await asyncio.to_thread(recorder.record_transition, rows[instance_id],
                                        {"InstanceId": instance_id, **change}, "schedule_start", uuid.uuid4().hex,
                                        SCHEDULE)
        finally:
            recorder.transitions -= set(ids)
        for instance_id, exc in failed.items():
            await asyncio.to_thread(self._refused, rows[instance_id], edges[instance_id], exc)
        return list(answered)

    def _refused(self, row: InstanceRow, edge: datetime, exc: ApiError) -> None:
        """Record once per start edge why the schedule did not start it (the event queues its notification)."""
        told = (row["id"], edge.strftime(TIME_FORMAT))
        if told in self._told:
            return
        self._told.add(told)
        if len(self._told) > 10_000:
            self._told = {told}
        log.warning("schedules: not starting %s: %s", row["id"], exc.detail)
        self.db.add_event(row["id"], "schedule_start_refused", None, None, SCHEDULE, aws_error=exc.aws_error_code,
                          detail=f"{exc.code}: {exc.detail}")


def _due_start(calendar: Calendar, respect_manual_stop: bool, since: datetime, now: datetime) -> datetime | None:
    """The start edge a stopped instance is due to start for, or None: the last edge since the last check is a
    start (its period still runs); or, not respecting manual stops, its schedule runs now."""
    edges = calendar.edges(since, now)
    if edges and edges[-1][1] == "start":
        return edges[-1][0]
    if not respect_manual_stop and not edges and calendar.desired(now) == "running":
        starts = [at for at, action in calendar.edges(now - ENFORCE_LOOKBACK, now) if action == "start"]
        return starts[-1] if starts else None
    return None
