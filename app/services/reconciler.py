"""The one writer of observed state: turns what EC2 reports into what we record.

A background loop runs a sweep every RECONCILE_INTERVAL_SECONDS, or soon after a mutation asked
for one (requests that arrive together are batched into one sweep). A sweep is ONE
`describe-instances` call filtered on the ManagedBy tag; it is read-only towards EC2.
Mutation responses (run/start/stop/terminate) are recorded through `record_*` here too, so every
state change gets its event.

EC2 is eventually consistent, so "gone" is proven, never inferred from one answer: a tracked
instance a sweep does not list is only *missing*; it becomes terminated once it has been missing for
GONE_AFTER_MISSED_SWEEPS sweeps and CONSISTENCY_GRACE_SECONDS (and is that old), and a direct
lookup by id, without the tag filter, does not find it either. A launch is resolved the same way:
found by its RequestId tag, or failed once the CLI timeout plus the grace has passed and a direct
lookup by RequestId finds nothing. A sweep judges only instances of its own endpoint and region.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.config import Settings
from app.errors import ApiError, Unavailable, UpstreamError
from app.models.instance import RESERVED_TAG_KEYS, SyncResult
from app.services.db import TIME_FORMAT, Database, age_seconds, ago, parse_time, utcnow

log = logging.getLogger("ec2_creator.reconciler")

BATCH_DELAY_SECONDS = 0.5  # follow-up sweeps wait this long so concurrent mutations share one
MAX_BATCH_WAIT_SECONDS = 10.0  # ...and up to this long for mutations still running to finish
PRUNE_EVERY_SECONDS = 3600.0  # events and finished launches past EVENTS_RETENTION_DAYS
SECURITY_GROUP_NAME = "ec2-creator-local"
CONFIRM_BATCH = 200  # ids or request ids per direct lookup


def tags_of(instance: dict) -> dict[str, str]:
    tags = instance.get("Tags")
    if not isinstance(tags, list):
        return {}
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags if isinstance(t, dict) and "Key" in t}


def _iso(value: str | None) -> str | None:
    """EC2's LaunchTime in our timestamp format."""
    at = parse_time(value)
    return at.strftime(TIME_FORMAT) if at else None


def keeps_public_ip(state: str) -> bool:
    """An auto-assigned public IPv4 stays while an instance runs (and until it has stopped)."""
    return state in ("pending", "running", "stopping")


def state_of(instance: dict) -> str:
    return (instance.get("State") or {}).get("Name") or "pending"


def instances_of(doc: dict, script: str = "list_instances.sh") -> list[dict]:
    """The instances of a describe-instances answer. Anything that is not one is an error, never
    "EC2 has nothing": an empty or truncated output must not make every instance look gone."""
    reservations = doc.get("Reservations")
    if not isinstance(reservations, list) or not all(isinstance(r, dict) for r in reservations):
        raise UpstreamError(f"The AWS CLI ({script}) did not print a describe-instances answer "
                            "(no Reservations list); nothing was concluded from it.", code="aws_bad_output")
    found = [i for r in reservations for i in r.get("Instances") or []]
    if not all(isinstance(i, dict) and i.get("InstanceId") for i in found):
        raise UpstreamError(f"The AWS CLI ({script}) printed an instance without an InstanceId.",
                            code="aws_bad_output")
    return found


