"""Request and response models (field names as in the original project)."""

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

# EC2 tag values allow letters, digits, spaces and _ . : / = + - @ ; names use the same set.
EC2_TEXT = r"^[A-Za-z0-9 _.:/=+\-@]*$"
INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"
RESERVED_TAG_KEYS = {"Name", "ManagedBy", "RequestId"}

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:/=+\-@]*$")]
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


class InstanceCreate(BaseModel):
    """What to launch. Free-tier rules are checked before anything is spawned."""

    name: Name = Field(description="Name tag; letters, digits, spaces and _ . : / = + - @", examples=["my-box"])
    ami: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9.\-]*$")] = Field(
        description="An alias (amazon-linux-2023, amazon-linux-2, ubuntu-24.04, ubuntu-22.04, debian-12) "
                    "or a free-tier AMI id", examples=["amazon-linux-2023"])
    instance_type: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9.\-]*$")] = (
        Field(description="A free-tier instance type", examples=["t3.micro"]))
    storage_gb: Annotated[int, BeforeValidator(_json_integer)] = Field(
        8, description="Root volume size in GB (8-30, gp3)", ge=-(2**31), le=2**31)
    create_security_group: StrictBool = Field(
        False, description="Attach the reusable 'ec2-creator-local' security group (SSH from SSH_INGRESS_CIDR)")
    tags: Tags | None = Field(None, description="Extra tags", max_length=40)

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
    ssh_string: str | None = None
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Instance":
        """The public view of a stored row (InstanceRow): its bookkeeping columns stay inside."""
        return cls.model_validate({name: row[name] for name in cls.model_fields})


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
