"""The sweep loop: asks EC2 what it holds and hands the answer to the recorder.

A background loop runs a sweep every RECONCILE_INTERVAL_SECONDS, or soon after a mutation asked
for one (requests that arrive together are batched into one sweep). A sweep is ONE
`describe-instances` call per region, filtered on the ManagedBy tag: the server's own region, and
every other region of its endpoint where its account has instances on record or a launch is
unsettled (a server restarted with another AWS_REGION keeps watching the first region's instances);
plus, only when something looks gone (a tracked instance missing long enough from its region's
listing, a launch overdue), one direct lookup per region for all of them; it is read-only towards
EC2. The recorder (app/instances/recorder.py) decides and writes what it means.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from app.config import Settings
from app.core.clock import ago, utcnow
from app.core.errors import ApiError, Unavailable, UpstreamError
from app.core.loops import LoopTask
from app.instances.recorder import Recorder, instances_of
from app.instances.schemas import SyncResult
from app.store import Database
from app.store.rows import InstanceRow, LaunchRow, LaunchStatus

log = logging.getLogger("ec2_creator.reconciler")

BATCH_DELAY_SECONDS = 0.5  # follow-up sweeps wait this long so concurrent mutations share one
MAX_BATCH_WAIT_SECONDS = 10.0  # ...and up to this long for mutations still running to finish
PRUNE_EVERY_SECONDS = 3600.0  # events and finished launches past EVENTS_RETENTION_DAYS
CONFIRM_BATCH = 200  # ids or request ids per direct lookup
RESOLVE_PAUSES = (0.5, 2.0, 5.0, 10.0)  # before each lookup of a launch whose answer never came


class Reconciler(LoopTask):
    name = "reconciler"

    def __init__(self, settings: Settings, db: Database, aws, recorder: Recorder) -> None:
        self.settings = settings
        self.db = db
        self.aws = aws
        self.recorder = recorder
        self.region = settings.region
        self.endpoint = settings.endpoint_key
        self._wake = asyncio.Event()
        self._sweep_lock = asyncio.Lock()
        self._pruned_at = float("-inf")
        self.mutations_in_flight = 0
        self.last_success: float | None = None  # when the last sweep succeeded (Unix time)
        self.after_sweep: Callable[[], None] = lambda: None  # each periodic round's end (set by the app)
        # After each sweep: delete the security groups of instances that are gone (InstanceService's; never raises).
        self.tidy: Callable[[], Awaitable[object]] | None = None
        self.on_swept: Callable[[], None] = lambda: None  # each successful sweep, periodic or asked (the budget guard)

    @property
    def account(self) -> str | None:
        return self.recorder.account

    # -- loop --------------------------------------------------------------------------------
    def request_sweep(self) -> None:
        """Ask for a sweep soon; many requests close together become one sweep."""
        self._wake.set()

    @contextmanager
    def mutating(self) -> Iterator[None]:
        """Mark a mutation in flight: a requested sweep waits for the burst to finish."""
        self.mutations_in_flight += 1
        try:
            yield
        finally:
            self.mutations_in_flight -= 1

    async def _settle(self) -> None:
        """After a wake-up: a short pause, then wait (bounded) until no mutation is running."""
        await asyncio.sleep(BATCH_DELAY_SECONDS)
        deadline = time.monotonic() + MAX_BATCH_WAIT_SECONDS
        while self.mutations_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except ApiError as exc:
                log.warning("sweep failed: %s", exc.detail)
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad sweep
                log.exception("sweep failed")
            try:
                await self._prune_if_due()
            except Exception:  # noqa: BLE001
                log.exception("pruning old events failed")
            self.after_sweep()
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval_seconds)
                await self._settle()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _prune_if_due(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = time.monotonic()
        events, launches = await asyncio.to_thread(
            self.db.prune, ago(self.settings.events_retention_days * 86400))
        if events or launches:
            log.info("pruned %d events and %d finished launches older than %g days", events, launches,
                     self.settings.events_retention_days)

    async def sweep(self, wait: float | None = None) -> SyncResult:
        """Per region (the server's first), one describe-instances call, then one transaction applying what
        it said.

        Only when something looks gone (an instance missing long enough, a launch overdue) does it
        cost more: one direct lookup for all of them (per region). `wait` bounds the wait for a sweep
        already running (503 sweep_busy after it). A failure in the server's region fails the sweep; one
        in another region is logged and that region is left for the next sweep.
        """
        try:
            await asyncio.wait_for(self._sweep_lock.acquire(), wait)
        except TimeoutError:
            raise Unavailable("A reconcile sweep is already running; retry in a few seconds.", code="sweep_busy",
                              retry_after=5) from None
        try:
            started = utcnow()
            t0 = time.perf_counter()
            doc = await self.aws.run("list_instances.sh", background=True)
            observed = instances_of(doc)
            self._learn_account(doc)
            if self.account is None and await asyncio.to_thread(self.db.has_instances_in, self.endpoint):
                await self.ensure_account()
            result = SyncResult()
            await self._sweep_region(self.region, observed, started, result)
            others = await asyncio.to_thread(self.db.regions_in_use, self.endpoint, self.account)
            for region in sorted(others - {self.region}):
                try:
                    region_doc = await self.aws.run("list_instances.sh", region=region, background=True)
                    listed = instances_of(region_doc)
                except ApiError as exc:
                    log.warning("sweep: listing region %s failed (%s); next sweep tries again", region, exc.detail)
                    continue
                observed += listed
                await self._sweep_region(region, listed, started, result)
            if self.tidy is not None:
                await self.tidy()
            log.debug("sweep: %d observed in %.2fs, %s", len(observed), time.perf_counter() - t0, result)
            self.last_success = time.time()
            self.on_swept()
            return result
        finally:
            self._sweep_lock.release()

    async def _sweep_region(self, region: str, observed: list[dict], started: str, result: SyncResult) -> None:
        """Apply one region's listing, then look up (in that region) what it left in doubt."""
        found, suspects, overdue = await asyncio.to_thread(self.recorder.apply_sweep, observed, started, region)
        for name in ("adopted", "updated", "gone", "missing"):
            getattr(result, name).extend(getattr(found, name))
        # Each lookup on its own: one that fails must not hold the other back.
        try:
            if suspects:
                await self._confirm_gone(suspects, started, result, region)
        except ApiError as exc:
            log.warning("sweep: looking up missing instances failed (%s); next sweep tries again", exc.detail)
        try:
            if overdue:
                await self._confirm_launches(overdue, result, region)
        except ApiError as exc:
            log.warning("sweep: looking up overdue launches failed (%s); next sweep tries again", exc.detail)

    def _learn_account(self, doc: dict) -> None:
        owners = {r.get("OwnerId") for r in doc.get("Reservations") or [] if r.get("OwnerId")}
        if len(owners) == 1 and self.recorder.account is None:
            self._set_account(str(owners.pop()))

    def _set_account(self, account: str) -> None:
        self.recorder.account = account
        log.info("EC2 account %s (%s, region %s)", account, "SANDBOX" if self.endpoint else "AWS", self.region)

    async def ensure_account(self) -> str:
        """The account of the server's credentials (one `sts get-caller-identity`, then cached)."""
        account = self.recorder.account
        if account is None:
            doc = await self.aws.run("get_caller_identity.sh", background=True)
            account = str(doc.get("Account") or "")
            if not account.isdigit():
                raise UpstreamError("sts get-caller-identity gave no account id.", code="aws_bad_output")
            self._set_account(account)
            log.info("AWS account %s", account)
        return account

    async def _lookup(self, option: str, values: list[str], region: str | None = None) -> list[dict]:
        """Direct describe-instances by id or RequestId, without the ManagedBy filter."""
        found: list[dict] = []
        for i in range(0, len(values), CONFIRM_BATCH):
            args = ["--all"]
            for value in values[i:i + CONFIRM_BATCH]:
                args += [option, value]
            doc = await self.aws.run("list_instances.sh", *args, region=region, background=True)
            found += instances_of(doc)
        return found

    async def _confirm_gone(self, suspects: list[str], started: str, result: SyncResult, region: str) -> None:
        seen = {i["InstanceId"]: i for i in await self._lookup("--filter-instance-id", suspects, region)}
        await asyncio.to_thread(self.recorder.apply_confirmation, suspects, seen, started, result)

    async def _confirm_launches(self, overdue: list[LaunchRow], result: SyncResult, region: str) -> None:
        found = await self._lookup("--request-id", [launch["request_id"] for launch in overdue], region)
        await asyncio.to_thread(self.recorder.apply_launch_lookup, overdue, found, result, region)

    async def resolve_launch(self, request_id: str, region: str | None = None) -> bool:
        """A launch whose answer never came (the CLI timed out): look it up by its RequestId at once, and a few
        times more while EC2 may not show it yet. Found, it is recorded launched (True). Not found, nothing is
        concluded: it stays unresolved, holding its share of the budget, until a sweep finds it or, past
        AWS_CLI_TIMEOUT_SECONDS + CONSISTENCY_GRACE_SECONDS, a lookup proves it lost."""
        for pause in RESOLVE_PAUSES:
            await asyncio.sleep(pause)
            launch = await asyncio.to_thread(self.db.get_launch, request_id)
            if launch is None or launch["status"] != LaunchStatus.PENDING:
                return launch is not None and launch["status"] == LaunchStatus.LAUNCHED
            try:
                found = await self._lookup("--request-id", [request_id], region)
            except ApiError as exc:
                log.info("launch %s: lookup by RequestId failed (%s); trying again", request_id, exc.detail)
                continue
            if found:
                await asyncio.to_thread(self.recorder.apply_launch_lookup, [launch], found, SyncResult(),
                                        region)
                return True
        return False

    async def confirm_instance(self, row: InstanceRow) -> InstanceRow | None:
        """A direct lookup of one instance (after EC2 said NotFound to a mutation): records what EC2
        shows and returns the fresh row, or None when EC2 does not show it (the caller records why)."""
        found = {i["InstanceId"]: i
                 for i in await self._lookup("--filter-instance-id", [row["id"]], row["region"])}
        if row["id"] not in found:
            return None
        await asyncio.to_thread(self.recorder.apply_confirmation, [row["id"]], found, utcnow(), SyncResult(), True)
        return await asyncio.to_thread(self.db.get_instance, row["id"])
