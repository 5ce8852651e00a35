"""Request and response models (field names as in the original project)."""

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from app.api.fields import EC2_TEXT, INSTANCE_ID_PATTERN, NAME_PATTERN, SCHEDULE_NAME_PATTERN, WORD_PATTERN
from app.store.instances import next_action

RESERVED_TAG_KEYS = {"Name", "ManagedBy", "RequestId"}
# The free-tier bounds of storage_gb, as app/instances/free_tier.py enforces them (a 400 outside them; a test
# keeps the two equal: that module imports this one, so it cannot be imported here).
MIN_STORAGE_GB, MAX_STORAGE_GB = 8, 30

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NAME_PATTERN)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=EC2_TEXT)]
TagValue = Annotated[str, StringConstraints(max_length=256, pattern=EC2_TEXT)]
# Written out: pydantic renders dict[TagKey, TagValue] as patternProperties, which lets any other key
# carry any value as far as the schema is concerned.
Tags = Annotated[dict[TagKey, TagValue], WithJsonSchema({
    "type": "object", "maxProperties": 40,
    "propertyNames": {"minLength": 1, "maxLength": 128, "pattern": EC2_TEXT,
                      "not": {"anyOf": [{"enum": sorted(RESERVED_TAG_KEYS)}, {"pattern": "^[aA][wW][sS]:"}]}},
    "additionalProperties": {"type": "string", "maxLength": 256, "pattern": EC2_TEXT},
})]




def _json_integer(value: object) -> object:
    """A JSON number only: no "8" or true coerced into an int (the schema says integer)."""
    if isinstance(value, (str, bool)):
        raise ValueError("must be a JSON integer")
    return value


ScheduleName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=SCHEDULE_NAME_PATTERN)]
AutoStopMinutes = Annotated[Annotated[int, Field(ge=1, le=10080)] | None, BeforeValidator(_json_integer)]


def _json_number(value: object) -> object:
    """A JSON number only: no "5" or true coerced into a float."""
    if isinstance(value, (str, bool)):
        raise ValueError("must be a JSON number")
    return value


class StopWhenIdle(BaseModel):
    """Stop the instance when its average CPU stays below cpu_below_percent for for_minutes: a CloudWatch alarm
    whose action is EC2's own stop, so it works even while this server is down."""

    model_config = ConfigDict(extra="forbid")

    cpu_below_percent: Annotated[float, BeforeValidator(_json_number), AfterValidator(lambda v: round(v, 2))] = Field(
        ge=0.01, le=100, description="Average CPUUtilization (%) under which it counts as idle (0.01-100, kept to "
                                     "2 decimals)", examples=[5])
    for_minutes: Annotated[int, BeforeValidator(_json_integer)] = Field(
        ge=5, le=1440, multiple_of=5, description="How long it must stay idle (5-1440, a multiple of 5: CloudWatch's "
                                                  "5-minute basic monitoring)", examples=[60])


class IdleAlarm(BaseModel):
    """The CloudWatch alarm behind stop_when_idle, as this service last put it."""

    name: str = Field(description="The alarm's name in CloudWatch (ec2-creator-local-idle-stop-<instance id>)")
    status: Literal["pending", "set", "deleting"] = Field(
        description="pending: to be put (or changed) in CloudWatch; set: CloudWatch holds it as asked; deleting: to "
                    "be removed")
    error: str | None = Field(None, description="Why the last attempt failed (it is retried, with backoff)")


# What Swagger UI's "Try it out" sends for POST /instances: a sensible box (the server's default auto-stop, no idle
# alarm), not the schema's minimums (auto_stop_minutes 1 and an idle alarm, filled in from each field's bounds).
CREATE_EXAMPLE = {"name": "my-box", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "storage_gb": 8}


