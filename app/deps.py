"""FastAPI dependencies, in one place: one per resource the lifespan builds (the `aws` runner stays inside
the service), and the shared checks. Tests override them to run routes in process."""

import asyncio
import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.errors import NotFound, Unauthorized
from app.models.instance import INSTANCE_ID_PATTERN
from app.models.rows import InstanceRow
from app.services.db import Database
from app.services.instances import InstanceService
from app.services.reconciler import Reconciler


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Database:
    return request.app.state.store


def get_service(request: Request) -> InstanceService:
    return request.app.state.service


def get_reconciler(request: Request) -> Reconciler:
    return request.app.state.reconciler


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Database, Depends(get_store)]
ServiceDep = Annotated[InstanceService, Depends(get_service)]
ReconcilerDep = Annotated[Reconciler, Depends(get_reconciler)]

# The pattern is documented (so clients and fuzzers see what an id looks like) but not enforced by
# the framework: any id we do not track, well-formed or not, is a plain 404.
InstanceIdPath = Annotated[str, Path(description="EC2 instance id, e.g. i-0123456789abcdef0", max_length=64,
                                     json_schema_extra={"pattern": INSTANCE_ID_PATTERN})]


async def valid_instance(instance_id: InstanceIdPath, store: StoreDep) -> InstanceRow:
    """The recorded instance, or 404. Shared by every /instances/{instance_id} route."""
    row = await asyncio.to_thread(store.get_instance, instance_id)
    if row is None:
        raise NotFound(f"No instance {instance_id!r} is tracked. GET /instances lists the known ones.",
                       code="instance_not_found")
    return row


InstanceDep = Annotated[InstanceRow, Depends(valid_instance)]


_bearer = HTTPBearer(auto_error=False, description="The server's API_TOKEN (required when it is set)")


def require_token(settings: SettingsDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """With API_TOKEN set, every /instances route needs `Authorization: Bearer <token>`."""
    if settings.api_token is None:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), settings.api_token.get_secret_value().encode()):
        raise Unauthorized("Missing or wrong bearer token: send 'Authorization: Bearer <API_TOKEN>'.",
                           headers={"WWW-Authenticate": "Bearer"})
