"""The one writer of observed state: turns what EC2 reports into what we record.

A background loop runs a sweep every RECONCILE_INTERVAL_SECONDS, or soon after a mutation asked
for one (requests that arrive together are batched into one sweep). A sweep is ONE
`describe-instances` call filtered on the ManagedBy tag; it is read-only towards EC2.
Mutation responses (run/start/stop/terminate) are recorded through `record_*` here too, so every
state change gets its event.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from app.config import Settings
from app.errors import ApiError
from app.services.db import Database, utcnow

log = logging.getLogger("ec2_creator.reconciler")

BATCH_DELAY_SECONDS = 0.5  # follow-up sweeps wait this long so concurrent mutations share one
MAX_BATCH_WAIT_SECONDS = 10.0  # ...and up to this long for mutations still running to finish
LAUNCH_GRACE = timedelta(minutes=10)  # a launch not seen in EC2 after this long has failed
RESERVED_TAGS = {"Name", "ManagedBy", "RequestId"}
SECURITY_GROUP_NAME = "ec2-creator-local"


@dataclass
class SweepResult:
    adopted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


def tags_of(instance: dict) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in instance.get("Tags") or [] if "Key" in t}


def _iso(value: str | None) -> str | None:
    """EC2's LaunchTime in our timestamp format (UTC, microseconds, Z)."""
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def state_of(instance: dict) -> str:
    return (instance.get("State") or {}).get("Name") or "pending"