def _ssh_from(value: str) -> str:
    """my_ip, none, or an IPv4 CIDR (a bare address is a /32), normalised."""
    if value in ("my_ip", "none"):
        return value
    try:
        return str(ipaddress.IPv4Network(value if "/" in value else f"{value}/32", strict=False))
    except ValueError:
        raise ValueError('ssh_from must be "my_ip", "none", an IPv4 address or an IPv4 CIDR such as '
                         "203.0.113.7/32") from None


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
SSH_FROM_PATTERN = rf"^(my_ip|none|{_OCTET}(\.{_OCTET}){{3}}(/(3[0-2]|[12]?[0-9]))?)$"
SshFrom = Annotated[str, StringConstraints(min_length=1, max_length=18, pattern=SSH_FROM_PATTERN),
                    AfterValidator(_ssh_from),
                    Field(description='Who may reach port 22: "my_ip" (this server\'s public IPv4 as AWS sees it, '
                                      'as a /32), an IPv4 CIDR (a bare address means /32; 0.0.0.0/0 only when '
                                      'sent), or "none"', examples=["my_ip", "203.0.113.7/32"])]


class InstanceCreate(BaseModel):
    """What to launch. Free-tier rules are checked before anything is spawned. An unknown field is a 422 that
    names it (a typo like `storage` or `auto_stop_minute` never falls back to the default silently)."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Name tag; letters, digits, spaces and _ . : / = + - @", examples=["my-box"])
    ami: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=WORD_PATTERN)] = Field(
        description="An alias (amazon-linux-2023, amazon-linux-2, ubuntu-24.04, ubuntu-22.04, debian-12) "
                    "or a free-tier AMI id", examples=["amazon-linux-2023"])
    instance_type: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=WORD_PATTERN)] = (
        Field(description="A free-tier instance type", examples=["t3.micro"]))
    # The schema shows the free-tier bounds; a number outside them is the free-tier policy's 400
    # (storage_not_free_tier, which says why), so only what no disk could be (beyond 32 bits) is a 422.
    storage_gb: Annotated[int, BeforeValidator(_json_integer)] = Field(
        8, description=f"Root volume size in GB ({MIN_STORAGE_GB}-{MAX_STORAGE_GB}, gp3: the free-tier EBS "
                       "allowance); outside that: 400 storage_not_free_tier",
        ge=-(2**31), le=2**31, json_schema_extra={"minimum": MIN_STORAGE_GB, "maximum": MAX_STORAGE_GB})
    create_security_group: StrictBool = Field(
        False, description="The original API's switch: true means ssh_from = SSH_INGRESS_CIDR")
    ssh_from: SshFrom | None = Field(
        None, description='Who may reach port 22, in a security group made for this instance alone: "my_ip" (the '
                          "default), an IPv4 CIDR, or \"none\"; change it later with PUT /instances/{id}/ssh-access")
    tags: Tags | None = Field(None, description="Extra tags (up to 40; Name, ManagedBy, RequestId and aws:* are "
                                                "reserved)", max_length=40, examples=[{"Owner": "me"}])
    associate_public_ip: StrictBool = Field(
        True, description="Give it a public IPv4 address (billed per hour); false: reachable only inside its VPC")
    auto_stop_minutes: AutoStopMinutes = Field(
        None, description="Stop it this many minutes after every start (1-10080); null: never. Omitted: the "
                          "server's DEFAULT_AUTO_STOP_MINUTES (480)")
    stop_when_idle: StopWhenIdle | None = Field(
        None, description="Also stop it when idle, by a CloudWatch alarm put right after the launch (works while this "
                          "server is down); null: no alarm")
    schedule: ScheduleName | None = Field(
        None, description="A schedule (GET /schedules) that starts and stops it (also written as the EC2 tag "
                          "Schedule=<name>); an unknown name is 422 unknown_schedule", examples=["office-hours"])

    @field_validator("tags")
    @classmethod
    def _no_reserved_keys(cls, tags: dict[str, str] | None) -> dict[str, str] | None:
        for key in tags or {}:
            if key in RESERVED_TAG_KEYS or key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r} is reserved (Name, ManagedBy, RequestId and aws:*)")
        return tags


class Instance(BaseModel):
    """An instance as recorded; state, public_ip and ssh_string follow EC2 through the reconciler."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None = None
    public_ip: str | None = None
    ssh_string: str | None = Field(None, description="The ssh command; null when it cannot be used (ssh_unavailable "
                                                     "says why)")
    ssh_unavailable: str | None = Field(None, description="Why ssh_string is null (no public address, no SSH rule)")
    ssh_from: str | None = Field(None, description='Who may reach port 22 (the rule in force: a CIDR or "none"); '
                                                   "null: not managed here (created before ssh_from, or adopted)")
    login_user: str | None = Field(None, description="The user its AMI logs in as")
    state: str
    ami: str | None = None
    instance_type: str | None = None
    storage_gb: int | None = None
    security_group_id: str | None = None
    tags: dict[str, str] = {}
    backend_used: str | None = None
    region: str | None = Field(None, description="AWS region the instance lives in")
    created_at: str | None = None
    updated_at: str | None = None
    auto_stop_minutes: int | None = Field(None, description="Minutes after each start when it is stopped; null: never")
    stop_at: str | None = Field(None, description="When the scheduler stops it (UTC); null when not running or never")
    stop_when_idle: StopWhenIdle | None = Field(None, description="Stopped by CloudWatch when idle; null: no alarm")
    idle_alarm: IdleAlarm | None = Field(None, description="The CloudWatch alarm that does it (null: none held)")
    owner: str | None = Field(None, description="Who created it through the API (a token's name; `admin` for "
                                                "API_TOKEN); null: adopted from EC2 or created without tokens")
    schedule: str | None = Field(None, description="The schedule that starts and stops it: the EC2 tag Schedule as "
                                                   "EC2 holds it (set here, or in the console); null: none")
    schedule_error: str | None = Field(None, description="Why its schedule cannot be used (no schedule of that "
                                                         "name): nothing is started or stopped for it")
    next_action: "NextAction | None" = Field(None, description="What comes next: its stop while it runs (auto-stop "
                                                               "or schedule), its scheduled start while stopped; "
                                                               "null: nothing is due")
    cost: "Cost | None" = Field(None, description="Its spend this budget period (GET /instances/{id})")

    @classmethod
    def from_row(cls, row: Mapping[str, Any], cost: "Cost | None" = None) -> "Instance":
        """The public view of a stored row (InstanceRow): its bookkeeping columns stay inside."""
        return cls.model_validate({**{name: row[name] for name in STORED_FIELDS if name != "next_action"},
                                   "next_action": next_action(row), "cost": cost})


