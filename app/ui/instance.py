"""The dashboard's Instance page (`/ui/instances/{id}`): its details, the ssh command with a copy button, a tags
editor, auto-stop / schedule / snooze controls, a CPU chart loaded on request and the events timeline.

Each control calls the same service method as the API (so the same checks and budget admission apply) and shows
the API's own message next to it on a refusal. The page reads the store only; an `aws` process runs only for what
a person clicks (a tag change, the CPU chart's cached metrics call)."""

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from app.api.deps import StoreDep
from app.budget.deps import SpendingDep
from app.budget.spending import Spending
from app.core import clock
from app.core.clock import parse_time
from app.core.errors import ApiError
from app.instances.deps import ServiceDep
from app.instances.schemas import RESERVED_TAG_KEYS, InstancePatch, Snooze
from app.store import Database
from app.store.instances import next_action
from app.store.rows import InstanceRow
from app.ui.deps import CsrfDep, SessionDep
from app.ui.router import render
from app.ui.session import UiSession
from app.ui.views import body_errors, duration

router = APIRouter(include_in_schema=False)

CPU_MINUTES, CPU_PERIOD = 60, 300  # the chart: the last hour, 5-minute datapoints (basic monitoring)
CHART_W, CHART_H, CHART_PAD = 600, 200, 32

FormText = Annotated[str, Form(max_length=512)]


def _visible(store: Database, instance_id: str, session: UiSession) -> InstanceRow | None:
    row = store.get_instance(instance_id)
    return row if row is not None and session.caller.may_see(row["owner"]) else None


def _details(store: Database, spending: Spending, row: InstanceRow) -> dict[str, Any]:
    """What the page shows of an instance, from the store and the spend ledger (no AWS)."""
    now = clock.now()
    action = next_action(row)
    at = parse_time(action["at"]) if action else None
    cost = spending.cost_of(row)
    return {
        "next": None if action is None or at is None else {
            **action, "in": duration((at - now).total_seconds()), "overdue": at <= now,
            "when": at.strftime("%Y-%m-%d %H:%M UTC")},
        "cost": cost,
        "events": list(reversed(store.list_events(row["id"]))),  # newest first
        "schedules": [s["name"] for s in store.list_schedules()],
        "tags": {k: v for k, v in (row["tags"] or {}).items() if k not in RESERVED_TAG_KEYS},
    }


def _number(text: str) -> int | float | str | None:
    """A form's number as the API's JSON would carry it (empty: null); what is not a number stays text (and is
    refused as the API refuses it)."""
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _problem(exc: ValidationError, body: dict) -> str:
    """The API's 422 detail for the same body."""
    return str(body_errors(exc, body, InstancePatch)["detail"])


async def _page(request: Request, session: UiSession, store: Database, spending: Spending, instance_id: str,
                status_code: int = 200, fragment: bool = False, **context: Any) -> HTMLResponse:
    row = await asyncio.to_thread(_visible, store, instance_id, session)
    if row is None:
        return render(request, "instance_missing.html", session, status_code=404, instance_id=instance_id)
    shown = await asyncio.to_thread(_details, store, spending, row)
    template = "_instance_panel.html" if fragment else "instance.html"
    return render(request, template, session, status_code=status_code, row=row, **shown,
                  errors=context.pop("errors", {}), notes=context.pop("notes", {}), asked=context.pop("asked", {}),
                  **context)


@router.get("/ui/instances/{instance_id}")
async def instance_page(request: Request, instance_id: str, session: SessionDep, store: StoreDep,
                        spending: SpendingDep) -> HTMLResponse:
    """One instance: details, controls, the events timeline (a 404 page when it is not the caller's)."""
    return await _page(request, session, store, spending, instance_id[:64])


async def _act(request: Request, session: UiSession, store: Database, spending: Spending, instance_id: str,
               control: str, body: dict, model: type[BaseModel], call: Any, done: str,
               asked: dict[str, str] | None = None) -> Response:
    """Validate `body` as the API would, call the service, and answer: for HTMX the panel again with the outcome
    next to `control`; for a plain form a redirect back (PRG), or the page with the refusal and its status."""
    instance_id = instance_id[:64]
    if await asyncio.to_thread(_visible, store, instance_id, session) is None:
        return render(request, "instance_missing.html", session, status_code=404, instance_id=instance_id)
    htmx = bool(request.headers.get("hx-request"))
    try:
        await call(model.model_validate(body))
    except ValidationError as exc:
        status, detail = 422, _problem(exc, body)
    except ApiError as exc:
        status, detail = exc.status_code, exc.detail
    else:
        if not htmx:
            return RedirectResponse(f"/ui/instances/{instance_id}", status_code=303)
        return await _page(request, session, store, spending, instance_id, fragment=True, notes={control: done})
    # HTMX swaps only 2xx answers: the refusal's status travels in the panel (data-status) and a header.
    response = await _page(request, session, store, spending, instance_id, status_code=200 if htmx else status,
                           fragment=htmx, errors={control: {"detail": detail, "status": status}}, asked=asked or {})
    response.headers["X-Api-Status"] = str(status)
    return response


