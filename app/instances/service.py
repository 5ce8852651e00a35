"""What the routes call: create, start, stop, delete. Route -> policy -> runner -> store.

A create with a warm AMI catalogue costs one `aws` process; start/stop/delete cost one each and
no-op transitions cost none. Mutations on one instance are serialised by a per-instance lock (across
replicas too, on PostgreSQL).
"""

import asyncio
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.auth.tokens import LOCAL, Caller
from app.aws.batching import Coalescer, by_region
from app.aws.batching import send as send_batch
from app.aws.runner import AwsCli, outcome_unknown
from app.budget.spending import AccountPlan, Charges, PriceBook, Rates, Spending, horizon
from app.config import Settings
from app.core import clock
from app.core.clock import TIME_FORMAT, age_seconds, parse_time, stored_time, utcnow
from app.core.errors import ApiError, Conflict, NotFound, PolicyViolation, Unavailable, UpstreamError
from app.core.leadership import InstanceLocks
from app.core.loops import cancel_and_wait
from app.instances.free_tier import SANDBOX_PLACE, Catalog, check_catalog, check_static, login_user_for
from app.instances.idle_alarms import USED_KEY, Metrics, idle_alarm_view
from app.instances.plan import AUTO_STOP, SCHEDULE, StopPlanner
from app.instances.reconciler import Reconciler
from app.instances.recorder import RUNNING, Recorder, in_minutes, ssh_group_name
from app.instances.schemas import MAX_BULK, RESERVED_TAG_KEYS, InstanceCreate, InstancePatch, Selector
from app.instances.ssh_access import MyIp
from app.store import Database, canonical_json
from app.store.rows import InstanceRow, InstanceState, LaunchRow, LaunchStatus

log = logging.getLogger("ec2_creator.instances")


# T instances launch in EC2's unlimited CPU-credit mode by default, where sustained load is billed as
# surplus credits: every launch of these families asks for standard.
T_FAMILY = re.compile(r"t(2|3|3a|4g)\.[a-z0-9]+")
PLAIN_TOKEN = re.compile(r"[!-,.-~][!-~]{0,63}")  # printable ASCII, not starting with '-'
URL_PREFIX = re.compile(r"(?i)(fileb?|https?)://")


class _AlreadyClaimed(Exception):
    """Another request (maybe from before a restart) holds this Idempotency-Key."""


def _result(row: InstanceRow | None, status: int, error: ApiError | None = None,
            instance_id: str | None = None) -> dict:
    """One instance's line of a bulk answer."""
    return {"id": row["id"] if row else instance_id, "status": status, "state": row["state"] if row else None,
            "error": error.body() if error else None}


