"""Auto-stop: a lifespan task that stops every running instance whose `stop_at` has come (its auto-stop, or its
schedule's stop: app/instances/plan.py), with ONE `stop-instances` call for all of them per region (each instance
is stopped in the region it was recorded in, whatever the server's AWS_REGION is now), and records each with an
event of source `auto_stop` (a scheduled stop: action schedule_stop, source `schedule`).

It sleeps until the earliest `stop_at` it may act on (at most CHECK_SECONDS) and is woken whenever one
changes, or a sweep records an instance running that has one (e.g. one still `pending` at a restart). One
that fell due during a round is stopped in the next round, at once; only one EC2 refused (or that stayed
running after EC2 accepted its stop) is left alone for CHECK_SECONDS, and another account's is never sent.
Its promise lives in the database, so it survives restarts: the first check runs at startup, and an
instance that fell due while the server was down is stopped then. Stopping is idempotent in EC2, so
two replicas that both stop an instance do no harm.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta

from app.aws.batching import MAX_IDS, PER_INSTANCE
from app.aws.batching import send as send_batch
from app.core import clock
from app.core.clock import TIME_FORMAT, parse_time, utcnow
from app.core.errors import ApiError
from app.core.leadership import InstanceLocks
from app.core.loops import WakeableLoop
from app.instances.plan import AUTO_STOP, SCHEDULE
from app.instances.reconciler import Reconciler
from app.instances.recorder import Recorder
from app.store import Database
from app.store.rows import InstanceRow, InstanceState

log = logging.getLogger("ec2_creator.scheduling")

CHECK_SECONDS = 60.0  # the longest sleep between checks, and the pause after a failed round
# What EC2 refuses for one instance (left out for a while; a sweep tells what it is).
SKIPPABLE = PER_INSTANCE


class AutoStopper(WakeableLoop):
    name = "auto-stop"
    failure_delay = CHECK_SECONDS

    def __init__(self, db: Database, aws, recorder: Recorder, reconciler: Reconciler,
                 locks: InstanceLocks | None = None) -> None:
        self.db = db
        self.aws = aws
        self.recorder = recorder
        self.reconciler = reconciler
        # The API's per-instance locks: a snooze or PATCH answered before a stop is sent is never overtaken by it.
        self.locks = locks
        super().__init__()
        # id -> when to try it again: EC2 refused it (a sweep will tell), or it stayed running after EC2 took
        # its stop. No busy loop on those; every other instance is stopped as soon as it is due.
        self._held: dict[str, float] = {}

    async def round(self) -> None:
        await self.run_due()

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, ApiError):
            log.warning("auto-stop failed (%s); retrying in %g s", exc.detail, CHECK_SECONDS)
        else:
            log.exception("auto-stop failed", exc_info=exc)

    async def next_delay(self) -> float:
        return await self._delay()

    def _ours(self, rows: list[InstanceRow]) -> dict[str, InstanceRow]:
        """Those of `rows` a round may stop: not another account's, not held back (see `_held`)."""
        ours, now = self.recorder.account, time.monotonic()
        self._held = {i: at for i, at in self._held.items() if at > now}
        return {r["id"]: r for r in rows if not (r["account"] and ours and r["account"] != ours)
                and r["id"] not in self._held}

    async def _delay(self) -> float:
        """Seconds until the next round: 0 when one it may stop is due already (it fell due while the last
        round was stopping others), else until the next such stop_at or the end of a hold, at most
        CHECK_SECONDS."""
        now = clock.now()
        horizon = (now + timedelta(seconds=CHECK_SECONDS)).strftime(TIME_FORMAT)
        soon = await asyncio.to_thread(self.db.due_for_stop, horizon, None, self.recorder.endpoint)
        waits = [CHECK_SECONDS, *(at - time.monotonic() for at in self._held.values())]
        for row in self._ours(soon).values():
            stop_at = parse_time(row["stop_at"])
            if stop_at is not None:
                waits.append((stop_at - now).total_seconds() + 0.05)
        return max(0.0, min(waits))

    async def run_due(self) -> list[str]:
        """Stop what is due; returns the ids EC2 accepted."""
        # Every region of this endpoint (None): an instance recorded in another region is stopped there.
        due = await asyncio.to_thread(self.db.due_for_stop, utcnow(), None, self.recorder.endpoint)
        rows = self._ours(due)
        by_region: dict[str | None, list[str]] = {}
        for row in rows.values():
            by_region.setdefault(row["region"], []).append(row["id"])
        stopped: list[str] = []
        error: ApiError | None = None
        for region, ids in by_region.items():  # a region that fails does not hold the others back
            try:
                for batch in range(0, len(ids), MAX_IDS):
                    stopped += await self._stop(rows, ids[batch:batch + MAX_IDS], region)
            except ApiError as exc:
                error = error or exc
        if error is not None:
            raise error
        return stopped

    async def _stop(self, rows: dict[str, InstanceRow], ids: list[str], region: str | None = None) -> list[str]:
        """One stop-instances call for those of `ids` in `region` still due under their locks (the bulk path's
        splitting: an id EC2 refuses is left out, the rest sent again); an error about all of them (throttling,
        the endpoint) is raised for the loop to retry."""
        async with self.locks.hold(ids) if self.locks else nullcontext():
            rows, ids = await asyncio.to_thread(self._still_due, rows, ids)
            if not ids:
                return []
            return await self._send(rows, ids, region)

    def _still_due(self, rows: dict[str, InstanceRow], ids: list[str]) -> tuple[dict[str, InstanceRow], list[str]]:
        """Read again under the locks: a snooze, a PATCH or a stop may have changed them since the round began."""
        fresh, now = self.db.get_instances(ids), utcnow()
        due = [i for i in ids if i in fresh and fresh[i]["state"] == InstanceState.RUNNING
               and (fresh[i]["stop_at"] or "~") <= now]  # "~" sorts after every time: no stop_at, not due
        return {**rows, **{i: fresh[i] for i in due}}, due

    async def _send(self, rows: dict[str, InstanceRow], ids: list[str], region: str | None) -> list[str]:
        with self.reconciler.mutating(), self._in_flight(ids):
            answered, failed = await send_batch(self.aws, "stop_instance.sh", "StoppingInstances", ids, region,
                                                background=True)
            refused = {i for i, exc in failed.items() if exc.aws_error_code in SKIPPABLE}
            if refused:
                log.warning("auto-stop: EC2 refused %s; stopped the others", ", ".join(sorted(refused)))
                self._held |= dict.fromkeys(refused, time.monotonic() + CHECK_SECONDS)
                self.reconciler.request_sweep()  # our record of those is behind EC2's
            if answered:
                running = await asyncio.to_thread(self._record, rows,
                                                  [{"InstanceId": i, **c} for i, c in answered.items()])
                log.info("auto-stop: stopped %s", ", ".join(answered))
                if running:  # EC2 took the stop yet says it still runs: a sweep will tell, no busy loop meanwhile
                    log.warning("auto-stop: EC2 still shows %s running", ", ".join(running))
                    self._held |= dict.fromkeys(running, time.monotonic() + CHECK_SECONDS)
                self.reconciler.request_sweep()
            others = {i: exc for i, exc in failed.items() if i not in refused}
            if others:
                raise next(iter(others.values()))
        return list(answered)

    @contextmanager
    def _in_flight(self, ids: list[str]) -> Iterator[None]:
        """A sweep meanwhile leaves these to our record (else an auto-stop looks like an outside stop)."""
        batch = set(ids)
        self.recorder.transitions |= batch
        try:
            yield
        finally:
            self.recorder.transitions -= batch

    def _record(self, rows: dict[str, InstanceRow], changes: list[dict]) -> list[str]:
        """Record EC2's answers; returns the ids still recorded running (and so still due)."""
        running = []
        for change in changes:
            row = rows.get(change.get("InstanceId", ""))
            if row is not None:
                action, source = ("schedule_stop", SCHEDULE) if row["stop_source"] == SCHEDULE else ("stop", AUTO_STOP)
                recorded = self.recorder.record_transition(row, change, action, uuid.uuid4().hex, source=source)
                if recorded["state"] == InstanceState.RUNNING:
                    running.append(row["id"])
        return running