@router.post("/ui/instances/{instance_id}/tags")
async def set_tag(request: Request, instance_id: str, session: CsrfDep, store: StoreDep, spending: SpendingDep,
                  service: ServiceDep, key: FormText = "", value: FormText = "",
                  remove: Annotated[bool, Form()] = False) -> Response:
    """The tags editor: set `key` to `value`, or remove `key` (PATCH tags, null removes)."""
    key = key.strip()
    body = {"tags": {key: None if remove else value}}
    return await _act(request, session, store, spending, instance_id, "tags", body, InstancePatch,
                      lambda change: service.patch(instance_id, change),
                      f"Removed {key}." if remove else f"Set {key}.", asked={"key": key, "value": value})


@router.post("/ui/instances/{instance_id}/auto-stop")
async def set_auto_stop(request: Request, instance_id: str, session: CsrfDep, store: StoreDep,
                        spending: SpendingDep, service: ServiceDep, auto_stop_minutes: FormText = "") -> Response:
    """Auto-stop: minutes after each start; empty is never (PATCH auto_stop_minutes)."""
    minutes = auto_stop_minutes.strip()
    body = {"auto_stop_minutes": _number(minutes)}
    return await _act(request, session, store, spending, instance_id, "auto_stop", body, InstancePatch,
                      lambda change: service.patch(instance_id, change),
                      f"Auto-stop set to {minutes} min." if minutes else "Auto-stop off.")


@router.post("/ui/instances/{instance_id}/schedule")
async def set_schedule(request: Request, instance_id: str, session: CsrfDep, store: StoreDep,
                       spending: SpendingDep, service: ServiceDep, schedule: FormText = "") -> Response:
    """The attached schedule, or none (PATCH schedule)."""
    name = schedule.strip()
    body = {"schedule": name or None}
    return await _act(request, session, store, spending, instance_id, "schedule", body, InstancePatch,
                      lambda change: service.patch(instance_id, change),
                      f"Schedule {name} attached." if name else "No schedule.")


@router.post("/ui/instances/{instance_id}/snooze")
async def snooze(request: Request, instance_id: str, session: CsrfDep, store: StoreDep, spending: SpendingDep,
                 service: ServiceDep, minutes: FormText = "") -> Response:
    """Push the next stop by `minutes` (POST /instances/{id}/snooze)."""
    body = {"minutes": _number(minutes)}
    return await _act(request, session, store, spending, instance_id, "snooze", body, Snooze,
                      lambda asked: service.snooze(instance_id, asked.minutes, None, actor=session.caller.name),
                      f"Next stop pushed by {minutes.strip()} min.")


# -- the CPU chart ------------------------------------------------------------------------------------------------
def line_chart(points: list[dict[str, Any]], start: str, end: str) -> dict[str, Any]:
    """An inline SVG line chart's geometry: CPU % (0-100) against time from `start` to `end`."""
    t0, t1 = parse_time(start), parse_time(end)
    if t0 is None or t1 is None or t1 <= t0:
        return {"path": "", "dots": []}
    span = (t1 - t0).total_seconds()
    inner_w, inner_h = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD
    dots = []
    for point in points:
        at, value = parse_time(point["timestamp"]), point.get("average")
        if at is None or value is None:
            continue
        x = CHART_PAD + inner_w * min(1.0, max(0.0, (at - t0).total_seconds() / span))
        y = CHART_PAD + inner_h * (1 - min(100.0, max(0.0, float(value))) / 100)
        dots.append({"x": round(x, 1), "y": round(y, 1), "value": float(value), "at": point["timestamp"]})
    path = " ".join(f"{'M' if i == 0 else 'L'}{d['x']},{d['y']}" for i, d in enumerate(dots))
    return {"path": path, "dots": dots}


def _clock(text: str) -> str:
    at = parse_time(text)
    return at.strftime("%H:%M") if isinstance(at, datetime) else text


@router.get("/ui/instances/{instance_id}/cpu")
async def cpu_chart(request: Request, instance_id: str, session: SessionDep, store: StoreDep,
                    service: ServiceDep) -> HTMLResponse:
    """The CPU chart, asked for: the cached GET /instances/{id}/metrics series (one `aws` process per 5 min)."""
    row = await asyncio.to_thread(_visible, store, instance_id[:64], session)
    if row is None:
        return render(request, "_instance_cpu.html", session, status_code=404,
                      error=f"No instance {instance_id[:64]!r} is tracked.")
    try:
        series = await service.instance_metrics(row, "CPUUtilization", CPU_MINUTES, CPU_PERIOD)
    except ApiError as exc:
        return render(request, "_instance_cpu.html", session, error=exc.detail)
    chart = line_chart(series["datapoints"], series["start"], series["end"])
    return render(request, "_instance_cpu.html", session, series=series, chart=chart, w=CHART_W, h=CHART_H,
                  pad=CHART_PAD, since=_clock(series["start"]), until=_clock(series["end"]), error=None)
