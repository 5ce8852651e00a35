"""The web dashboard: server-rendered pages (Jinja2) with HTMX, vendored in app/ui/static (no CDN, no build
step). `/` redirects to `/ui`. Pages read what the API reads (the store, the spend ledger): a page view spawns
no `aws` process. Live updates come as server-sent events fed from the store's revision (so a replica that is not
the leader streams them too), with polling as the fallback."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates

from app.api.deps import SettingsDep, StoreDep, require_token
from app.budget.deps import SpendingDep
from app.core.errors import ApiError
from app.instances.deps import ServiceDep
from app.instances.schemas import MAX_BULK, InstanceFilter, StateName
from app.ui.deps import CsrfDep, LoginRequired, SessionDep, SessionsDep
from app.ui.session import COOKIE, UiSession
from app.ui.views import PAGE_SIZE, banner, instance_rows, outcome

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
LIVE_REFRESH_SECONDS = 30.0  # the rows are sent again this often even without a change (countdowns, uptimes)
LIVE_POLL_SECONDS = 1.0  # how often the live stream looks at the store's revision (one indexed query)
LIVE_SESSION_CHECK_SECONDS = 5.0  # how often it checks that its session still holds
LIVE_MAX_SECONDS = 600.0  # a stream ends after this; the browser reconnects (EventSource), with its cookie as it is


def stopping_event(request: Request) -> asyncio.Event:
    """Set when the server is asked to stop: uvicorn waits for open responses before it stops, and a live stream
    would never end by itself (app/ui/shutdown.py)."""
    return request.app.state.ui_stopping


def render(request: Request, template: str, session: UiSession | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """A page (or fragment) for this session; a new session's cookie is set on it."""
    response = templates.TemplateResponse(request, template, {"session": session, **context},
                                          status_code=status_code)
    new = getattr(request.state, "new_session", None)
    if new is not None:
        set_session_cookie(request, response, new)
    return response


def set_session_cookie(request: Request, response: Response, value: str) -> None:
    settings = request.app.state.settings
    response.set_cookie(COOKIE, value, max_age=int(settings.ui_session_hours * 3600), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")


async def login_required(request: Request, _: LoginRequired) -> Response:
    """No valid session: HTMX is told to go to the login page, a browser is sent there."""
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": "/ui/login"})
    return RedirectResponse("/ui/login", status_code=303)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


# -- login ------------------------------------------------------------------------------------------------------
@router.get("/ui/login")
async def login_page(request: Request, settings: SettingsDep) -> Response:
    if not settings.auth_configured:
        return RedirectResponse("/ui", status_code=303)
    return render(request, "login.html", None)


@router.post("/ui/login")
async def login(request: Request, settings: SettingsDep, sessions: SessionsDep,
                token: Annotated[str, Form(max_length=4096)] = "") -> Response:
    """A token (API_TOKEN, or one's own from API_TOKENS_FILE) for a session cookie."""
    if not settings.auth_configured:
        return RedirectResponse("/ui", status_code=303)
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
        # Another site's page logging the browser in as someone else (login CSRF).
        return render(request, "login.html", None, status_code=403, error="Log in from this server's own page.")
    try:
        caller = await asyncio.to_thread(
            require_token, settings, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip()))
    except ApiError as exc:
        return render(request, "login.html", None, status_code=exc.status_code,
                      error="That token is not valid here." if exc.status_code == 401 else exc.detail)
    response = RedirectResponse("/ui", status_code=303)
    set_session_cookie(request, response, sessions.issue(caller, token.strip()))
    return response


@router.post("/ui/logout")
async def logout(session: CsrfDep, sessions: SessionsDep) -> Response:
    await asyncio.to_thread(sessions.end, session)  # a copy of the cookie no longer works either
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- instances --------------------------------------------------------------------------------------------------
def _filter(state: list[StateName] | None, tag: str | None, name: str | None) -> InstanceFilter:
    tag = (tag or "").strip()
    return InstanceFilter.of(state, [tag] if tag else None, (name or "").strip() or None)


States = Annotated[list[StateName] | None, Query()]


