"""The one writer of observed state: turns what EC2 reports, to a sweep or to one of the API's own
calls, into what we record, with an event for every state change.

EC2 is eventually consistent, so "gone" is proven, never inferred from one answer: a tracked
instance a sweep does not list is only *missing*; it becomes terminated once it has been missing for
GONE_AFTER_MISSED_SWEEPS sweeps and CONSISTENCY_GRACE_SECONDS (and is that old), and a direct
lookup by id, without the tag filter, does not find it either. A launch is resolved the same way:
found by its RequestId tag, or lost once the CLI timeout plus the grace has passed and a direct
lookup by RequestId finds nothing. Only instances of the server's own endpoint and account are
judged, each by the listing of its own region (a sweep lists every region where this endpoint has
instances or launches on record). Methods are synchronous: callers run them in a worker thread.
"""

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from app.config import Settings
from app.core import clock
from app.core.clock import TIME_FORMAT, age_seconds, stored_time, utcnow
from app.core.errors import UpstreamError
from app.instances.idle_alarms import idle_alarm_view
from app.instances.plan import AutoStopOnly, StopPlanner
from app.instances.schemas import RESERVED_TAG_KEYS, SyncResult
from app.store import Database, canonical_json
from app.store.rows import InstanceRow, InstanceState, LaunchRow, LaunchStatus

log = logging.getLogger("ec2_creator.recorder")

SECURITY_GROUP_NAME = "ec2-creator-local"
NO_PUBLIC_ADDRESS = ("no public IPv4 address (created with associate_public_ip false): reach it through a bastion "
                     "host, a VPN or SSM Session Manager")
RUNNING = (InstanceState.PENDING, InstanceState.RUNNING)


def ssh_group_name(request_id: str) -> str:
    """The security group made for one launch (and so one instance) alone."""
    return f"{SECURITY_GROUP_NAME}-{request_id}"


def tags_of(instance: dict) -> dict[str, str]:
    tags = instance.get("Tags")
    if not isinstance(tags, list):
        return {}
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags if isinstance(t, dict) and "Key" in t}


def in_minutes(minutes: float) -> str:
    """The time `minutes` from now, in our timestamp format."""
    return (clock.now() + timedelta(minutes=minutes)).strftime(TIME_FORMAT)


def state_of(instance: dict) -> InstanceState:
    """The state in a describe-instances document."""
    return InstanceState((instance.get("State") or {}).get("Name") or InstanceState.PENDING)


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


