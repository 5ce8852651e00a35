"""FastAPI dependencies, in one place."""

from typing import Annotated

from fastapi import Depends, Path, Request

from app.config import Settings
from app.errors import NotFound
from app.models.instance import INSTANCE_ID_PATTERN
from app.services.db import Database
from app.services.instances import InstanceService


def get_service(request: Request) -> InstanceService:
    return request.app.state.service


def get_db(request: Request) -> Database:
    return request.app.state.service.db


def get_app_settings(request: Request) -> Settings:
    return request.app.state.service.settings


ServiceDep = Annotated[InstanceService, Depends(get_service)]
DbDep = Annotated[Database, Depends(get_db)]

# The pattern is documented (so clients and fuzzers see what an id looks like) but not enforced by
# the framework: any id we do not track, well-formed or not, is a plain 404.
InstanceIdPath = Annotated[str, Path(description="EC2 instance id, e.g. i-0123456789abcdef0", max_length=64,
                                     json_schema_extra={"pattern": INSTANCE_ID_PATTERN})]


def valid_instance(instance_id: InstanceIdPath, db: DbDep) -> dict:
    """The recorded instance, or 404. Shared by every /instances/{instance_id} route."""
    row = db.get_instance(instance_id)
    if row is None:
        raise NotFound(f"No instance {instance_id!r} is tracked. GET /instances lists the known ones.",
                       code="instance_not_found")
    return row


InstanceDep = Annotated[dict, Depends(valid_instance)]