@router.get("/ui")
async def instances_page(request: Request, session: SessionDep, store: StoreDep, spending: SpendingDep,
                         state: States = None, tag: Annotated[str | None, Query(max_length=385)] = None,
                         name: Annotated[str | None, Query(max_length=128)] = None,
                         page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> HTMLResponse:
    """Instances: the table, its filters, the bulk bar and the spend banner."""
    wanted = _filter(state, tag, name)
    spend, spent = await asyncio.to_thread(banner, spending)
    rows, total = await asyncio.to_thread(instance_rows, store, spent, session.caller, wanted, page)
    query = request.url.query
    return render(request, "instances.html", session, rows=rows, total=total, page=page, page_size=PAGE_SIZE,
                  outcomes=request.app.state.ui_outcomes.of(session.sid),
                  banner=spend, query=query, filters={"state": state or [], "tag": tag or "", "name": name or ""},
                  states=list(StateName.__args__))  # type: ignore[attr-defined]


@router.get("/ui/rows")
async def instance_rows_fragment(request: Request, session: SessionDep, store: StoreDep, spending: SpendingDep,
                                 state: States = None, tag: Annotated[str | None, Query(max_length=385)] = None,
                                 name: Annotated[str | None, Query(max_length=128)] = None,
                                 page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> HTMLResponse:
    """The table's rows alone (the polling fallback of the live stream)."""
    return await asyncio.to_thread(_rows_response, request, session, store, spending, _filter(state, tag, name),
                                   page)


def _rows_html(request: Request, session: UiSession, store, spending, wanted: InstanceFilter, page: int) -> str:
    rows = request.app.state.ui_rows.get(store, spending, session.caller, wanted, page)
    outcomes = request.app.state.ui_outcomes.of(session.sid)
    return templates.get_template("_rows.html").render(request=request, session=session, rows=rows,
                                                       outcomes=outcomes)


def _rows_response(request, session, store, spending, wanted, page) -> HTMLResponse:
    return HTMLResponse(_rows_html(request, session, store, spending, wanted, page))


@router.get("/ui/events")
async def live(request: Request, session: SessionDep, store: StoreDep, spending: SpendingDep,
               state: States = None, tag: Annotated[str | None, Query(max_length=385)] = None,
               name: Annotated[str | None, Query(max_length=128)] = None,
               page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> StreamingResponse:
    """Server-sent events: `rows` (the table's rows, as HTML) whenever an instance record changes (on any
    replica: the store's revision), and every LIVE_REFRESH_SECONDS for the countdowns."""
    wanted = _filter(state, tag, name)

    cookie, sessions, stopping = request.cookies.get(COOKIE), request.app.state.ui_sessions, stopping_event(request)

    async def stream() -> AsyncIterator[str]:
        seen, sent_at = -1, 0.0
        loop = asyncio.get_running_loop()
        ends, checked = loop.time() + LIVE_MAX_SECONDS, loop.time()
        yield "retry: 3000\n\n"
        while not await request.is_disconnected() and not stopping.is_set() and loop.time() < ends:
            if loop.time() - checked >= LIVE_SESSION_CHECK_SECONDS:  # logged out, revoked, expired: the stream ends
                checked = loop.time()
                if await asyncio.to_thread(sessions.read, cookie) is None:
                    return
            revision = await asyncio.to_thread(store.revision)
            if revision != seen or loop.time() - sent_at >= LIVE_REFRESH_SECONDS:
                html = await asyncio.to_thread(_rows_html, request, session, store, spending, wanted, page)
                seen, sent_at = revision, loop.time()
                yield "event: rows\n" + "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), LIVE_POLL_SECONDS)

    # X-Accel-Buffering: nginx sends each event at once (docs/TEAM_SETUP.md has the other proxies' settings).
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/ui/actions")
async def bulk(request: Request, session: CsrfDep, service: ServiceDep,
               action: Annotated[str, Form(pattern="^(start|stop|delete)$")],
               ids: Annotated[list[str] | None, Form()] = None) -> HTMLResponse:
    """The bulk bar: one request for the selected instances; each row's outcome comes back (out of band), and a
    refusal of the whole request (the budget for a set of starts, nothing selected) in the bar's notice."""
    if not ids:
        return render(request, "_outcomes.html", session, outcomes={}, notice="Select at least one instance first.")
    if len(ids) > MAX_BULK:
        return render(request, "_outcomes.html", session, outcomes={},
                      notice=f"Select at most {MAX_BULK} instances at once.")
    try:
        results = await service.bulk(action, ids, session.caller)
    except ApiError as exc:
        return render(request, "_outcomes.html", session, outcomes={}, notice=f"{action} refused: {exc.detail}")
    outcomes = {r["id"]: outcome(action, r) for r in results}
    request.app.state.ui_outcomes.keep(session.sid, outcomes)
    return render(request, "_outcomes.html", session, outcomes=outcomes, notice="")
