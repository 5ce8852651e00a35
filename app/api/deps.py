"""FastAPI dependencies, in one place: one per resource the lifespan builds (the `aws` runner stays inside
the service), and the shared checks. Tests override them to run routes in process."""

import asyncio
import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.tokens import API_TOKEN_NAME, LOCAL, Caller, TokensFileInvalid, token_file
from app.config import Settings
from app.core.errors import Forbidden, NotFound, Unauthorized, Unavailable
from app.instances.reconciler import Reconciler
from app.instances.schemas import INSTANCE_ID_PATTERN
from app.instances.service import InstanceService
from app.services.db import Database
from app.store.rows import InstanceRow


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


_bearer = HTTPBearer(auto_error=False, description="Needed only when the server has API_TOKEN or API_TOKENS_FILE "
                                                    "set: then send API_TOKEN, or your own token from "
                                                    "API_TOKENS_FILE. Without either (loopback only) no token is "
                                                    "asked for, whatever the lock icons show.")


def require_token(settings: SettingsDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    """Who is calling. With API_TOKEN or API_TOKENS_FILE set, every route but /health and the docs needs
    `Authorization: Bearer <token>`: API_TOKEN is the admin named "admin", a token of the file is its person.
    With neither, the caller is the local single user (an admin; what it creates has no owner)."""
    if not settings.auth_configured:
        return LOCAL
    given = credentials.credentials if credentials else ""
    if settings.api_token is not None and hmac.compare_digest(
            given.encode(), settings.api_token.get_secret_value().encode()):
        return Caller(API_TOKEN_NAME, "admin")
    if settings.api_tokens_file is not None and given:
        try:
            user = token_file(settings.api_tokens_file, settings.reserved_user_names).lookup(given)
        except TokensFileInvalid:
            raise Unavailable("The server's API_TOKENS_FILE cannot be used right now (its log says why); its "
                              "tokens are refused until it is fixed.", code="tokens_file_invalid") from None
        if user is not None:
            return Caller(user.name, user.role)
    raise Unauthorized("Missing or wrong bearer token: send 'Authorization: Bearer <token>' (API_TOKEN, or your "
                       "own token from API_TOKENS_FILE).", headers={"WWW-Authenticate": "Bearer"})


CallerDep = Annotated[Caller, Depends(require_token)]


def require_admin(caller: CallerDep) -> Caller:
    """Routes about the whole server (notifications, metrics) are an admin's."""
    if not caller.is_admin:
        raise Forbidden(f"{caller.name!r} is a user: this route needs an admin token.", code="admin_only")
    return caller


async def valid_instance(instance_id: InstanceIdPath, store: StoreDep, caller: CallerDep) -> InstanceRow:
    """The recorded instance, or 404. Shared by every /instances/{instance_id} route. Another person's
    instance is a 404 too, with the same answer as an unknown id: a user cannot even learn it exists."""
    row = await asyncio.to_thread(store.get_instance, instance_id)
    if row is None or not caller.may_see(row["owner"]):
        raise NotFound(f"No instance {instance_id!r} is tracked. GET /instances lists the known ones.",
                       code="instance_not_found")
    return row


InstanceDep = Annotated[InstanceRow, Depends(valid_instance)]
