"""The pages' dependencies: who is looking (the session cookie), and the CSRF check of every state-changing request."""

import asyncio
import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.api.deps import SettingsDep
from app.auth.tokens import LOCAL
from app.core.errors import Forbidden
from app.ui.session import COOKIE, Sessions, UiSession


class LoginRequired(Exception):
    """No valid session on a server with tokens: the page answers with the login page (app/ui/router.py)."""


def get_sessions(request: Request) -> Sessions:
    return request.app.state.ui_sessions


SessionsDep = Annotated[Sessions, Depends(get_sessions)]


async def ui_session(request: Request, settings: SettingsDep, sessions: SessionsDep) -> UiSession:
    """The caller's session. With tokens: a valid login, else LoginRequired. Without: the local user, with a new
    session (its cookie is set on the answer, request.state.new_session) when the browser has none yet."""
    session = await asyncio.to_thread(sessions.read, request.cookies.get(COOKIE))
    if session is not None:
        return session
    if settings.auth_configured:
        raise LoginRequired()
    value = sessions.issue(LOCAL)
    request.state.new_session = value
    fresh = sessions.read(value)
    if fresh is None:  # pragma: no cover - a cookie just issued always reads
        raise LoginRequired()
    return fresh


SessionDep = Annotated[UiSession, Depends(ui_session)]


async def csrf_checked(request: Request, session: SessionDep) -> UiSession:
    """A state-changing request must carry the session's CSRF token: the X-CSRF-Token header (HTMX sends it) or
    the form field csrf_token; else 403 csrf_failed."""
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get("csrf_token")
        given = value if isinstance(value, str) else None
    if not given or not hmac.compare_digest(given, session.csrf):
        raise Forbidden("This form is missing its CSRF token, or it is not this session's: reload the page and "
                        "try again.", code="csrf_failed")
    return session


CsrfDep = Annotated[UiSession, Depends(csrf_checked)]