def request_hash(req: InstanceCreate) -> str:
    # Fields added later are left out while unset, so a key used before they existed still matches.
    later = {k for k in ("stop_when_idle", "ssh_from", "schedule") if getattr(req, k) is None}
    canonical = json.dumps(req.model_dump(exclude=later), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def launch_tags(req: InstanceCreate) -> dict[str, str]:
    """The tags a create sends (its `schedule` as the tag Schedule, which it wins over)."""
    return {**(req.tags or {}), **({"Schedule": req.schedule} if req.schedule else {})}


def client_token(idempotency_key: str | None, request_id: str) -> str:
    """EC2's ClientToken (<= 64 ASCII): the key itself when it fits, else its SHA-256."""
    if idempotency_key is None:
        return request_id
    if PLAIN_TOKEN.fullmatch(idempotency_key) and not URL_PREFIX.match(idempotency_key):
        return idempotency_key
    # Too long, or shaped like an option / a file:// or http:// value the AWS CLI would act on.
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


@dataclass(frozen=True)
class Transition:
    script: str
    response_key: str
    allowed: frozenset[InstanceState]  # states from which EC2 is asked
    noop: frozenset[InstanceState]  # states in which the request is already satisfied


S = InstanceState
TRANSITIONS = {
    # "stopping" is asked too: our record may lag EC2, which answers 409 if it really is stopping.
    "start": Transition("start_instance.sh", "StartingInstances",
                        frozenset({S.STOPPED, S.STOPPING}), frozenset({S.PENDING, S.RUNNING})),
    "stop": Transition("stop_instance.sh", "StoppingInstances",
                       frozenset({S.PENDING, S.RUNNING}), frozenset({S.STOPPING, S.STOPPED})),
    "delete": Transition("destroy_instance.sh", "TerminatingInstances",
                         frozenset({S.PENDING, S.RUNNING, S.STOPPING, S.STOPPED}),
                         frozenset({S.SHUTTING_DOWN, S.TERMINATED})),
}


MAX_USER_TAGS = 46  # EC2's 50 per resource, less Name, ManagedBy, RequestId (and one to spare)


class InstanceService:
    def __init__(self, settings: Settings, db: Database, aws: AwsCli) -> None:
        self.settings = settings
        self.db = db
        self.aws = aws
        self.catalog = Catalog()
        self.recorder = Recorder(settings, db, self.login_user_of)
        self.reconciler = Reconciler(settings, db, aws, self.recorder)
        self.reconciler.tidy = self.drop_ended_ssh_groups
        # A reservation outlives the longest create or start (a replica that died mid-call leaves its own).
        self.spending = Spending(settings.budget_usd, PriceBook.load(settings.prices_file), db, settings.region,
                                 settings.endpoint_key, max(600.0, 2 * settings.aws_cli_timeout_seconds))
        self.spending.enforcement = settings.budget_enforcement
        self.spending.account = lambda: self.recorder.account
        self.spending.budget_setting = "BUDGET_USD" if settings.budget_from.startswith("BUDGET_USD") else \
            "SANDBOX_BUDGET_USD"
        self.on_stop_at_changed = lambda: None  # the auto-stop scheduler's wake-up, set by the app
        self.on_alarms_changed = lambda: None  # the idle-alarm keeper's wake-up, set by the app
        self.metrics = Metrics(aws)
        self.coalescer = Coalescer(aws, settings.transition_window_ms / 1000)
        self.account_plan = AccountPlan(aws, emulated=bool(settings.ec2_endpoint_url))
        # One mutation of an instance at a time, across replicas too (a holder's call ends within the CLI timeout).
        self.locks = InstanceLocks(db, max(120.0, 2 * settings.aws_cli_timeout_seconds))
        self._catalog_lock = asyncio.Lock()
        self.my_ip = MyIp(settings.my_ip_url, sandbox=bool(settings.ec2_endpoint_url))
        self._inflight: dict[str, asyncio.Future] = {}
        self._resolving: set[asyncio.Task] = set()  # lookups of launches whose answer never came
        # Which EC2 this process talks to: rows, launches and caches are kept per (endpoint, region).
        self.region = settings.region
        self.endpoint = settings.endpoint_key
        self.catalog_scope = f"{self.endpoint or 'aws'}|{self.region}"

    # -- AMI catalogue -------------------------------------------------------------------------
    def login_user_of(self, ami_id: str | None) -> str:
        info = self.catalog.amis.get(ami_id or "")
        return info.login_user if info else login_user_for(None)

    async def load_catalog(self) -> None:
        """Load the cached catalogue from SQLite (no process)."""
        amis, types, resolved_at = await asyncio.to_thread(self.db.load_catalog, self.catalog_scope)
        self.catalog = Catalog.from_rows(amis, types, resolved_at)

    async def ensure_catalog(self) -> Catalog:
        """The catalogue, fetched from EC2 only when missing or older than AMI_CATALOG_TTL_HOURS."""
        if self.catalog.is_fresh(self.settings.ami_catalog_ttl_hours):
            return self.catalog
        async with self._catalog_lock:
            if not self.catalog.is_fresh(self.settings.ami_catalog_ttl_hours):
                fetched = await Catalog.fetch(self.aws, self.settings.free_tier_amis)
                await asyncio.to_thread(self.db.save_catalog, self.catalog_scope, *fetched.to_rows())
                await self.load_catalog()
                log.info("AMI catalogue: %d AMIs, free-tier types %s", len(self.catalog.amis),
                         ", ".join(sorted(self.catalog.types)))
        return self.catalog

    # -- SSH access -----------------------------------------------------------------------------
    async def resolve_ssh_from(self, asked: str | None, legacy: bool = False, client_ip: str | None = None) -> str:
        """The rule to put in force: a CIDR or "none". Unset: my_ip, or SSH_INGRESS_CIDR for the original API's
        create_security_group: true. my_ip becomes this host's public IPv4 as a /32 (MY_IP_URL)."""
        wanted = asked if asked is not None else self.settings.ssh_ingress_cidr if legacy else "my_ip"
        if wanted == "my_ip":
            return f"{await self.my_ip.get(client_ip)}/32"
        return wanted

    async def _make_ssh_group(self, request_id: str, ssh_from: str, region: str | None = None) -> str:
        """A security group for this launch alone (tagged ManagedBy and RequestId), with the SSH rule in it:
        two `aws` processes (one for "none"). A retry of a lost launch finds the group the first attempt made."""
        name = ssh_group_name(request_id)
        try:
            created = await self.aws.run("create_security_group.sh", "--name", name, "--description",
                                         "SSH to one instance (ec2-creator-local)", "--request-id", request_id,
                                         region=region)
            group_id = created["GroupId"]
        except ApiError as exc:
            if exc.aws_error_code != "InvalidGroup.Duplicate":
                raise
            found = (await self.aws.run("find_security_group.sh", "--name", name, region=region)).get(
                "SecurityGroups") or []
            if not found:
                raise
            group_id = found[0]["GroupId"]
        if ssh_from != "none":
            await self._authorize(group_id, ssh_from, region)
        return group_id

    async def _authorize(self, group_id: str, cidr: str, region: str | None) -> None:
        try:
            await self.aws.run("authorize_ssh.sh", "--group-id", group_id, "--cidr", cidr, region=region)
        except ApiError as exc:
            if exc.aws_error_code != "InvalidPermission.Duplicate":
                raise

    async def _drop_ssh_group(self, group_id: str, region: str | None) -> bool:
        """Delete a group this service made for one instance; False while EC2 still holds it (retried later)."""
        try:
            await self.aws.run("delete_security_group.sh", "--group-id", group_id, region=region)
        except ApiError as exc:
            if exc.aws_error_code in ("InvalidGroup.NotFound", "InvalidGroupId.NotFound"):
                return True
            if exc.aws_error_code != "DependencyViolation":
                log.warning("Deleting security group %s failed (%s); retried at a later sweep", group_id, exc)
            return False
        return True

    async def set_ssh_access(self, instance_id: str, asked: str, client_ip: str | None = None) -> InstanceRow:
        """Replace the SSH rule of an instance's own group: authorize the new one, then revoke the old one (two
        `aws` processes; none when it is already in force). Never a new instance."""
        async with self.locks.hold([instance_id]):
            row = await asyncio.to_thread(self.db.require_instance, instance_id)
            if row["state"].ended or row["state"] == S.SHUTTING_DOWN:
                raise Conflict(f"Instance {instance_id} is {row['state']}: its SSH access can no longer change.",
                               code="wrong_state")
            group_id = row["ssh_group"]
            if not group_id:
                raise Conflict(f"Instance {instance_id} has no security group of its own (created before ssh_from, "
                               "or not through this API); its SSH access cannot be changed here.",
                               code="no_ssh_group")
            self._check_reachable(row)
            cidr = await self.resolve_ssh_from(asked, client_ip=client_ip)
            old = row["ssh_from"]
            if cidr != old:
                with self.reconciler.mutating():
                    if cidr != "none":
                        await self._authorize(group_id, cidr, row["region"])
                    if old and old != "none":
                        try:
                            await self.aws.run("revoke_ssh.sh", "--group-id", group_id, "--cidr", old,
                                               region=row["region"])
                        except ApiError as exc:
                            # The new rule is in, the old one too: the record keeps the old one, so a retry of
                            # this PUT authorizes (already there) and revokes again.
                            if exc.aws_error_code != "InvalidPermission.NotFound":
                                raise
                    await asyncio.to_thread(self._write_ssh_from, row, cidr)
            return await asyncio.to_thread(self.db.require_instance, instance_id)

    def _write_ssh_from(self, row: InstanceRow, cidr: str) -> None:
        fields = self.recorder.ssh_fields(row["public_ip"], {**row, "ssh_from": cidr})
        self.db.update_instance(row["id"], {"ssh_from": cidr, **fields, "updated_at": utcnow()})

    async def drop_ended_ssh_groups(self) -> int:
        """Delete the own groups of instances that are gone (EC2 refuses while their network interface lingers:
        DependencyViolation, tried again at the next sweep). Never raises; returns how many were deleted."""
        rows = await asyncio.to_thread(self.db.list_instances, True)
        done = 0
        for row in rows:
            account = self.reconciler.account
            if not (row["ssh_group"] and row["state"] == S.TERMINATED and row["endpoint"] == self.endpoint
                    and not (account and row["account"] not in (None, account))):
                continue  # another EC2's (or account's) group is left to a server talking to it
            try:
                dropped = await self._drop_ssh_group(row["ssh_group"], row["region"])
            except Exception as exc:  # noqa: BLE001 - a sweep never fails for a group
                log.warning("Deleting security group %s failed: %s", row["ssh_group"], exc)
                continue
            if dropped:
                await asyncio.to_thread(self.db.update_instance, row["id"], {"ssh_group": None})
                done += 1
        return done

    # -- create ----------------------------------------------------------------------------------
    async def create(self, req: InstanceCreate, idempotency_key: str | None = None,
                     caller: Caller = LOCAL, client_ip: str | None = None) -> tuple[InstanceRow, bool]:
        """Check policy, launch with one `aws` process, record what EC2 answered (owned by the caller).

        Returns (instance, replayed). With an Idempotency-Key, a repeat of the same request gets the
        same instance without a second launch; concurrent repeats wait for the first. A key is its
        caller's: someone else's is a 409, as a key used with another body is.
        """
        # Checked in this order: the schema (before this is called), the free-tier policy, then the budget.
        check_static(self.settings.allowed_instance_types, req.instance_type, req.storage_gb)
        if req.schedule is not None:
            await asyncio.to_thread(self.check_schedule, req.schedule)
        body_hash = request_hash(req)  # the body as sent: a replay matches whatever the defaults are now
        req, auto_default = self.with_default_auto_stop(req)
        catalog = await self.ensure_catalog()  # cached: a process only when missing or stale
        ami = check_catalog(catalog, self.settings.allowed_instance_types, req.ami, req.instance_type, self.place)
        rates = self.spending.rates_for(req.instance_type, req.storage_gb)  # 400 price_unknown
        # The budget: checked here, and again, reserving, when the launch is claimed. A replay of a key already
        # holding a launch launches nothing: it is never refused.
        if not (idempotency_key and (idempotency_key in self._inflight or
                                     await asyncio.to_thread(self._holds_launch, idempotency_key))):
            charges = await asyncio.to_thread(self.create_charges, req, rates, auto_default)
            await asyncio.to_thread(self.spending.admit, None, charges, f"Creating this {req.instance_type}")
        # Who may reach port 22 (my_ip: this host's address, fetched from MY_IP_URL, cached): before anything is sent.
        ssh_from = await self.resolve_ssh_from(req.ssh_from, req.create_security_group, client_ip)
        if idempotency_key is None:
            with self.reconciler.mutating():
                return await self._launch(req, ami, None, body_hash, rates, caller, ssh_from, auto_default), False
        inflight = self._inflight.get(idempotency_key)
        if inflight is not None:
            await asyncio.shield(inflight)  # the first request with this key is running: share its outcome
            return await self._replay(idempotency_key, body_hash, caller), True
        future = asyncio.get_running_loop().create_future()
        self._inflight[idempotency_key] = future
        try:
            with self.reconciler.mutating():
                return await self._launch(req, ami, idempotency_key, body_hash, rates, caller, ssh_from,
                                          auto_default), False
        except _AlreadyClaimed:
            return await self._replay(idempotency_key, body_hash, caller), True
        finally:
            del self._inflight[idempotency_key]
            future.set_result(None)

    def _holds_launch(self, idempotency_key: str) -> bool:
        launch = self.db.get_launch_by_key(idempotency_key)
        return launch is not None and launch["status"] in (LaunchStatus.PENDING, LaunchStatus.LAUNCHED)

    async def _replay(self, idempotency_key: str, body_hash: str, caller: Caller = LOCAL) -> InstanceRow:
        launch = await asyncio.to_thread(self.db.get_launch_by_key, idempotency_key)
        # Another person's key says nothing of their request: the same answer as a key used with another body.
        if launch is None or launch["body_hash"] != body_hash or not caller.may_replay(launch["owner"]):
            raise Conflict("This Idempotency-Key was already used with a different request body (or by someone "
                           "else); use a new key.", code="idempotency_key_reused")
        if launch["status"] == LaunchStatus.LAUNCHED and launch["instance_id"]:
            row = await asyncio.to_thread(self.db.get_instance, launch["instance_id"])
            if row is not None:
                return row
        if launch["status"] in (LaunchStatus.FAILED, LaunchStatus.LOST):
            raise Conflict(f"The request with this Idempotency-Key failed ({launch['error']}); retry to try again.",
                           code="idempotent_request_failed")
        raise Conflict("A request with this Idempotency-Key is still being resolved; retry in a few seconds.",
                       code="launch_in_progress", retry_after=5)

    @property
    def place(self) -> str:
        """Where the free-tier catalogue's refusals say the AMI or type is missing."""
        return SANDBOX_PLACE if self.settings.ec2_endpoint_url else f"in {self.region}"

    def with_default_auto_stop(self, req: InstanceCreate) -> tuple[InstanceCreate, bool]:
        """The request with DEFAULT_AUTO_STOP_MINUTES where it gives no auto_stop_minutes, and whether it did."""
        if "auto_stop_minutes" in req.model_fields_set:
            return req, False
        return req.model_copy(update={"auto_stop_minutes": self.settings.default_auto_stop_minutes}), True

    def planned_stop(self, req: InstanceCreate, auto_default: bool, now: datetime) -> tuple[str | None, str | None]:
        """A new instance's planned stop (its auto-stop or its schedule's) and its source; None: none planned."""
        return self.planner.plan({"schedule": launch_tags(req).get("Schedule"),
                                  "auto_stop_minutes": req.auto_stop_minutes,
                                  "auto_stop_default": int(auto_default)}, now, True)

    def create_charges(self, req: InstanceCreate, rates: Rates, auto_default: bool) -> Charges:
        """A create commits its run (until its planned stop: its auto-stop or its schedule's; none: to this
        period's end) in every period it spans."""
        now = clock.now()
        stop_at, _ = self.planned_stop(req, auto_default, now)
        return rates.charges(now, parse_time(stop_at), req.associate_public_ip, horizon(now))

    @property
    def planner(self) -> StopPlanner:
        """When runs stop (the recorder's: the auto-stop, and with schedules their stops)."""
        return self.recorder.planner

    def check_schedule(self, name: str) -> None:
        """422 unknown_schedule unless a schedule called `name` exists."""
        if not self.planner.exists(name):
            raise ApiError(f"No schedule named {name!r}: GET /schedules lists them (an admin creates one with POST "
                           "/schedules).", code="unknown_schedule", status_code=422)

    async def _launch(self, req: InstanceCreate, ami, idempotency_key: str | None, body_hash: str,
                      rates: Rates, caller: Caller = LOCAL, ssh_from: str | None = None,
                      auto_default: bool = False) -> InstanceRow:
        body = {"request": req.model_dump(), "ami_id": ami.ami_id, "login_user": ami.login_user,
                "root_device": ami.root_device_name, "ssh_from": ssh_from, "auto_stop_default": int(auto_default)}
        # The launch row is written BEFORE the aws process starts: a crash leaves a trace to resolve.
        claims: list[LaunchRow] = []

        def claim() -> tuple[LaunchRow, bool]:
            launch, claimed = self.db.claim_launch(uuid.uuid4().hex, idempotency_key, body_hash, body, self.region,
                                                   self.endpoint, caller.name, caller.is_admin)
            claims.append(launch)
            return launch, claimed

        # Claimed and admitted as one step (Spending.admit_launch): refused, it is recorded failed (on PostgreSQL
        # the refusal rolled the claim back: the update finds nothing).
        charges = await asyncio.to_thread(self.create_charges, req, rates, auto_default)
        try:
            launch, claimed = await asyncio.to_thread(self.spending.admit_launch, claim, charges,
                                                      f"Creating this {req.instance_type}")
        except ApiError as exc:
            if claims:
                await asyncio.to_thread(self.db.finish_launch, claims[0]["request_id"], LaunchStatus.FAILED, None,
                                        exc.code)
            raise
        if not claimed:
            raise _AlreadyClaimed()
        request_id = launch["request_id"]
        # A retry of a lost launch sends what the first attempt sent (same AMI id, client token and
        # RequestId tag), so EC2 can recognise it; a new launch sends what was just resolved.
        body = {**body, **json.loads(launch["body"])}
        self.recorder.in_flight.add(request_id)  # no sweep judges it overdue while it is sent
        try:
            return await self._send_launch(req, body, request_id, idempotency_key, caller.name)
        finally:
            self.recorder.in_flight.discard(request_id)
            await asyncio.to_thread(self.spending.release, request_id)  # recorded (and in the ledger), or not launched
            self.on_stop_at_changed()
            if req.stop_when_idle is not None:
                await asyncio.to_thread(self.db.kv_set, USED_KEY, "1")
                self.on_alarms_changed()

    async def _send_launch(self, req: InstanceCreate, body: dict, request_id: str,
                           idempotency_key: str | None, owner: str | None = None) -> InstanceRow:
        group_id = None
        try:
            # A launch claimed before ssh_from existed (a retry after an upgrade) has none: no group, as then.
            if body.get("ssh_from") is not None:
                group_id = await self._make_ssh_group(request_id, body["ssh_from"])
            args = ["--name", req.name, "--ami", body["ami_id"], "--type", req.instance_type,
                    "--storage-gb", str(req.storage_gb), "--root-device", body["root_device"],
                    "--request-id", request_id, "--client-token", client_token(idempotency_key, request_id)]
            for key, value in launch_tags(req).items():
                args += ["--tag", key, value]
            if T_FAMILY.fullmatch(req.instance_type):
                args += ["--cpu-credits", "standard"]
            if not req.associate_public_ip:
                args += ["--no-public-ip"]
            doc = await self.aws.run("create_instance.sh", *args,
                                     *(["--security-group-id", group_id] if group_id else []))
        except ApiError as exc:
            if not outcome_unknown(exc):  # EC2 refused, or nothing was sent: certainly no instance
                await asyncio.to_thread(self.db.finish_launch, request_id, LaunchStatus.FAILED, None,
                                        exc.aws_error_code or exc.code)
                if group_id:  # made for an instance that will never be: delete it now (best effort)
                    await self._drop_ssh_group(group_id, None)
            else:
                # EC2 may have launched it: the launch stays pending, holding what it was admitted for, until
                # it is resolved, which starts now: a lookup by its RequestId (and a sweep).
                self._resolve_soon(request_id)
            raise
        instances = doc.get("Instances") or []
        if not instances or not instances[0].get("InstanceId"):
            # EC2 may have launched something: leave the launch pending, and look for it by its request id now.
            self._resolve_soon(request_id)
            raise UpstreamError("EC2 answered the launch without an instance; the reconciler will look for it "
                                "by its request id.", code="aws_bad_output")
        instance_id = instances[0]["InstanceId"]
        idle = req.stop_when_idle.model_dump() if req.stop_when_idle else None
        row = {
            "id": instance_id, "name": req.name, "ami": body["ami_id"],
            "instance_type": req.instance_type, "storage_gb": req.storage_gb, "security_group_id": group_id,
            "ssh_group": group_id, "ssh_from": body.get("ssh_from") if group_id else None,
            "tags": launch_tags(req), "backend_used": self.settings.backend, "login_user": body["login_user"],
            "request_id": request_id, "launched_at": stored_time(instances[0].get("LaunchTime")),
            "auto_stop_minutes": req.auto_stop_minutes, "associate_public_ip": int(req.associate_public_ip),
            "stop_when_idle": idle, "idle_alarm": idle_alarm_view(instance_id, canonical_json(idle), None),
            "owner": owner, "auto_stop_default": body.get("auto_stop_default", 0),
            "schedule": launch_tags(req).get("Schedule"), "schedule_since": utcnow(),
        }
        try:
            recorded = await asyncio.to_thread(self.recorder.record_launch, instances[0], row)
        except Exception as exc:  # noqa: BLE001 - EC2 has the instance: never answer a bare 500
            log.error("EC2 launched %s (request %s) but recording it failed: %s", instance_id, request_id, exc)
            self.reconciler.request_sweep()
            retry = ("a retry with the same Idempotency-Key returns it." if idempotency_key else
                     "do NOT send this create again: without an Idempotency-Key a retry launches another one.")
            raise Unavailable(
                f"EC2 launched instance {instance_id}, but the local record could not be written ({exc}). It "
                f"is recorded as soon as the database works again (the reconciler finds it by its request id); "
                f"{retry}", code="record_failed", retry_after=5 if idempotency_key else None,
                extra={"instance_id": instance_id}) from None
        self.reconciler.request_sweep()
        return recorded

    def _resolve_soon(self, request_id: str) -> None:
        """Look up a launch whose answer never came, in the background (the caller gets its error now)."""
        self.reconciler.request_sweep()
        task = asyncio.create_task(self.reconciler.resolve_launch(request_id, self.region),
                                   name=f"resolve-{request_id}")
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    async def stop_background(self) -> None:
        """At shutdown: launches still being looked up are left to the next start's sweep."""
        for task in list(self._resolving):
            await cancel_and_wait(task)

    # -- start / stop / delete -----------------------------------------------------------------
    async def transition(self, instance_id: str, action: str, actor: str | None = None) -> tuple[InstanceRow, bool]:
        """Apply `action` unless the state makes it a no-op (False) or impossible (409); its event names `actor`."""
        rule = TRANSITIONS[action]
        async with self.locks.hold([instance_id]):
            return await self._transition_locked(instance_id, action, rule, actor)

    async def _transition_locked(self, instance_id: str, action: str,
                                 rule: Transition, actor: str | None = None) -> tuple[InstanceRow, bool]:
        with self.reconciler.mutating():
            row = await asyncio.to_thread(self.db.require_instance, instance_id)
            if not self._check_transition(row, action, rule):
                return row, False
            request_id = uuid.uuid4().hex
            if action == "start":  # stop and delete only lower cost: always allowed
                await asyncio.to_thread(self.admit_starts, request_id, [row])
            try:
                return await self._send_transition(row, action, rule, request_id, actor)
            finally:
                await asyncio.to_thread(self.spending.release, request_id)  # recorded, or not started
                self._after_transitions(action, [row])

    def _check_transition(self, row: InstanceRow, action: str, rule: Transition) -> bool:
        """Whether EC2 must be asked (False: already done); 409/400 when it cannot be."""
        state = row["state"]
        if state in rule.noop:
            return False
        if state not in rule.allowed:
            raise Conflict(f"Cannot {action} instance {row['id']}: it is {state}.", code="wrong_state")
        self._check_reachable(row)
        if action == "start":
            self.check_start_policy(row)
        return True

    def _after_transitions(self, action: str, rows: list[InstanceRow]) -> None:
        self.on_stop_at_changed()
        if action == "delete" and any(r["alarm_held"] is not None for r in rows):
            self.on_alarms_changed()  # their alarms go with them

    async def _send_transition(self, row: InstanceRow, action: str, rule: Transition,
                               request_id: str, actor: str | None = None) -> tuple[InstanceRow, bool]:
        """One instance's transition, coalesced with others of its kind into one `aws` process."""
        instance_id = row["id"]
        self.recorder.transitions.add(instance_id)  # a sweep meanwhile leaves this change to our record
        try:
            try:
                change = await self.coalescer.submit(rule.script, rule.response_key, instance_id, row["region"])
            except ApiError as exc:
                self.recorder.transitions.discard(instance_id)
                return await self._refused(row, action, request_id, exc, actor)
            recorded = await self._record_transition(row, change, action, request_id, actor)
        finally:
            self.recorder.transitions.discard(instance_id)
        self.reconciler.request_sweep()
        return recorded, True

    async def _refused(self, row: InstanceRow, action: str, request_id: str,
                       exc: ApiError, actor: str | None = None) -> tuple[InstanceRow, bool]:
        if exc.aws_error_code == "InvalidInstanceID.NotFound":
            return await self._not_found(row, action, request_id, exc, actor)
        if exc.status_code == 409 or outcome_unknown(exc):
            self.reconciler.request_sweep()  # our recorded state is behind EC2's, or EC2 may have acted
        raise exc

    async def _record_transition(self, row: InstanceRow, change: dict, action: str, request_id: str,
                                 actor: str | None = None) -> InstanceRow:
        try:
            return await asyncio.to_thread(self.recorder.record_transition, row, change, action, request_id,
                                           "api", actor)
        except Exception as exc:  # noqa: BLE001 - EC2 acted: say so, and let the sweep record it
            self.reconciler.request_sweep()
            raise Unavailable(f"EC2 accepted the {action} of {row['id']}, but the local record could not be "
                              f"written ({exc}); the reconciler records it as soon as the database works "
                              "again.", code="record_failed", extra={"instance_id": row["id"]}) from None

    # -- bulk actions --------------------------------------------------------------------------
    async def select(self, selector: Selector, caller: Caller = LOCAL) -> list[str]:
        """The ids of the tracked instances (not terminated) a selector matches among those the caller may
        see (a user's own); more than 1,000 is a 400."""
        wanted = selector.as_filter()
        rows = await asyncio.to_thread(self.db.list_instances, wanted.asks_for_ended)
        account = self.reconciler.account
        # This server's EC2 only: another endpoint's or account's instances could only answer 409. Every region
        # of it: an action is sent to the region the instance was recorded in.
        ids = [r["id"] for r in rows if wanted.matches(r) and caller.may_see(r["owner"])
               and r["endpoint"] in (None, self.endpoint)
               and not (account and r["account"] not in (None, account))]
        if len(ids) > MAX_BULK:
            raise PolicyViolation(f"The selector matches {len(ids)} instances; one action takes at most {MAX_BULK}. "
                                  "Narrow it (state, tag, name) or send ids.", code="too_many_instances")
        return ids

    async def bulk(self, action: str, ids: list[str], caller: Caller = LOCAL) -> list[dict]:
        """One action on many instances: one `aws` process per region (and per refused id EC2 names), a
        result per instance. Starts are checked against the budget as one set (409 for the whole request).
        Someone else's instance is a 404 line, as an unknown id is."""
        rule = TRANSITIONS[action]
        ids = list(dict.fromkeys(ids))
        results: dict[str, dict] = {}
        async with self.locks.hold(ids):  # taken in one order: no deadlock with another bulk
            with self.reconciler.mutating():
                rows = await asyncio.to_thread(self.db.get_instances, ids)
                to_send: list[InstanceRow] = []
                for instance_id in ids:
                    row = rows.get(instance_id)
                    if row is not None and not caller.may_see(row["owner"]):
                        row = None  # not the caller's: answered exactly as an id nobody tracks
                    try:
                        if row is None:
                            raise NotFound(f"No instance {instance_id!r} is tracked.", code="instance_not_found")
                        if self._check_transition(row, action, rule):
                            to_send.append(row)
                        else:
                            results[instance_id] = _result(row, 200)
                    except ApiError as exc:
                        results[instance_id] = _result(row, exc.status_code, exc, instance_id)
                key = f"bulk:{uuid.uuid4().hex}"
                if action == "start" and to_send:
                    await asyncio.to_thread(self.admit_starts, key, to_send)  # 409 budget_exceeded: nothing sent
                try:
                    results |= await self._send_bulk(action, rule, to_send, caller.name)
                finally:
                    await asyncio.to_thread(self.spending.release, key)
                    if to_send:
                        self._after_transitions(action, to_send)
                        self.reconciler.request_sweep()
        return [results[i] for i in ids]

    async def _send_bulk(self, action: str, rule: Transition, rows: list[InstanceRow],
                         actor: str | None = None) -> dict[str, dict]:
        results: dict[str, dict] = {}
        batch = {r["id"] for r in rows}
        self.recorder.transitions |= batch
        try:
            for region, chunk in by_region(rows):
                answered, failed = await send_batch(self.aws, rule.script, rule.response_key, list(chunk),
                                                    region)
                request_id = uuid.uuid4().hex
                for instance_id, change in answered.items():
                    try:
                        recorded = await self._record_transition(chunk[instance_id], change, action, request_id,
                                                                 actor)
                        results[instance_id] = _result(recorded, 202)
                    except ApiError as unrecorded:
                        results[instance_id] = _result(chunk[instance_id], unrecorded.status_code, unrecorded)
                for instance_id, error in failed.items():
                    self.recorder.transitions.discard(instance_id)
                    try:
                        row, changed = await self._refused(chunk[instance_id], action, request_id, error,
                                                           actor)
                        results[instance_id] = _result(row, 202 if changed else 200)
                    except ApiError as refused:
                        results[instance_id] = _result(chunk[instance_id], refused.status_code, refused)
        finally:
            self.recorder.transitions -= batch
        return results

    def _rates_of(self, row: InstanceRow) -> Rates:
        rates = Rates.of(self.spending.book, row["instance_type"], row["region"], row["storage_gb"])
        return rates if rates is not None else self.spending.rates_for(row["instance_type"] or "?", 0)

    def admit_starts(self, key: str, rows: list[InstanceRow]) -> None:
        """A start commits compute (and IPv4) until its auto-stop or the period end; storage is counted already.
        Several starts are admitted as one set, or none is."""
        now = clock.now()
        spans = horizon(now)
        each = [self._rates_of(row).charges(now, parse_time(self.planner.plan(row, now, True)[0]),
                                            row["associate_public_ip"] != 0, spans, storage=False)
                for row in rows]
        what = f"Starting {rows[0]['id']}" if len(rows) == 1 else f"Starting these {len(rows)} instances"
        self.spending.admit(key, sum(each[1:], each[0]), what)

    # -- CloudWatch ------------------------------------------------------------------------------
    async def instance_metrics(self, row: InstanceRow, metric: str, minutes: int, period: int) -> dict:
        """Datapoints of one metric: one `aws` process per series and cache period."""
        self._check_reachable(row)
        return await self.metrics.series(row, metric, minutes, period)

    # -- auto-stop ---------------------------------------------------------------------------------
    async def patch(self, instance_id: str, change: InstancePatch) -> InstanceRow:
        """Any of: a new name and tags (one `aws` process to set, one to remove), and a new auto-stop delay
        (re-arms stop_at from now when it runs) or a new stop_at for this run. Whatever would make it run
        longer is checked against the budget like a start. Everything is checked before EC2 is asked."""
        async with self.locks.hold([instance_id]):
            row = await asyncio.to_thread(self.db.require_instance, instance_id)
            if change.schedule is not None:
                await asyncio.to_thread(self.check_schedule, change.schedule)
            to_set, to_delete = self._tag_changes(row, change)
            fields = await asyncio.to_thread(self._stop_fields, row, change, to_set, to_delete)
            fields |= self._idle_fields(row, change)
            if fields.get("stop_when_idle"):
                await asyncio.to_thread(self.db.kv_set, USED_KEY, "1")
            if to_set or to_delete or "stop_when_idle" in fields:
                if row["state"].ended or ("stop_when_idle" in fields and row["state"] == S.SHUTTING_DOWN):
                    raise Conflict(f"Instance {instance_id} is {row['state']}: its tags and alarm can no longer "
                                   "change.", code="wrong_state")
                self._check_reachable(row)
            key = f"extend:{instance_id}:{uuid.uuid4().hex}"
            try:
                if row["state"] in RUNNING and "stop_at" in fields:
                    await asyncio.to_thread(self._admit_extension, key, row, fields["stop_at"])
                if to_set or to_delete:
                    await self._send_tags(row, to_set, to_delete)
                    tags = {k: v for k, v in {**row["tags"], **to_set}.items()
                            if k not in to_delete and k not in RESERVED_TAG_KEYS}
                    fields |= {"tags": tags, "name": to_set.get("Name", row["name"])}
                if fields:
                    await asyncio.to_thread(self.db.update_instance, instance_id, {**fields, "updated_at": utcnow()})
            finally:
                await asyncio.to_thread(self.spending.release, key)  # written: the ledger counts it from now on
            if "stop_at" in fields or "auto_stop_minutes" in fields or "schedule" in fields:
                self.on_stop_at_changed()
            if "stop_when_idle" in fields:
                self.on_alarms_changed()
            return await asyncio.to_thread(self.db.require_instance, instance_id)

    async def snooze(self, instance_id: str, minutes: int | None, until: datetime | None,
                     actor: str | None = None) -> InstanceRow:
        """Push the next stop of a running instance (its schedule's or its auto-stop's) by `minutes`, or to `until`;
        admitted by the budget like a longer auto-stop. It holds until that stop (the schedule then resumes at its
        next edge). No `aws` process."""
        async with self.locks.hold([instance_id]):
            row = await asyncio.to_thread(self.db.require_instance, instance_id)
            if row["state"] not in RUNNING:
                raise Conflict(f"Instance {instance_id} is {row['state']}: a snooze pushes the stop of a running "
                               "instance.", code="wrong_state")
            current = parse_time(row["stop_at"])
            if current is None:
                raise Conflict(f"Instance {instance_id} has no stop due (no auto-stop, no scheduled stop): there is "
                               "nothing to snooze.", code="no_stop_due")
            now = clock.now()
            try:
                new = current + timedelta(minutes=minutes) if minutes else until.astimezone(UTC)  # type: ignore[union-attr]
            except OverflowError:  # year 1 or 9999 once in UTC: out of any range
                new = now if until is not None and until.year < 2 else now + timedelta(days=8)
            if new <= now:
                raise PolicyViolation(f"The snoozed stop ({new.strftime(TIME_FORMAT)}) must be in the future (to stop "
                                      f"it now: POST /instances/{instance_id}/stop).", code="snooze_in_past")
            landed = await asyncio.to_thread(self.planner.snoozed, row, current, new)  # a later period: its stop
            source = SCHEDULE if landed != new else row["stop_source"] or AUTO_STOP
            new = landed
            if new > now + timedelta(days=7):
                raise PolicyViolation("A snooze pushes the next stop at most 7 days from now.", code="snooze_too_far")
            stop_at = new.strftime(TIME_FORMAT)
            key = f"snooze:{instance_id}:{uuid.uuid4().hex}"
            try:
                await asyncio.to_thread(self._admit_extension, key, row, stop_at)
                await asyncio.to_thread(self._write_snooze, row, stop_at, source, actor)
            finally:
                await asyncio.to_thread(self.spending.release, key)
            self.on_stop_at_changed()
            return await asyncio.to_thread(self.db.require_instance, instance_id)

    def _write_snooze(self, row: InstanceRow, stop_at: str, source: str, actor: str | None) -> None:
        with self.db.transaction():
            self.db.update_instance(row["id"], {"stop_at": stop_at, "snoozed_until": stop_at, "stop_source": source,
                                                "updated_at": utcnow()})
            self.db.add_event(row["id"], "snoozed", None, None, "schedule", actor=actor,
                              detail=f"next stop ({source}) moved from {row['stop_at']} to {stop_at}")

    def _idle_fields(self, row: InstanceRow, change: InstancePatch) -> dict:
        """A new (or no) idle stop: recorded now, put in CloudWatch by the alarm keeper in the background."""
        if "stop_when_idle" not in change.model_fields_set:
            return {}
        setting = change.stop_when_idle.model_dump() if change.stop_when_idle else None
        if setting == row["stop_when_idle"]:
            return {}
        if row["region"] != self.region:
            raise Conflict(f"Instance {row['id']} lives in region {row['region'] or '(not recorded)'}; this server "
                           f"keeps idle alarms in {self.region}. Restart it with AWS_REGION={row['region']} to change "
                           "this instance's idle stop.", code="other_region")
        return {"stop_when_idle": setting, "alarm_attempts": 0, "alarm_retry_at": None,
                "idle_alarm": idle_alarm_view(row["id"], canonical_json(setting), row["alarm_held"])}

    def _stop_fields(self, row: InstanceRow, change: InstancePatch, to_set: dict[str, str],
                     to_delete: list[str]) -> dict:
        """What a PATCH makes of when it stops: its auto-stop, its stop_at, its schedule (the tag Schedule, set by
        `schedule` or `tags`); a running one's stop is planned again (in a worker thread: the planner reads the
        store)."""
        fields = self._auto_stop_fields(row, change)
        if "auto_stop_minutes" in fields:
            fields["auto_stop_default"] = 0
        if "stop_at" in change.model_fields_set:  # a stop time asked for: kept when the plan is made again
            fields |= {"stop_source": AUTO_STOP if change.stop_at else None, "snoozed_until": fields["stop_at"]}
        schedule = to_set.get("Schedule", None if "Schedule" in to_delete else row["schedule"])
        if schedule != row["schedule"]:
            fields |= self.recorder.attach({**row, **fields}, schedule)
        elif "auto_stop_minutes" in fields and row["state"] in RUNNING:
            fields["stop_at"], fields["stop_source"] = self.planner.plan({**row, **fields}, clock.now(), True)
            fields["snoozed_until"] = None
        return fields

    @staticmethod
    def _auto_stop_fields(row: InstanceRow, change: InstancePatch) -> dict:
        instance_id, running = row["id"], row["state"] in RUNNING
        fields: dict = {}
        if "auto_stop_minutes" in change.model_fields_set:
            minutes = change.auto_stop_minutes
            fields["auto_stop_minutes"] = minutes
            if running:
                fields["stop_at"] = in_minutes(minutes) if minutes else None
        elif "stop_at" in change.model_fields_set:
            if not running:
                raise Conflict(f"Instance {instance_id} is {row['state']}: stop_at applies to a running instance "
                               "(set auto_stop_minutes for its next start).", code="wrong_state")
            if change.stop_at is not None and change.stop_at.year > 9000:
                raise PolicyViolation("stop_at is too far in the future; use null for never.",
                                      code="stop_at_out_of_range")
            if change.stop_at is not None and change.stop_at <= clock.now():
                raise PolicyViolation("stop_at must be in the future (to stop it now: POST "
                                      f"/instances/{instance_id}/stop).", code="stop_at_in_past")
            fields["stop_at"] = change.stop_at.astimezone(UTC).strftime(TIME_FORMAT) if change.stop_at else None
        return fields

    @staticmethod
    def _tag_changes(row: InstanceRow, change: InstancePatch) -> tuple[dict[str, str], list[str]]:
        """The tags to set (Name included) and the keys to remove; reserved keys are a 400."""
        asked = change.tags or {}
        reserved = sorted(k for k in asked if k in RESERVED_TAG_KEYS or k.lower().startswith("aws:"))
        if reserved:
            raise PolicyViolation(f"Tag keys {reserved} are reserved: Name is set with `name`, ManagedBy and "
                                  "RequestId are the service's own, aws:* are AWS's.", code="reserved_tag_key")
        current = row["tags"] or {}
        to_set = {k: v for k, v in asked.items() if v is not None and current.get(k) != v}
        # A removal is always sent: the record may not know yet a tag added in the console since the last sweep.
        to_delete = sorted(k for k, v in asked.items() if v is None)
        if "name" in change.model_fields_set and change.name and change.name != row["name"]:
            to_set["Name"] = change.name
        if "schedule" in change.model_fields_set:  # the tag Schedule: `schedule` wins over tags
            to_set.pop("Schedule", None)
            if change.schedule is not None:
                if current.get("Schedule") != change.schedule or row["schedule"] != change.schedule:
                    to_set["Schedule"] = change.schedule
                to_delete = [k for k in to_delete if k != "Schedule"]
            elif "Schedule" not in to_delete:
                to_delete = sorted([*to_delete, "Schedule"])
        mine = {k for k in {**current, **to_set} if k != "Name"} - set(to_delete)
        if len(mine) > MAX_USER_TAGS:
            raise PolicyViolation(f"An instance keeps at most {MAX_USER_TAGS} tags of its own (EC2 allows 50; "
                                  "Name, ManagedBy and RequestId are ours).", code="too_many_tags")
        return to_set, to_delete

    async def _send_tags(self, row: InstanceRow, to_set: dict[str, str], to_delete: list[str]) -> None:
        """One create-tags for what is set, one delete-tags for what is removed; a sweep meanwhile keeps off."""
        instance_id = row["id"]
        with self.reconciler.mutating():
            self.recorder.transitions.add(instance_id)
            try:
                if to_set:
                    args = [a for key, value in to_set.items() for a in ("--tag", key, value)]
                    await self.aws.run("create_tags.sh", "--instance-id", instance_id, *args, region=row["region"])
                if to_delete:
                    args = [a for key in to_delete for a in ("--key", key)]
                    await self.aws.run("delete_tags.sh", "--instance-id", instance_id, *args, region=row["region"])
            except BaseException:
                self.reconciler.request_sweep()  # one half may have been applied: the sweep records EC2's tags
                raise
            finally:
                self.recorder.transitions.discard(instance_id)

    def _admit_extension(self, key: str, row: InstanceRow, new_stop_at: str | None) -> None:
        """Running longer than committed so far must fit the budget (the difference is what is checked)."""
        now = clock.now()
        spans = horizon(now)
        rates = self._rates_of(row)
        has_ip = bool(row["public_ip"])

        def until(stop_at: str | None) -> Charges:
            return rates.charges(now, parse_time(stop_at), has_ip, spans, storage=False)

        extra = until(new_stop_at) - until(row["stop_at"])
        if any(amount > 1e-12 for amount in extra.totals):
            self.spending.admit(key, extra, f"Running {row['id']} longer")

    def _check_reachable(self, row: InstanceRow) -> None:
        endpoint = row["endpoint"]
        if endpoint is not None and endpoint != self.endpoint:
            where = endpoint or "real AWS"
            raise Conflict(f"Instance {row['id']} was recorded against {where} (region {row['region']}); this "
                           f"server talks to {self.endpoint or 'real AWS'}. Restart it with that EC2_ENDPOINT_URL "
                           "(or EC2_TARGET) to manage this instance.", code="other_endpoint")
        account, ours = row["account"], self.reconciler.account
        if account and ours and account != ours:
            raise Conflict(f"Instance {row['id']} lives in AWS account {account}; this server's credentials are "
                           f"for account {ours}. Restart it with that account's AWS_PROFILE or keys to manage "
                           "this instance.", code="other_account")

    def check_start_policy(self, row: InstanceRow) -> None:
        allowed = self.settings.allowed_instance_types
        if row["instance_type"] not in allowed:
            raise PolicyViolation(
                f"Instance {row['id']} is a {row['instance_type']}, which is not allowed here "
                f"({', '.join(allowed)}, ALLOWED_INSTANCE_TYPES); starting it could leave the free tier. Stop "
                "and delete stay allowed.", code="instance_type_not_allowed")

    async def _not_found(self, row: InstanceRow, action: str, request_id: str,
                         exc: ApiError, actor: str | None = None) -> tuple[InstanceRow, bool]:
        """EC2 says NotFound. Within the consistency grace of a launch that is only "not visible
        yet" (503, retry); past it, a direct lookup decides before anything is recorded gone."""
        age = age_seconds(row["created_at"])
        grace = self.settings.consistency_grace_seconds
        if age < grace:
            raise Unavailable(f"EC2 does not show instance {row['id']} yet: it was launched {age:.0f} s ago and "
                              "EC2 is eventually consistent. Retry in a few seconds.", code="instance_not_visible_yet",
                              aws_error_code=exc.aws_error_code, retry_after=max(1, min(int(grace - age) + 1, 30)))
        fresh = await self.reconciler.confirm_instance(row)
        if fresh is not None:  # the direct lookup sees it: record what it shows, let the caller retry
            raise Unavailable(f"EC2 answered NotFound for {row['id']} but still lists it ({fresh['state']}); "
                              "retry in a few seconds.", code="instance_not_visible_yet",
                              aws_error_code=exc.aws_error_code, retry_after=5)
        account = await self.reconciler.ensure_account()
        if row["account"] != account or row["region"] is None:
            # Recorded before its account and region were kept, or in another account: this EC2 not
            # knowing it proves nothing. Nothing is recorded.
            raise Conflict(f"EC2 here (region {self.region}, account {account}) does not know instance {row['id']}, "
                           "which was recorded for another region or account (or before they were kept); nothing "
                           "was changed. Manage it with the settings it was created with.", code="other_account",
                           aws_error_code=exc.aws_error_code)
        gone = await asyncio.to_thread(self.recorder.record_gone, row, action, request_id, exc.aws_error_code,
                                       actor)
        if action == "delete":
            return gone, True
        raise Conflict(f"EC2 no longer has instance {row['id']}; it is recorded as terminated.",
                       code="instance_gone", aws_error_code=exc.aws_error_code)