class Reconciler:
    def __init__(self, settings: Settings, db: Database, aws, login_user_of: Callable[[str | None], str]) -> None:
        self.settings = settings
        self.db = db
        self.aws = aws
        self.login_user_of = login_user_of
        self.region = settings.region
        self.endpoint = settings.endpoint_key
        # The AWS account the credentials belong to: from describe answers (OwnerId), or one
        # `sts get-caller-identity` when EC2 lists nothing. Unknown, nothing is judged gone.
        self.account: str | None = None
        self.in_flight: set[str] = set()  # request ids whose run-instances this process is sending
        self._wake = asyncio.Event()
        self._sweep_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._pruned_at = float("-inf")
        self.mutations_in_flight = 0
        # A launch row older than this was written by an earlier process: if a sweep finds its
        # instance first, that is an adoption of a crashed create, not this process's create.
        self.started_at = utcnow()

    @property
    def grace(self) -> float:
        return self.settings.consistency_grace_seconds

    @property
    def launch_deadline(self) -> float:
        """Seconds after which a launch EC2 does not show can no longer appear: the CLI call is over."""
        return self.settings.aws_cli_timeout_seconds + self.grace

    # -- loop --------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

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
        """One describe-instances call, then one transaction applying what it said.

        Only when something looks gone (an instance missing long enough, a launch overdue) does it
        cost more: one direct lookup for all of them. `wait` bounds the wait for a sweep already
        running (503 sweep_busy after it).
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
            if self.account is None and await asyncio.to_thread(self.db.has_instances_in, self.region,
                                                                self.endpoint):
                await self.ensure_account()
            result, suspects, overdue = await asyncio.to_thread(self._apply_sweep, observed, started)
            # Each lookup on its own: one that fails must not hold the other back.
            try:
                if suspects:
                    await self._confirm_gone(suspects, started, result)
            except ApiError as exc:
                log.warning("sweep: looking up missing instances failed (%s); next sweep tries again", exc.detail)
            try:
                if overdue:
                    await self._confirm_launches(overdue, started, result)
            except ApiError as exc:
                log.warning("sweep: looking up overdue launches failed (%s); next sweep tries again", exc.detail)
            log.debug("sweep: %d observed in %.2fs, %s", len(observed), time.perf_counter() - t0, result)
            return result
        finally:
            self._sweep_lock.release()

    def _learn_account(self, doc: dict) -> None:
        owners = {r.get("OwnerId") for r in doc.get("Reservations") or [] if r.get("OwnerId")}
        if len(owners) == 1 and self.account is None:
            self.account = str(owners.pop())

    async def ensure_account(self) -> str:
        """The account of the server's credentials (one `sts get-caller-identity`, then cached)."""
        if self.account is None:
            doc = await self.aws.run("get_caller_identity.sh", background=True)
            account = str(doc.get("Account") or "")
            if not account.isdigit():
                raise UpstreamError("sts get-caller-identity gave no account id.", code="aws_bad_output")
            self.account = account
            log.info("AWS account %s", account)
        return self.account

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

    async def _confirm_gone(self, suspects: list[str], started: str, result: SyncResult) -> None:
        seen = {i["InstanceId"]: i for i in await self._lookup("--filter-instance-id", suspects)}
        await asyncio.to_thread(self._apply_confirmation, suspects, seen, started, result)

    async def _confirm_launches(self, overdue: list[dict], started: str, result: SyncResult) -> None:
        found = await self._lookup("--request-id", [launch["request_id"] for launch in overdue])
        await asyncio.to_thread(self._apply_launch_lookup, overdue, found, result)

    async def confirm_instance(self, row: dict) -> dict | None:
        """A direct lookup of one instance (after EC2 said NotFound to a mutation): records what EC2
        shows and returns the fresh row, or None when EC2 does not show it (the caller records why)."""
        found = {i["InstanceId"]: i
                 for i in await self._lookup("--filter-instance-id", [row["id"]], row.get("region"))}
        if row["id"] not in found:
            return None
        await asyncio.to_thread(self._apply_confirmation, [row["id"]], found, utcnow(), SyncResult(), True)
        return await asyncio.to_thread(self.db.get_instance, row["id"])

    # -- writers (synchronous; called in a worker thread) --------------------------------------
    def _ssh_string(self, public_ip: str | None, login_user: str | None) -> str | None:
        if not public_ip:
            return None
        return f"ssh -i {self.settings.ssh_key_path} {login_user or 'ec2-user'}@{public_ip}"

    def _observed_fields(self, row: dict, instance: dict) -> dict:
        state = state_of(instance)
        public_ip = instance.get("PublicIpAddress") if keeps_public_ip(state) else None
        return {"state": state, "public_ip": public_ip,
                "ssh_string": self._ssh_string(public_ip, row.get("login_user"))}

    def _apply(self, row: dict, instance: dict, action: str, source: str, request_id: str | None = None) -> bool:
        """Write what EC2 said of one tracked instance; True when anything public changed."""
        new = self._observed_fields(row, instance)
        changed = {k: v for k, v in new.items() if row.get(k) != v}
        if row.get("missed_sweeps") or row.get("missing_since"):
            self.db.set_missing(row["id"], 0, None)  # seen again: no longer missing
        if not changed:
            return False
        now = utcnow()
        self.db.update_instance(row["id"], {**changed, "updated_at": now})
        if "state" in changed:
            self.db.add_event(row["id"], action, row.get("state"), new["state"], source, request_id, at=now)
        return True

    def _apply_sweep(self, observed: list[dict], started: str) -> tuple[SyncResult, list[str], list[dict]]:
        """Apply one sweep; return what it changed, the ids to confirm gone, and overdue launches."""
        result = SyncResult()
        seen: set[str] = set()
        suspects: list[str] = []
        with self.db.transaction():
            # Unknown account: nothing is judged (an empty describe of another account is no proof).
            tracked = self.db.tracked_ids(self.region, self.endpoint, self.account) if self.account else {}
            pending = {launch["request_id"]: launch
                       for launch in self.db.pending_launches(self.region, self.endpoint)}
            settled = self.db.settled_without_instance(self.region, self.endpoint)
            for instance in observed:
                instance_id = instance["InstanceId"]
                seen.add(instance_id)
                request_id = tags_of(instance).get("RequestId", "")
                launch = pending.pop(request_id, None)
                if launch is None and request_id in settled:  # recorded failed or lost, yet it launched
                    launch = self.db.get_launch(request_id)
                self._isolated(instance_id, self._apply_observed, instance, tracked.get(instance_id), launch,
                               started, result)
            for instance_id, row in tracked.items():
                if instance_id in seen or (row.get("updated_at") or "") > started:
                    continue
                if self._isolated(instance_id, self._note_missing, row, started):
                    suspects.append(instance_id)
                else:
                    result.missing.append(instance_id)
            overdue = [launch for launch in pending.values() if launch["request_id"] not in self.in_flight
                       and age_seconds(launch["created_at"]) >= self.launch_deadline]
        return result, suspects, overdue

    def _isolated(self, instance_id: str, apply: Callable, *args):
        """One instance's writes in a savepoint: a row that fails is logged and skipped, and the rest
        of the sweep still lands."""
        try:
            with self.db.savepoint():
                return apply(*args)
        except Exception:
            if not self.db.connect().in_transaction:
                raise  # SQLite gave up the whole transaction (disk full, I/O error): so does the sweep
            log.exception("sweep: could not record instance %s; skipped this time", instance_id)
            return None

    def _apply_observed(self, instance: dict, row: dict | None, launch: dict | None, started: str,
                        result: SyncResult) -> None:
        instance_id = instance["InstanceId"]
        if launch is not None:
            self.db.finish_launch(launch["request_id"], "launched", instance_id)
        if row is None:
            known = self.db.get_instance(instance_id)
            if known is None:
                if launch is not None or state_of(instance) != "terminated":
                    self._adopt(instance, launch)
                    result.adopted.append(instance_id)
            elif (known.get("updated_at") or "") <= started and (
                    self._revive(known, instance) or self._claim(known, instance)):
                result.updated.append(instance_id)
            return
        if (row.get("updated_at") or "") > started:
            return  # an API call recorded something newer after this describe began
        if self._apply(row, instance, "observe", "reconcile"):
            result.updated.append(instance_id)

    @property
    def scope(self) -> dict[str, str | None]:
        return {"region": self.region, "endpoint": self.endpoint, "account": self.account}

    def _claim(self, row: dict, instance: dict) -> bool:
        """A live record of no EC2 yet (kept before regions and accounts were), or of another name for
        this one (an endpoint alias), that this EC2 lists: it is this EC2's from now on."""
        if row.get("state") in ("terminated", "failed") or self.account is None:
            return False
        self.db.update_instance(row["id"], self.scope)
        log.info("instance %s (recorded for %s/%s/%s) is listed here: now tracked in this region and account",
                 row["id"], row.get("endpoint") or "aws", row.get("region"), row.get("account"))
        self._apply(row, instance, "observe", "reconcile")
        return True

    def _revive(self, row: dict, instance: dict) -> bool:
        """A record that is terminated while EC2 shows the instance alive comes back with its real
        state: no record may stay terminated while EC2 runs it."""
        state = state_of(instance)
        if row.get("state") not in ("terminated", "failed") or state == "terminated":
            return False
        now = utcnow()
        fields = self._observed_fields(row, instance)
        self.db.update_instance(row["id"], {**fields, **self.scope, "updated_at": now})
        self.db.set_missing(row["id"], 0, None)
        self.db.add_event(row["id"], "reappeared", row.get("state"), state, "reconcile", at=now)
        log.warning("instance %s was recorded %s but EC2 shows it %s: record restored", row["id"],
                    row.get("state"), state)
        return True

    def _note_missing(self, row: dict, started: str) -> bool:
        """Count one more sweep without this instance; True once it is due a direct lookup."""
        missed = (row.get("missed_sweeps") or 0) + 1
        since = row.get("missing_since") or started
        self.db.set_missing(row["id"], missed, since)
        return (missed >= self.settings.gone_after_missed_sweeps and age_seconds(since) >= self.grace
                and age_seconds(row.get("created_at")) >= self.grace)

    def _apply_confirmation(self, ids: list[str], found: dict[str, dict], started: str, result: SyncResult,
                            direct: bool = False) -> None:
        """After a direct lookup: what it shows is recorded; what it does not show is gone."""
        with self.db.transaction():
            for instance_id in ids:
                row = self.db.get_instance(instance_id)
                if row is None or row["state"] in ("terminated", "failed"):
                    continue
                if not direct and (row.get("updated_at") or "") > started:
                    continue
                instance = found.get(instance_id)
                if instance is not None:
                    if self._isolated(instance_id, self._apply, row, instance, "observe", "reconcile"):
                        result.updated.append(instance_id)
                    continue
                now = utcnow()
                self.db.update_instance(instance_id, {"state": "terminated", "public_ip": None,
                                                      "ssh_string": None, "updated_at": now})
                self.db.add_event(instance_id, "gone", row.get("state"), "terminated", "reconcile", at=now)
                log.warning("instance %s: EC2 has not shown it for %s sweeps and %g s, nor to a direct lookup; "
                            "recorded terminated", instance_id, row.get("missed_sweeps"), self.grace)
                result.gone.append(instance_id)

    def _apply_launch_lookup(self, overdue: list[dict], found: list[dict], result: SyncResult) -> None:
        by_request = {tags_of(i).get("RequestId"): i for i in found}
        with self.db.transaction():
            tracked = self.db.tracked_ids(self.region, self.endpoint, self.account) if self.account else {}
            for launch in overdue:
                instance = by_request.get(launch["request_id"])
                if instance is None:  # outcome was unknown; now settled: it never launched
                    self.db.finish_launch(launch["request_id"], "lost",
                                          error="no instance with this request id exists in EC2")
                    continue
                self._isolated(instance["InstanceId"], self._apply_observed, instance,
                               tracked.get(instance["InstanceId"]), launch, utcnow(), result)

    def _adopt(self, instance: dict, launch: dict | None = None) -> None:
        """Track a ManagedBy-tagged instance we have no row for (launched by hand, or lost in a crash).

        When it carries the RequestId of one of our launches, what that request asked for is kept.
        """
        tags = tags_of(instance)
        ami = instance.get("ImageId")
        asked = json.loads(launch["body"]) if launch else {}
        request = asked.get("request", {})
        login_user = asked.get("login_user") or self.login_user_of(ami)
        launched = instance.get("LaunchTime") or utcnow()
        now = utcnow()
        groups = [g.get("GroupId") for g in instance.get("SecurityGroups") or []
                  if g.get("GroupName") == SECURITY_GROUP_NAME]
        row = {
            "id": instance["InstanceId"],
            # The original schema has `name NOT NULL`: an instance without a Name tag is named by its id.
            "name": tags.get("Name") or request.get("name") or instance["InstanceId"],
            "ami": ami, "instance_type": instance.get("InstanceType"), "storage_gb": request.get("storage_gb"),
            "security_group_id": groups[0] if groups else None,
            "tags": {k: v for k, v in tags.items() if k not in RESERVED_TAG_KEYS},
            "backend_used": "awscli", "login_user": login_user, "request_id": tags.get("RequestId"),
            **self.scope, "launched_at": launched, "created_at": _iso(launched) or now, "updated_at": now,
            "state": None,
        }
        fields = self._observed_fields(row, instance)
        self.db.upsert_instance({**row, **fields})
        if launch is not None and launch["created_at"] >= self.started_at:
            # A create of this process still waiting for its aws answer: the sweep was merely first.
            action, source = "create", "api"
        else:
            action, source = "adopt", "adopt"
        self.db.add_event(row["id"], action, None, fields["state"], source, row["request_id"], at=now)

    def record_launch(self, instance: dict, row: dict) -> dict:
        """Record a run-instances answer: the row as the API knows it plus what EC2 said."""
        now = utcnow()
        row = {**row, **self.scope}
        fields = self._observed_fields(row, instance)
        with self.db.transaction():
            self.db.finish_launch(row["request_id"], "launched", row["id"])
            if self.db.get_instance(row["id"]) is None:
                self.db.upsert_instance({**row, **fields, "created_at": now, "updated_at": now})
                self.db.add_event(row["id"], "create", None, fields["state"], "api", row.get("request_id"), at=now)
            else:  # a sweep adopted it first and holds a newer observed state: add what we asked for
                self.db.update_instance(row["id"], {**row, "updated_at": now})
        return self.db.require_instance(row["id"])

    def record_transition(self, row: dict, instance_state: dict, action: str, request_id: str | None) -> dict:
        """Record the CurrentState EC2 gave for a start/stop/terminate."""
        state = (instance_state.get("CurrentState") or {}).get("Name") or row["state"]
        with self.db.transaction():
            fresh = self.db.get_instance(row["id"]) or row
            public_ip = fresh.get("public_ip") if keeps_public_ip(state) else None
            instance = {"State": {"Name": state}, "PublicIpAddress": public_ip}
            self._apply(fresh, instance, action, "api", request_id)
        return self.db.require_instance(row["id"])

    def record_gone(self, row: dict, action: str, request_id: str | None, aws_error: str | None) -> dict:
        """EC2 says the instance does not exist, and a direct lookup agreed: terminated for good."""
        with self.db.transaction():
            now = utcnow()
            fresh = self.db.get_instance(row["id"]) or row
            if fresh["state"] != "terminated":
                self.db.update_instance(row["id"], {"state": "terminated", "public_ip": None, "ssh_string": None,
                                                    "updated_at": now})
            self.db.add_event(row["id"], action, fresh.get("state"), "terminated", "api", request_id, aws_error,
                              at=now)
        return self.db.require_instance(row["id"])