class NextAction(BaseModel):
    action: Literal["start", "stop"]
    at: str = Field(description="When (UTC)")
    source: Literal["schedule", "auto_stop"]


class Cost(BaseModel):
    spent_usd: float = Field(description="Spent since the budget period began")
    projected_usd: float = Field(description="What it will cost until its stop_at (or the period end) from now on")


# The Instance fields kept in the instances table (cost is computed when asked for).
STORED_FIELDS = tuple(name for name in Instance.model_fields if name != "cost")


# PATCH tags: a value sets the tag, null removes it. Reserved keys are refused with a 400 (policy).
PatchTags = Annotated[dict[TagKey, TagValue | None], WithJsonSchema({
    "type": "object", "minProperties": 1, "maxProperties": 40,
    "propertyNames": {"minLength": 1, "maxLength": 128, "pattern": EC2_TEXT,
                      "not": {"anyOf": [{"enum": sorted(RESERVED_TAG_KEYS)}, {"pattern": "^[aA][wW][sS]:"}]}},
    "additionalProperties": {"anyOf": [{"type": "string", "maxLength": 256, "pattern": EC2_TEXT}, {"type": "null"}]},
})]


class SshAccess(BaseModel):
    """PUT /instances/{id}/ssh-access: the new rule (it replaces the old one)."""

    model_config = ConfigDict(extra="forbid")

    ssh_from: SshFrom


