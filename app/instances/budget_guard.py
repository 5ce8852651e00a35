"""The budget guard: a lifespan task that keeps this period's committed spend within BUDGET_USD.

Admission keeps a create or start from passing the budget, but committed spend can pass it without one: a
new budget period begins (a run with no stop_at, or one admitted before, is admitted again for the new
period), a sweep adopts an instance launched outside the API, PRICES_FILE changes. Then the guard picks the
running instances whose runs no longer fit, the newest runs first, and stops them with ONE coalesced
`stop-instances` call per region, each recorded with an event of source `budget_enforced` (and its
notification); with BUDGET_ENFORCEMENT=notify it only sends the `budget_enforced` notification.

It checks at each period's start, after every sweep, and at least every CHECK_SECONDS (a changed prices file
is read then). The leader alone runs it.
"""

import asyncio
import logging
import uuid

from app.aws.batching import by_region
from app.aws.batching import send as send_batch
from app.budget.spending import Spending, period_bounds, period_label
from app.config import Settings
from app.core import clock
from app.core.errors import ApiError
from app.core.loops import WakeableLoop
from app.instances.reconciler import Reconciler
from app.instances.recorder import Recorder
from app.store import Database
from app.store.rows import InstanceRow

log = logging.getLogger("ec2_creator.budget")

CHECK_SECONDS = 60.0
SOURCE = "budget_enforced"


class BudgetGuard(WakeableLoop):
    name = "budget-guard"
    failure_delay = CHECK_SECONDS

    def __init__(self, settings: Settings, db: Database, aws, spending: Spending, recorder: Recorder,
                 reconciler: Reconciler) -> None:
        self.settings = settings
        self.db = db
        self.aws = aws
        self.spending = spending
        self.recorder = recorder
        self.reconciler = reconciler
        super().__init__()

    async def round(self) -> None:
        await self.check()

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, ApiError):
            log.warning("budget guard: stopping failed (%s); retrying in %g s", exc.detail, CHECK_SECONDS)
        else:
            super().failed(exc)

    async def next_delay(self) -> float:
        """Until the period's end (the guard admits every run again then), at most CHECK_SECONDS."""
        now = clock.now()
        return min(CHECK_SECONDS, max(0.05, (period_bounds(now)[1] - now).total_seconds() + 0.05))

    async def check(self) -> list[str]:
        """One round: the ids stopped (or, with BUDGET_ENFORCEMENT=notify, only notified)."""
        await asyncio.to_thread(self.spending.reload_prices)
        now = clock.now()
        committed, rows = await asyncio.to_thread(self.spending.over_budget, now)
        ours = self.recorder.account
        rows = [r for r in rows if r["endpoint"] == self.recorder.endpoint
                and not (r["account"] and ours and r["account"] != ours)]
        if not rows:
            return []
        period = period_label(period_bounds(now)[0])
        budget = self.spending.budget_usd
        ids = [r["id"] for r in rows]
        if self.settings.budget_enforcement == "notify":
            await asyncio.to_thread(self._notify_only, rows, period, committed, budget)
            return ids
        log.warning("budget guard: USD %.4f committed this month (%s) passes BUDGET_USD %.2f: stopping %s",
                    committed, period, budget, ", ".join(ids))
        stopped: list[str] = []
        for region, chunk in by_region(rows):
            stopped += await self._stop(chunk, region)
        return stopped

    def _notify_only(self, rows: list[InstanceRow], period: str, committed: float, budget: float) -> None:
        for row in rows:
            queued = self.db.queue_notification(
                f"budget_enforced:{period}:{row['id']}", SOURCE, row["id"],
                {"enforcement": "notify", "period": period, "committed_usd": round(committed, 4),
                 "budget_usd": budget, "name": row["name"]})
            if queued:
                log.warning("budget guard: USD %.4f committed this month (%s) passes BUDGET_USD %.2f; %s would be "
                            "stopped (BUDGET_ENFORCEMENT=notify leaves it running)", committed, period, budget,
                            row["id"])

    async def _stop(self, rows: dict[str, InstanceRow], region: str | None) -> list[str]:
        ids = list(rows)
        batch = set(ids)
        with self.reconciler.mutating():
            self.recorder.transitions |= batch  # a sweep meanwhile leaves these to our record
            try:
                answered, failed = await send_batch(self.aws, "stop_instance.sh", "StoppingInstances", ids, region,
                                                    background=True)
                if answered:
                    await asyncio.to_thread(self._record, rows, answered)
            finally:
                self.recorder.transitions -= batch
        self.reconciler.request_sweep()
        for instance_id, exc in failed.items():
            log.warning("budget guard: EC2 refused to stop %s (%s); the next round tries again", instance_id,
                        exc.detail)
        return list(answered)

    def _record(self, rows: dict[str, InstanceRow], answered: dict[str, dict]) -> None:
        for instance_id, change in answered.items():
            self.recorder.record_transition(rows[instance_id], {"InstanceId": instance_id, **change}, "stop",
                                            uuid.uuid4().hex, source=SOURCE)