class Reconciler:
    def __init__(self, settings: Settings, db: Database, aws, login_user_of: Callable[[str | None], str]) -> None:
        self.settings = settings
        self.db = db
        self.aws = aws
        self.login_user_of = login_user_of
        self._wake = asyncio.Event()
        self._sweep_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.mutations_in_flight = 0
        # Launches pending from before this process started were cut short by a crash: the
        # first sweep finds their instances by RequestId tag, or marks them failed.
        self.started_at = utcnow()

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
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval_seconds)
                await self._settle()
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def sweep(self) -> SweepResult:
        """One describe-instances call, then one transaction applying what it said."""
        async with self._sweep_lock:
            started = utcnow()
            t0 = time.perf_counter()
            doc = await self.aws.run("list_instances.sh")
            observed = [i for r in doc.get("Reservations", []) for i in r.get("Instances", [])]
            result = await asyncio.to_thread(self._apply_sweep, observed, started)
            log.debug("sweep: %d observed in %.2fs, %s", len(observed), time.perf_counter() - t0, result)
            return result

    # -- writers (synchronous; called in a worker thread) --------------------------------------
    def _ssh_string(self, public_ip: str | None, login_user: str | None) -> str | None:
        if not public_ip:
            return None
        return f"ssh -i {self.settings.ssh_key_path} {login_user or 'ec2-user'}@{public_ip}"

    def _observed_fields(self, row: dict, instance: dict) -> dict:
        public_ip = instance.get("PublicIpAddress")
        state = state_of(instance)
        if state in ("stopped", "stopping", "terminated", "shutting-down"):
            public_ip = public_ip if state == "stopping" else None
        return {"state": state, "public_ip": public_ip,
                "ssh_string": self._ssh_string(public_ip, row.get("login_user"))}

    def _apply(self, row: dict, instance: dict, action: str, source: str, request_id: str | None = None) -> bool:
        """Write what EC2 said of one tracked instance; True when anything changed."""
        new = self._observed_fields(row, instance)
        changed = {k: v for k, v in new.items() if row.get(k) != v}
        if not changed:
            return False
        now = utcnow()
        self.db.update_instance(row["id"], {**changed, "updated_at": now})
        if "state" in changed:
            self.db.add_event(row["id"], action, row.get("state"), new["state"], source, request_id, at=now)
        return True

    def _apply_sweep(self, observed: list[dict], started: str) -> SweepResult:
        result = SweepResult()
        seen: set[str] = set()
        with self.db.transaction():
            tracked = self.db.tracked_ids()
            pending = {launch["request_id"]: launch for launch in self.db.pending_launches()}
            for instance in observed:
                instance_id = instance.get("InstanceId")
                if not instance_id:
                    continue
                seen.add(instance_id)
                launch = pending.pop(tags_of(instance).get("RequestId", ""), None)
                if launch is not None:
                    self.db.finish_launch(launch["request_id"], "launched", instance_id)
                row = tracked.get(instance_id)
                if row is None:
                    if (launch is not None or state_of(instance) != "terminated") \
                            and self.db.get_instance(instance_id) is None:
                        self._adopt(instance, launch)
                        result.adopted.append(instance_id)
                    continue
                if (row.get("updated_at") or "") > started:
                    continue  # an API call recorded something newer after this describe began
                if self._apply(row, instance, "observe", "reconcile"):
                    result.updated.append(instance_id)
            for instance_id, row in tracked.items():
                if instance_id in seen or (row.get("updated_at") or "") > started:
                    continue
                now = utcnow()
                self.db.update_instance(instance_id, {"state": "terminated", "public_ip": None,
                                                      "ssh_string": None, "updated_at": now})
                self.db.add_event(instance_id, "gone", row.get("state"), "terminated", "reconcile", at=now)
                result.gone.append(instance_id)
            self._fail_lost_launches(pending.values())
        return result

    def _fail_lost_launches(self, unresolved) -> None:
        """Launches EC2 shows no instance for: cut short by a crash, or long overdue."""
        overdue = (datetime.now(timezone.utc) - LAUNCH_GRACE).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for launch in unresolved:
            if launch["created_at"] < self.started_at or launch["created_at"] < overdue:
                self.db.finish_launch(launch["request_id"], "failed",
                                      error="no instance with this request id exists in EC2")

    def _adopt(self, instance: dict, launch: dict | None = None) -> None:
        """Track a ManagedBy-tagged instance we have no row for (launched by hand, or lost in a crash).

        When it carries the RequestId of one of our launches, what that request asked for is kept.
        """
        tags = tags_of(instance)
        ami = instance.get("ImageId")
        asked = json.loads(launch["body"]) if launch else {}
        login_user = asked.get("login_user") or self.login_user_of(ami)
        launched = instance.get("LaunchTime") or utcnow()
        now = utcnow()
        groups = [g.get("GroupId") for g in instance.get("SecurityGroups") or []
                  if g.get("GroupName") == SECURITY_GROUP_NAME]
        row = {
            "id": instance["InstanceId"], "name": tags.get("Name"), "ami": ami,
            "instance_type": instance.get("InstanceType"), "storage_gb": asked.get("request", {}).get("storage_gb"),
            "security_group_id": groups[0] if groups else None,
            "tags": {k: v for k, v in tags.items() if k not in RESERVED_TAGS},
            "backend_used": "awscli", "login_user": login_user, "request_id": tags.get("RequestId"),
            "launched_at": launched, "created_at": _iso(launched) or now, "updated_at": now, "state": None,
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
        fields = self._observed_fields(row, instance)
        with self.db.transaction():
            self.db.finish_launch(row["request_id"], "launched", row["id"])
            if self.db.get_instance(row["id"]) is None:
                self.db.upsert_instance({**row, **fields, "created_at": now, "updated_at": now})
                self.db.add_event(row["id"], "create", None, fields["state"], "api", row.get("request_id"), at=now)
            else:  # a sweep adopted it first and holds a newer observed state: add what we asked for
                self.db.update_instance(row["id"], {**row, "updated_at": now})
        return self.db.get_instance(row["id"])

    def record_transition(self, row: dict, instance_state: dict, action: str, request_id: str | None) -> dict:
        """Record the CurrentState EC2 gave for a start/stop/terminate."""
        state = (instance_state.get("CurrentState") or {}).get("Name") or row["state"]
        with self.db.transaction():
            fresh = self.db.get_instance(row["id"]) or row
            public_ip = fresh.get("public_ip") if state in ("running", "pending", "stopping") else None
            instance = {"State": {"Name": state}, "PublicIpAddress": public_ip}
            self._apply(fresh, instance, action, "api", request_id)
        return self.db.get_instance(row["id"])

    def record_gone(self, row: dict, action: str, request_id: str | None, aws_error: str | None) -> dict:
        """EC2 says the instance does not exist: it is terminated for good."""
        with self.db.transaction():
            now = utcnow()
            self.db.update_instance(row["id"], {"state": "terminated", "public_ip": None, "ssh_string": None,
                                                "updated_at": now})
            self.db.add_event(row["id"], action, row.get("state"), "terminated", "api", request_id, aws_error, at=now)
        return self.db.get_instance(row["id"])