class InstancePatch(BaseModel):
    """Any of: a new name, tags to set or remove, stop_when_idle, and ONE of a new auto-stop delay or a stop time for
    this run."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "minProperties": 1, "not": {"required": ["auto_stop_minutes", "stop_at"]}})

    auto_stop_minutes: AutoStopMinutes = Field(
        None, description="Minutes after each start (re-arms stop_at from now if it runs); null: never")
    stop_at: AwareDatetime | None = Field(None, description="ISO 8601 time with a zone to stop it at; null: cancel")
    name: Name = Field(None, description="A new Name tag (letters, digits, spaces and _ . : / = + - @)",  # type: ignore[assignment]
                       json_schema_extra={"type": "string"})
    stop_when_idle: StopWhenIdle | None = Field(
        None, description="Stop it when idle (a CloudWatch alarm, put in the background); null: remove the alarm")
    schedule: ScheduleName | None = Field(
        None, description="Attach a schedule (also the EC2 tag Schedule=<name>); null: detach it. An unknown name is "
                          "422 unknown_schedule", examples=["office-hours"])
    tags: PatchTags = Field(
        None,  # type: ignore[arg-type]  # omitted: unchanged; null is refused (the schema has no null)
        max_length=40, examples=[{"Owner": "me"}],
        description="Merged into its tags: a value sets a tag, null removes it. Name (use `name`), ManagedBy, "
                    "RequestId and aws:* are reserved (400)")

    @model_validator(mode="after")
    def _one_auto_stop_change(self) -> "InstancePatch":
        if not self.model_fields_set:
            raise ValueError("give at least one of name, tags, auto_stop_minutes, stop_at, stop_when_idle or schedule")
        if {"auto_stop_minutes", "stop_at"} <= self.model_fields_set:
            raise ValueError("give auto_stop_minutes or stop_at, not both")
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be removed; give a new one")
        if "tags" in self.model_fields_set and not self.tags:
            raise ValueError("tags: give at least one tag to set or remove")
        return self




class Snooze(BaseModel):
    """Push the next stop (its schedule's or its auto-stop's): by `minutes`, or to `until`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["minutes"]},
                                                                         {"required": ["until"]}]})

    minutes: Annotated[Annotated[int, Field(ge=15, le=720)] | None, BeforeValidator(_json_integer)] = Field(
        None, description="Minutes to push the next stop by (15-720)", examples=[60])
    until: AwareDatetime | None = Field(None, description="Or: when to stop it instead (RFC 3339, with a zone; "
                                                          "within 7 days)")

    @model_validator(mode="after")
    def _one(self) -> "Snooze":
        given = self.model_fields_set & {"minutes", "until"}
        if len(given) != 1 or getattr(self, next(iter(given))) is None:
            raise ValueError("give minutes (15-720) or until (an RFC 3339 time), one of them, not null")
        return self


@dataclass(frozen=True)
class InstanceFilter:
    """GET /instances filters: any of the states, every tag (`Key=Value`, or `Key` for presence), the name."""

    states: frozenset[str]
    tags: tuple[tuple[str, str | None], ...]
    name: str | None

    @classmethod
    def of(cls, states: Sequence[str] | None, tags: Sequence[str] | None, name: str | None) -> "InstanceFilter":
        pairs = tuple((t.split("=", 1)[0], t.split("=", 1)[1] if "=" in t else None) for t in tags or ())
        return cls(frozenset(states or ()), pairs, name)

    @property
    def asks_for_ended(self) -> bool:
        return bool(self.states & {"terminated", "shutting-down", "failed"})

    def matches(self, row: Mapping[str, Any]) -> bool:
        if self.states and row["state"] not in self.states:
            return False
        if self.name is not None and row["name"] != self.name:
            return False
        tags = {**(row["tags"] or {}), **({"Name": row["name"]} if row["name"] else {})}
        return all(key in tags and (value is None or tags[key] == value) for key, value in self.tags)


class Datapoint(BaseModel):
    timestamp: str = Field(description="Start of the period (UTC)")
    average: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    sum: float | None = None
    sample_count: float | None = None
    unit: str | None = None