class Recorder:
    def __init__(self, settings: Settings, db: Database, login_user_of: Callable[[str | None], str]) -> None:
        self.settings = settings
        self.db = db
        self.login_user_of = login_user_of
        self.region = settings.region
        self.endpoint = settings.endpoint_key
        # The AWS account the credentials belong to: from describe answers (OwnerId), or one
        # `sts get-caller-identity` when EC2 lists nothing (the reconciler learns it). Unknown,
        # nothing is judged gone.
        self.account: str | None = None
        self.in_flight: set[str] = set()  # request ids whose run-instances this process is sending
        # Instance ids whose start/stop/terminate this process is sending: a sweep that lands between EC2's
        # answer and our record of it leaves them to that record (else it would look like an outside change).
        self.transitions: set[str] = set()
        # A launch row older than this was written by an earlier process: if a sweep finds its
        # instance first, that is an adoption of a crashed create, not this process's create.
        self.started_at = utcnow()
        # Called (from the recording thread, after the commit) when a record entered `running` with a stop_at:
        # the auto-stopper counts only running instances, so this is when it must look again (set by the app).
        self.on_stop_armed: Callable[[], None] = lambda: None
        self._local = threading.local()  # per thread: did the current transaction arm a stop_at?
        # When a run stops (the auto-stop; with schedules, app/schedules/planner.py, set by the app).
        self.planner: StopPlanner = AutoStopOnly()

    @property
    def grace(self) -> float:
        return self.settings.consistency_grace_seconds

    @property
    def launch_deadline(self) -> float:
        """Seconds after which a launch EC2 does not show can no longer appear: the CLI call is over."""
        return self.settings.aws_cli_timeout_seconds + self.grace

    def ssh_fields(self, public_ip: str | None, row: Mapping[str, Any]) -> dict[str, Any]:
        """ssh_string (a command, or None) and ssh_unavailable (why it is None): never a sentence in ssh_string."""
        if not public_ip:
            state = row.get("state")
            why = (NO_PUBLIC_ADDRESS if row.get("associate_public_ip") == 0 else
                   f"no public IPv4 address while it is {state}" if state not in RUNNING else
                   "EC2 shows no public IPv4 address yet")
            return {"ssh_string": None, "ssh_unavailable": why}
        if row.get("ssh_from") == "none":
            return {"ssh_string": None, "ssh_unavailable": f"no SSH rule (ssh_from none): PUT /instances/{row['id']}"
                                                           "/ssh-access with {\"ssh_from\": \"my_ip\"} opens port 22"}
        return {"ssh_string": f"ssh -i {self.settings.ssh_key_path} {row.get('login_user') or 'ec2-user'}@{public_ip}",
                "ssh_unavailable": None}

    def _fields(self, row: Mapping[str, Any], state: InstanceState, public_ip: str | None) -> dict[str, Any]:
        """What EC2's state and public IP make of the observed columns. Every start (into pending or
        running from any other state) arms stop_at (the planner's: auto_stop_minutes from now, or the
        schedule's next stop); leaving running clears it, and a snooze with it."""
        public_ip = public_ip if state.keeps_public_ip else None
        fields: dict[str, Any] = {"state": state, "public_ip": public_ip,
                                  **self.ssh_fields(public_ip, {**row, "state": state})}
        if state not in RUNNING:
            fields |= {"stop_at": None, "stop_source": None, "snoozed_until": None}
        elif row.get("state") not in RUNNING:
            fields["stop_at"], fields["stop_source"] = self.planner.plan(row, clock.now(), True)
            fields["snoozed_until"] = None
        if state != InstanceState.STOPPED:
            fields["next_start_at"] = None  # kept by the scheduler while it is stopped
        return fields

    def _armed(self, before: str | None, fields: Mapping[str, Any], row: Mapping[str, Any]) -> None:
        """Note a record that enters running with a stop_at (announced once the transaction commits)."""
        if fields.get("state") == InstanceState.RUNNING and before != InstanceState.RUNNING and \
                fields.get("stop_at", row.get("stop_at")):
            self._local.armed = True

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """db.transaction(), then on_stop_armed if it armed a stop_at (after the commit: a woken auto-stopper
        must see it)."""
        self._local.armed = False
        with self.db.transaction():
            yield
        if self._local.armed:
            self._local.armed = False
            self.on_stop_armed()

    def attach(self, row: Mapping[str, Any], schedule: str | None,
               state: InstanceState | None = None) -> dict[str, Any]:
        """The fields of attaching `schedule` (None: detaching) to `row`: a running one's stop is planned again
        (unless it is snoozed); the scheduler fills in the error and the next start at its next check."""
        now = clock.now()
        fields: dict[str, Any] = {"schedule": schedule, "schedule_since": now.strftime(TIME_FORMAT),
                                  "schedule_error": None, "next_start_at": None}
        state = state or row.get("state")
        snoozed = row.get("snoozed_until") and row["snoozed_until"] > now.strftime(TIME_FORMAT)
        if state in RUNNING and row.get("state") in RUNNING and not snoozed:
            fields["stop_at"], fields["stop_source"] = self.planner.plan({**row, **fields}, now, False)
        return fields

    def _observed_fields(self, row: Mapping[str, Any], instance: dict) -> dict[str, Any]:
        return self._fields(row, state_of(instance), instance.get("PublicIpAddress"))

    def _apply(self, row: InstanceRow, instance: dict, action: str, source: str) -> bool:
        """Record what a describe-instances answer says of one instance (its tags and name included)."""
        return self.observe(row, state_of(instance), instance.get("PublicIpAddress"), action, source,
                            tags=tags_of(instance) if isinstance(instance.get("Tags"), list) else None)

    def observe(self, row: InstanceRow, state: InstanceState, public_ip: str | None, action: str, source: str,
                request_id: str | None = None, tags: dict[str, str] | None = None, actor: str | None = None) -> bool:
        """Record an instance's state and public IP (and tags, when given) as EC2 gave them; True when
        anything public changed. actor: who asked for it through the API (its event keeps the name)."""
        attached: dict[str, Any] = {}
        if tags is not None and tags.get("Schedule") != row.get("schedule"):  # the tag as EC2 holds it is the truth
            attached = self.attach(row, tags.get("Schedule"), state)
        new = {**attached, **self._fields({**row, **attached}, state, public_ip)}
        if attached.get("stop_at") and attached["stop_at"] != row.get("stop_at"):
            self._local.armed = True  # a new stop planned: the auto-stop looks again once this commits
        if tags is not None:  # changed outside the API too: the console, `aws ec2 create-tags`...
            new["tags"] = {k: v for k, v in tags.items() if k not in RESERVED_TAG_KEYS and not k.startswith("aws:")}
            new["name"] = tags.get("Name") or row["name"]
        changed = {k: v for k, v in new.items() if row.get(k) != v}
        if row["missed_sweeps"] or row["missing_since"]:
            self.db.set_missing(row["id"], 0, None)  # seen again: no longer missing
        if not changed:
            return False
        now = utcnow()
        self.db.update_instance(row["id"], {**changed, "updated_at": now})
        self._armed(row["state"], new, row)
        if "state" in changed:
            self.db.add_event(row["id"], action, row["state"], new["state"], source, request_id, at=now,
                              public_ip=new["public_ip"], actor=actor)
        return True

    def apply_sweep(self, observed: list[dict], started: str,
                    region: str | None = None) -> tuple[SyncResult, list[str], list[LaunchRow]]:
        """Apply one region's listing (default: the server's region); return what it changed, the ids to
        confirm gone, and overdue launches. Only that region's records are judged by it."""
        region = region or self.region
        result = SyncResult()
        seen: set[str] = set()
        suspects: list[str] = []
        with self._transaction():
            # Unknown account: nothing is judged (an empty describe of another account is no proof).
            tracked = self.db.tracked_ids(region, self.endpoint, self.account) if self.account else {}
            pending = {launch["request_id"]: launch
                       for launch in self.db.pending_launches(region, self.endpoint)}
            settled = self.db.settled_without_instance(region, self.endpoint)
            for instance in observed:
                instance_id = instance["InstanceId"]
                seen.add(instance_id)
                request_id = tags_of(instance).get("RequestId", "")
                # A launch recorded failed or lost whose instance EC2 shows did launch after all.
                launch = pending.pop(request_id, None) or settled.get(request_id)
                self._isolated(instance_id, self._apply_observed, instance, tracked.get(instance_id), launch,
                               started, result, region)
            for instance_id, row in tracked.items():
                if instance_id in seen or (row["updated_at"] or "") > started:
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
            if not self.db.in_transaction:
                raise  # SQLite gave up the whole transaction (disk full, I/O error): so does the sweep
            log.exception("sweep: could not record instance %s; skipped this time", instance_id)
            return None

    def _apply_observed(self, instance: dict, row: InstanceRow | None, launch: LaunchRow | None, started: str,
                        result: SyncResult, region: str | None = None) -> None:
        """What one region's listing (default: the server's region) shows of one instance."""
        region = region or self.region
        instance_id = instance["InstanceId"]
        if launch is not None:
            self.db.finish_launch(launch["request_id"], LaunchStatus.LAUNCHED, instance_id)
        if row is None:
            known = self.db.get_instance(instance_id)
            if known is None:
                if launch is not None or state_of(instance) != InstanceState.TERMINATED:
                    self._adopt(instance, launch, region)
                    result.adopted.append(instance_id)
            elif (known.get("updated_at") or "") <= started and (
                    self._revive(known, instance, region) or self._claim(known, instance, region)):
                result.updated.append(instance_id)
            return
        if (row["updated_at"] or "") > started or instance_id in self.transitions:
            return  # an API call recorded (or is recording) something newer than this describe
        if self._apply(row, instance, "observe", "reconcile"):
            result.updated.append(instance_id)

    @property
    def scope(self) -> dict[str, str | None]:
        return self.scope_in(self.region)

    def scope_in(self, region: str) -> dict[str, str | None]:
        """What an instance listed in `region` of this server's EC2 is recorded with."""
        return {"region": region, "endpoint": self.endpoint, "account": self.account}

    def _claim(self, row: InstanceRow, instance: dict, region: str) -> bool:
        """A live record of no EC2 yet (kept before regions and accounts were), or of another name for
        this one (an endpoint alias), that this EC2 lists in `region`: it is this EC2's from now on."""
        if row["state"].ended or self.account is None:
            return False
        self.db.update_instance(row["id"], {**self.scope_in(region), "updated_at": utcnow()})
        log.info("instance %s (recorded for %s/%s/%s) is listed here: now tracked in this region and account",
                 row["id"], row["endpoint"] or "aws", row["region"], row["account"])
        self._apply(row, instance, "observe", "reconcile")
        return True

    def _revive(self, row: InstanceRow, instance: dict, region: str) -> bool:
        """A record that is terminated while EC2 shows the instance alive comes back with its real
        state: no record may stay terminated while EC2 runs it."""
        state = state_of(instance)
        if not row["state"].ended or state == InstanceState.TERMINATED:
            return False
        now = utcnow()
        fields = self._observed_fields(row, instance)
        self.db.update_instance(row["id"], {**fields, **self.scope_in(region), "updated_at": now})
        self._armed(row["state"], fields, row)
        self.db.set_missing(row["id"], 0, None)
        self.db.add_event(row["id"], "reappeared", row["state"], state, "reconcile", at=now,
                          public_ip=fields["public_ip"])
        log.warning("instance %s was recorded %s but EC2 shows it %s: record restored", row["id"],
                    row["state"], state)
        return True

    def _note_missing(self, row: InstanceRow, started: str) -> bool:
        """Count one more sweep without this instance; True once it is due a direct lookup."""
        missed = (row["missed_sweeps"] or 0) + 1
        since = row["missing_since"] or started
        self.db.set_missing(row["id"], missed, since)
        return (missed >= self.settings.gone_after_missed_sweeps and age_seconds(since) >= self.grace
                and age_seconds(row["created_at"]) >= self.grace)

    def apply_confirmation(self, ids: list[str], found: dict[str, dict], started: str, result: SyncResult,
                            direct: bool = False) -> None:
        """After a direct lookup: what it shows is recorded; what it does not show is gone."""
        with self._transaction():
            for instance_id in ids:
                row = self.db.get_instance(instance_id)
                if row is None or row["state"].ended:
                    continue
                if not direct and (row["updated_at"] or "") > started:
                    continue
                instance = found.get(instance_id)
                if instance is not None:
                    if self._isolated(instance_id, self._apply, row, instance, "observe", "reconcile"):
                        result.updated.append(instance_id)
                    continue
                now = utcnow()
                self.db.update_instance(instance_id, {"state": InstanceState.TERMINATED, "public_ip": None,
                                                      "ssh_string": None, "stop_at": None, "updated_at": now,
                                                    "ssh_unavailable": f"it is {InstanceState.TERMINATED}"})
                self.db.add_event(instance_id, "gone", row["state"], InstanceState.TERMINATED, "reconcile", at=now)
                log.warning("instance %s: EC2 has not shown it for %s sweeps and %g s, nor to a direct lookup; "
                            "recorded terminated", instance_id, row["missed_sweeps"], self.grace)
                result.gone.append(instance_id)

    def apply_launch_lookup(self, overdue: list[LaunchRow], found: list[dict], result: SyncResult,
                            region: str | None = None) -> None:
        """After a lookup by RequestId in `region` (default: the server's) of launches recorded there."""
        region = region or self.region
        by_request = {tags_of(i).get("RequestId"): i for i in found}
        with self._transaction():
            tracked = self.db.tracked_ids(region, self.endpoint, self.account) if self.account else {}
            for launch in overdue:
                instance = by_request.get(launch["request_id"])
                if instance is None:  # outcome was unknown; now settled: it never launched
                    self.db.finish_launch(launch["request_id"], LaunchStatus.LOST,
                                          error="no instance with this request id exists in EC2")
                    continue
                self._isolated(instance["InstanceId"], self._apply_observed, instance,
                               tracked.get(instance["InstanceId"]), launch, utcnow(), result, region)

    def _adopt(self, instance: dict, launch: LaunchRow | None = None, region: str | None = None) -> None:
        """Track a ManagedBy-tagged instance we have no row for (launched by hand, or lost in a crash).

        When it carries the RequestId of one of our launches, what that request asked for is kept. One made
        by hand (or by another server) gets DEFAULT_AUTO_STOP_MINUTES: running, it stops that long after its
        adoption (never a box that runs on unseen), and each later start re-arms it, as for one we created.
        """
        tags = tags_of(instance)
        ami = instance.get("ImageId")
        asked = json.loads(launch["body"]) if launch else {}
        request = asked.get("request", {})
        login_user = asked.get("login_user") or self.login_user_of(ami)
        launched = stored_time(instance.get("LaunchTime")) or utcnow()
        now = utcnow()
        attached = [*(instance.get("SecurityGroups") or []),
                    *[g for eni in instance.get("NetworkInterfaces") or [] for g in eni.get("Groups") or []]]
        groups = [g.get("GroupId") for g in attached if str(g.get("GroupName") or "").startswith(SECURITY_GROUP_NAME)]
        # The group made for this launch alone (named after its RequestId): ours to delete once it is gone.
        own = [g.get("GroupId") for g in attached
               if tags.get("RequestId") and g.get("GroupName") == ssh_group_name(tags["RequestId"])]
        row = {
            "id": instance["InstanceId"],
            # The original schema has `name NOT NULL`: an instance without a Name tag is named by its id.
            "name": tags.get("Name") or request.get("name") or instance["InstanceId"],
            "ami": ami, "instance_type": instance.get("InstanceType"), "storage_gb": request.get("storage_gb"),
            "security_group_id": groups[0] if groups else None,
            "ssh_group": own[0] if own else None, "ssh_from": asked.get("ssh_from") if own else None,
            "tags": {k: v for k, v in tags.items() if k not in RESERVED_TAG_KEYS and not k.startswith("aws:")},
            "backend_used": "awscli", "login_user": login_user, "request_id": tags.get("RequestId"),
            **self.scope_in(region or self.region), "launched_at": launched, "created_at": launched,
            "updated_at": now,
            # What the request asked for; one launched by hand gets the default (from now, if it runs).
            "auto_stop_minutes": request.get("auto_stop_minutes") if "auto_stop_minutes" in request
            else self.settings.default_auto_stop_minutes,
            "auto_stop_default": asked.get("auto_stop_default", 0 if "auto_stop_minutes" in request else 1),
            "schedule": tags.get("Schedule"), "schedule_since": now,
            "associate_public_ip": int(request["associate_public_ip"]) if "associate_public_ip" in request else None,
            "stop_when_idle": request.get("stop_when_idle"),
            "idle_alarm": idle_alarm_view(instance["InstanceId"], canonical_json(request.get("stop_when_idle")), None),
            # Whoever asked for it keeps it through a crash; one launched by hand has no owner (admins see it).
            "owner": launch["owner"] if launch else None,
        }
        fields = self._observed_fields(row, instance)
        self.db.upsert_instance({**row, **fields})
        self._armed(None, fields, row)
        if launch is not None and launch["created_at"] >= self.started_at:
            # A create of this process still waiting for its aws answer: the sweep was merely first.
            action, source, actor = "create", "api", row["owner"]
        else:
            action, source, actor = "adopt", "adopt", None
        self.db.add_event(row["id"], action, None, fields["state"], source, row["request_id"], at=now,
                          public_ip=fields["public_ip"], actor=actor)

    def record_launch(self, instance: dict, row: dict[str, Any]) -> InstanceRow:
        """Record a run-instances answer: the row as the API knows it plus what EC2 said."""
        now = utcnow()
        row = {**row, **self.scope}
        fields = self._observed_fields(row, instance)
        with self.db.transaction():
            self.db.finish_launch(row["request_id"], LaunchStatus.LAUNCHED, row["id"])
            if self.db.get_instance(row["id"]) is None:
                self.db.upsert_instance({**row, **fields, "created_at": now, "updated_at": now})
                self.db.add_event(row["id"], "create", None, fields["state"], "api", row.get("request_id"), at=now,
                                  public_ip=fields["public_ip"], actor=row.get("owner"))
            else:  # a sweep adopted it first and holds a newer observed state: add what we asked for
                self.db.update_instance(row["id"], {**row, "updated_at": now})
        return self.db.require_instance(row["id"])

    def record_transition(self, row: InstanceRow, instance_state: dict, action: str,
                          request_id: str | None, source: str = "api", actor: str | None = None) -> InstanceRow:
        """Record the CurrentState EC2 gave for a start/stop/terminate (asked for by `actor`, if anyone)."""
        state = InstanceState((instance_state.get("CurrentState") or {}).get("Name") or row["state"])
        with self._transaction():
            fresh = self.db.get_instance(row["id"]) or row
            self.observe(fresh, state, fresh["public_ip"], action, source, request_id, actor=actor)
        return self.db.require_instance(row["id"])

    def record_gone(self, row: InstanceRow, action: str, request_id: str | None, aws_error: str | None,
                    actor: str | None = None) -> InstanceRow:
        """EC2 says the instance does not exist, and a direct lookup agreed: terminated for good."""
        with self.db.transaction():
            now = utcnow()
            fresh = self.db.get_instance(row["id"]) or row
            if fresh["state"] != InstanceState.TERMINATED:
                self.db.update_instance(row["id"], {"state": InstanceState.TERMINATED, "public_ip": None,
                                                    "ssh_string": None, "stop_at": None, "updated_at": now,
                                                    "ssh_unavailable": f"it is {InstanceState.TERMINATED}"})
            self.db.add_event(row["id"], action, fresh["state"], InstanceState.TERMINATED, "api", request_id, aws_error,
                              at=now, actor=actor)
        return self.db.require_instance(row["id"])
