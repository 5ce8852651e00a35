"""What the store holds, typed: instance states, launch statuses and the rows, from the store to the routes."""

from enum import StrEnum
from typing import TypedDict


class InstanceState(StrEnum):
    """EC2's instance states, plus `failed` (the original project's create that never launched)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    FAILED = "failed"

    @classmethod
    def _missing_(cls, value: object) -> "InstanceState | None":
        """A state text no EC2 gives (written by another version) is kept as it is, never refused."""
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member

    @property
    def ended(self) -> bool:
        """Nothing more can happen to it: not listed by default, not judged by sweeps."""
        return self in (InstanceState.TERMINATED, InstanceState.FAILED)

    @property
    def keeps_public_ip(self) -> bool:
        """An auto-assigned public IPv4 stays while an instance runs (and until it has stopped)."""
        return self in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING)


class LaunchStatus(StrEnum):
    """A create request: pending -> launched | failed (EC2 refused) | lost (unknown outcome, never seen)."""

    PENDING = "pending"
    LAUNCHED = "launched"
    FAILED = "failed"
    LOST = "lost"


class InstanceRow(TypedDict):
    """One row of `instances` (the original project's columns first)."""

    id: str
    name: str | None
    public_ip: str | None
    ami: str | None
    instance_type: str | None
    state: InstanceState
    ssh_string: str | None
    security_group_id: str | None
    backend_used: str | None
    created_at: str | None
    updated_at: str | None
    storage_gb: int | None
    tags: dict[str, str]
    login_user: str | None
    request_id: str | None
    launched_at: str | None
    region: str | None  # which EC2 it lives in: a sweep judges only its own
    endpoint: str | None
    account: str | None
    missing_since: str | None  # when a sweep first did not list it
    missed_sweeps: int
    auto_stop_minutes: int | None  # None: never stopped by the scheduler
    stop_at: str | None  # when the scheduler stops it; None when not running or never
    associate_public_ip: int | None  # 0: launched without a public IPv4; None: unknown
    rev: int  # bumped by every write of the row
    stop_when_idle: dict | None  # {cpu_below_percent, for_minutes}: asked for; None: no idle alarm
    idle_alarm: dict | None  # the alarm's public view: {name, status, error}
    alarm_held: str | None  # the setting CloudWatch holds (canonical JSON); None: no alarm
    alarm_attempts: int  # failed tries in a row (backoff)
    alarm_retry_at: str | None  # not before this after a failure
    ssh_from: str | None  # who may reach port 22: a CIDR or "none"; None: not managed here
    ssh_unavailable: str | None  # why ssh_string is None
    ssh_group: str | None  # the security group made for this instance alone; None once deleted
    owner: str | None  # who created it through the API (a token's name); None: adopted, or made without tokens
    schedule: str | None  # the attached schedule's name: the EC2 tag Schedule as last seen or written
    schedule_error: str | None  # why the attached schedule cannot be used (no such schedule); None: it can
    snoozed_until: str | None  # a stop someone set (a snooze, a PATCH of stop_at): kept when the stop is planned
    # again (a schedule changed or attached) until it passes; cleared when it stops
    stop_source: str | None  # what stop_at is for: "auto_stop" or "schedule"
    next_start_at: str | None  # when its schedule starts it next (while stopped); None: no scheduled start
    schedule_since: str | None  # when the schedule was attached (its edges before that are not acted on)
    auto_stop_default: int | None  # 1: auto_stop_minutes is DEFAULT_AUTO_STOP_MINUTES; 0 or None: asked for


class LaunchRow(TypedDict):
    """One create request, written before its `aws` process starts."""

    request_id: str
    idempotency_key: str | None
    body_hash: str
    body: str  # JSON: the request and what was resolved for it (AMI id, login user, root device)
    status: LaunchStatus
    instance_id: str | None
    error: str | None
    created_at: str
    updated_at: str
    region: str | None
    endpoint: str | None
    owner: str | None  # who asked for it: the caller's name (None without tokens)


class EventRow(TypedDict):
    """One observed state change of an instance."""

    at: str
    action: str
    from_state: str | None
    to_state: str | None
    source: str
    request_id: str | None
    aws_error: str | None
    public_ip: str | None  # recorded with the change (the ledger counts IPv4 hours from it)
    actor: str | None  # who asked for it through the API; None for the reconciler, the auto-stop and no tokens
    http_request_id: str | None
    detail: str | None  # why (a refused scheduled start, a snooze); None for a plain state change
