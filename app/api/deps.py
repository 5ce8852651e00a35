"""FastAPI dependencies every router shares: the settings, the store and who is calling (a token, admin or
not). Each domain adds its own beside its router (app/instances/deps.py). Tests override them to run routes in
process."""

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.tokens import API_TOKEN_NAME, LOCAL, Caller, TokensFileInvalid, token_file
from app.config import Settings
from app.core.errors import Forbidden, Unauthorized, Unavailable
from app.store import Database


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Database:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Database, Depends(get_store)]

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