class MetricSeries(BaseModel):
    """One AWS/EC2 metric of one instance, from CloudWatch (get-metric-statistics), oldest first."""

    instance_id: str
    metric: str
    period: int = Field(description="Seconds per datapoint")
    start: str
    end: str
    unit: str | None = Field(None, description="CloudWatch's unit (Percent, Bytes, Count); null without datapoints")
    datapoints: list[Datapoint]
    fetched_at: str = Field(description="When CloudWatch was asked: answers are cached for min(period, 300) s")


StateName = Literal["pending", "running", "stopping", "stopped", "shutting-down", "terminated", "failed"]
InstanceId = Annotated[str, StringConstraints(pattern=INSTANCE_ID_PATTERN)]
MAX_BULK = 1000  # EC2's limit of ids per call


class Selector(BaseModel):
    """Which tracked instances (not terminated): every given criterion must match."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    state: list[StateName] | None = Field(None, min_length=1, description="Any of these states")
    tag: Annotated[dict[TagKey, TagValue], WithJsonSchema({
        "type": "object", "minProperties": 1, "maxProperties": 50,
        "propertyNames": {"minLength": 1, "maxLength": 128, "pattern": EC2_TEXT},
        "additionalProperties": {"type": "string", "maxLength": 256, "pattern": EC2_TEXT}})] | None = Field(
        None, min_length=1, max_length=50, description="Every tag Key: Value given (Name counts as a tag)",
        examples=[{"Owner": "me"}])
    name: Name | None = Field(None, description="Exact name")

    @model_validator(mode="after")
    def _something(self) -> "Selector":
        if self.state is None and self.tag is None and self.name is None:
            raise ValueError("give at least one of state, tag or name")
        return self

    def as_filter(self) -> "InstanceFilter":
        return InstanceFilter(frozenset(self.state or ()), tuple((self.tag or {}).items()), self.name)


class BulkAction(BaseModel):
    """One action on many instances: by `ids`, or by a `selector` over the record."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["ids"]}, {"required": ["selector"]}]})

    action: Literal["stop", "start", "delete"]
    ids: list[InstanceId] | None = Field(None, min_length=1, max_length=MAX_BULK,
                                         description="Instance ids (up to 1,000; repeats count once)")
    selector: Selector | None = Field(None, description="Or: the tracked instances that match")

    @model_validator(mode="after")
    def _one_way(self) -> "BulkAction":
        if (self.ids is None) == (self.selector is None) or len(self.model_fields_set & {"ids", "selector"}) != 1:
            raise ValueError("give ids or selector (one of them, not null)")
        return self


class BulkError(BaseModel):
    detail: str
    code: str
    aws_error_code: str | None = None
    instance_id: str | None = Field(None, description="With record_failed: the instance EC2 acted on")


class BulkResult(BaseModel):
    id: str
    status: int = Field(description="What the single route would have answered: 202 sent, 200 nothing to do, "
                                    "else the error's status")
    state: str | None = Field(None, description="Its recorded state after the action (null: not tracked)")
    error: BulkError | None = None


class BulkActionResult(BaseModel):
    action: str
    results: list[BulkResult]


class InstanceList(BaseModel):
    instances: list[Instance]


class InstanceEvent(BaseModel):
    at: str
    action: str
    from_state: str | None = None
    to_state: str | None = None
    source: str
    request_id: str | None = None
    aws_error: str | None = None
    actor: str | None = Field(None, description="Who asked for it through the API (a token's name); null for the "
                                                "reconciler, the auto-stop and a server without tokens")
    http_request_id: str | None = Field(None, description="The X-Request-Id of the HTTP request that caused it (as in "
                                                          "that request's log lines); null when no request did")
    detail: str | None = Field(None, description="Why (a refused scheduled start, a snooze); null for a plain state "
                                                 "change")


class EventList(BaseModel):
    events: list[InstanceEvent]


class SyncResult(BaseModel):
    """What one reconcile sweep changed (the reconciler fills it in, the sync route returns it)."""

    adopted: list[str] = []
    updated: list[str] = []
    gone: list[str] = []
    missing: list[str] = Field([], description="Tracked but not listed by this sweep; recorded terminated only "
                                               "once proven gone (see CONSISTENCY_GRACE_SECONDS)")


class Health(BaseModel):
    status: str
