"""Auto-stop: a lifespan task that stops every running instance whose `stop_at` has come, with ONE
`stop-instances` call for all of them, and records each with an event of source `auto_stop`.

It sleeps until the earliest `stop_at` (at most CHECK_SECONDS) and is woken whenever one changes.
Its promise lives in the database, so it survives restarts: the first check runs at startup, and an
instance that fell due while the server was down is stopped then. Stopping is idempotent in EC2, so
two replicas that both stop an instance do no harm.
"""

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime

from app.errors import ApiError
from app.models.rows import InstanceRow
from app.services.db import Database, parse_time, utcnow
from app.services.reconciler import Reconciler
from app.services.recorder import Recorder

log = logging.getLogger("ec2_creator.scheduling")

CHECK_SECONDS = 60.0  # the longest sleep between checks
# EC2 names the instance it refuses: "This instance 'i-…' is not in a state from which it can be stopped",
# "The instance ID 'i-…' does not exist". That one is left out and the rest stopped (Cloud Custodian's way).
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
SKIPPABLE = ("IncorrectInstanceState", "InvalidInstanceID.NotFound", "UnsupportedOperation")


class AutoStopper:
    def __init__(self, db: Database, aws, recorder: Recorder, reconciler: Reconciler) -> None:
        self.db = db
        self.aws = aws
        self.recorder = recorder
        self.reconciler = reconciler
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="auto-stop")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def wake(self) -> None:
        """A stop_at changed: look again now."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_due()
            except ApiError as exc:
                log.warning("auto-stop failed (%s); retrying at the next check", exc.detail)
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad round
                log.exception("auto-stop failed")
            try:
                await asyncio.wait_for(self._wake.wait(), await self._delay())
            except TimeoutError:
                pass

    async def _delay(self) -> float:
        upcoming = parse_time(await asyncio.to_thread(self.db.next_stop_at, self.recorder.region,
                                                      self.recorder.endpoint))
        if upcoming is None:
            return CHECK_SECONDS
        return min(CHECK_SECONDS, max(0.2, (upcoming - datetime.now(UTC)).total_seconds() + 0.05))

    async def run_due(self) -> list[str]:
        """Stop what is due; returns the ids EC2 accepted."""
        due = await asyncio.to_thread(self.db.due_for_stop, utcnow(), self.recorder.region, self.recorder.endpoint)
        ours = self.recorder.account
        rows = {r["id"]: r for r in due if not (r["account"] and ours and r["account"] != ours)}
        ids = list(rows)
        with self.reconciler.mutating():
            while ids:
                try:
                    doc = await self.aws.run("stop_instance.sh", *ids, background=True)
                except ApiError as exc:
                    refused = set(INSTANCE_ID.findall(exc.detail)) & set(ids)
                    if exc.aws_error_code not in SKIPPABLE or not refused:
                        raise
                    log.warning("auto-stop: EC2 refused %s (%s); stopping the others", ", ".join(sorted(refused)),
                                exc.aws_error_code)
                    ids = [i for i in ids if i not in refused]
                    self.reconciler.request_sweep()  # our record of those is behind EC2's
                    continue
                await asyncio.to_thread(self._record, rows, doc.get("StoppingInstances") or [])
                log.info("auto-stop: stopped %s", ", ".join(ids))
                break
        if ids:
            self.reconciler.request_sweep()
        return ids

    def _record(self, rows: dict[str, InstanceRow], changes: list[dict]) -> None:
        for change in changes:
            row = rows.get(change.get("InstanceId", ""))
            if row is not None:
                self.recorder.record_transition(row, change, "stop", uuid.uuid4().hex, source="auto_stop")
