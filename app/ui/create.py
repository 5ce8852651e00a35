"""The Create page: a form whose fields are POST /instances' own, an estimate of what the new instance costs and
what it leaves of the budget (before submitting), and a refusal's own message next to the field at fault.

Nothing here spawns an `aws` process before the person submits: the AMI aliases come from the cached catalogue
(`service.catalog`, never `ensure_catalog`), the estimate from the spend guard's prices and ledger."""

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.api.deps import StoreDep
from app.budget.deps import SpendingDep
from app.budget.spending import Spending
from app.core import clock
from app.core.clock import parse_time
from app.core.errors import ApiError
from app.instances.deps import ServiceDep
from app.instances.free_tier import ALIASES, check_catalog, check_static
from app.instances.schemas import MAX_STORAGE_GB, MIN_STORAGE_GB, InstanceCreate
from app.instances.service import InstanceService
from app.ui.deps import CsrfDep, SessionDep
from app.ui.router import render
from app.ui.session import UiSession
from app.ui.views import body_errors, duration

router = APIRouter(include_in_schema=False)

FIELDS = ("name", "ami", "instance_type", "storage_gb", "auto_stop_minutes", "schedule", "associate_public_ip",
          "ssh_from")
# A refusal's code -> the field it is about; any other code is shown above the form.
FIELD_OF_CODE = {
    "storage_not_free_tier": "storage_gb",
    "instance_type_not_allowed": "instance_type", "instance_type_not_free_tier": "instance_type",
    "price_unknown": "instance_type",
    "ami_alias_unavailable": "ami", "ami_not_free_tier": "ami", "architecture_mismatch": "ami",
    "unknown_schedule": "schedule",
    "my_ip_unavailable": "ssh_from",
}


# -- the choices ---------------------------------------------------------------------------------------------------
def ami_choices(service: InstanceService) -> list[dict[str, str]]:
    """The AMI aliases this target publishes (with their architectures), then FREE_TIER_AMIS ids it knows; from
    the cached catalogue. No catalogue yet: every alias (a create then says which one is not published)."""
    catalog = service.catalog
    published: dict[str, set[str]] = {}
    for alias, arch in catalog.by_alias:
        published.setdefault(alias, set()).add(arch)
    if not published:
        return [{"value": alias, "label": alias} for alias in ALIASES]
    choices = [{"value": alias, "label": f"{alias} ({', '.join(sorted(published[alias]))})"}
               for alias in ALIASES if alias in published]
    for ami_id in service.settings.free_tier_amis:
        info = catalog.amis.get(ami_id)
        if info is not None and not info.alias:
            choices.append({"value": ami_id, "label": f"{ami_id} ({info.image_name or info.architecture})"})
    return choices


def type_choices(service: InstanceService) -> list[dict[str, str]]:
    """ALLOWED_INSTANCE_TYPES, each with its architecture as EC2 reported it (the cached catalogue)."""
    types = service.catalog.types
    choices = []
    for name in service.settings.allowed_instance_types:
        note = types.get(name) or ("not reported free-tier here" if types else "")
        choices.append({"value": name, "label": f"{name} ({note})" if note else name})
    return choices


# -- the form ------------------------------------------------------------------------------------------------------
def form_values(form: Any) -> dict[str, Any]:
    """What the form holds, as typed (for showing it again)."""
    values: dict[str, Any] = {name: str(form.get(name) or "").strip() for name in FIELDS
                              if name != "associate_public_ip"}
    values["associate_public_ip"] = form.get("associate_public_ip") is not None
    return values


def request_body(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body POST /instances would get (omitted optional fields stay omitted: an empty auto-stop is the
    server's default), and the fields a number could not be read from."""
    body: dict[str, Any] = {"associate_public_ip": values["associate_public_ip"]}
    errors: dict[str, str] = {}
    for name in ("name", "ami", "instance_type", "schedule", "ssh_from"):
        if values[name]:
            body[name] = values[name]
    for name in ("storage_gb", "auto_stop_minutes"):
        if values[name]:
            try:
                body[name] = int(values[name])
            except ValueError:
                errors[name] = "must be a whole number"
    return body, errors


def parse(body: dict[str, Any]) -> tuple[InstanceCreate | None, dict[str, str]]:
    """The create request, or each field's problem in the API's own words (its 422 `errors`)."""
    try:
        return InstanceCreate.model_validate(body), {}
    except ValidationError as exc:
        listed = body_errors(exc, body, InstanceCreate)["errors"]
        errors: dict[str, str] = {}
        for err in listed:
            field = str(err["loc"][1]) if len(err["loc"]) > 1 else ""
            errors.setdefault(field if field in FIELDS else "", err["msg"])
        return None, errors


# -- the estimate --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    hourly_usd: float  # while it runs (compute, public IPv4, disk)
    stop_at: datetime | None  # its planned stop (auto-stop or schedule); None: runs to the month's end
    stop_source: str | None
    run_usd: float  # from now to its planned stop (or the month's end)
    month_usd: float  # what it commits this month (the run, and the disk to the month's end)
    later_usd: float  # the most it commits to a later month (its disk while it exists, a run reaching in)
    budget_usd: float
    budget_setting: str
    committed_usd: float  # before it
    refusal: str | None  # the budget's 409 budget_exceeded, when it would not fit

    @property
    def remaining_usd(self) -> float:
        return self.budget_usd - self.committed_usd

    @property
    def remaining_after_usd(self) -> float:
        return self.remaining_usd - self.month_usd


def estimate(service: InstanceService, spending: Spending, req: InstanceCreate) -> Estimate:
    """What POST /instances would commit for `req`, as its admission counts it, and whether it fits the budget
    (Spending.admit with no key only checks). Reads prices and the ledger: no process. Blocking (a thread)."""
    req, auto_default = service.with_default_auto_stop(req)
    rates = spending.rates_for(req.instance_type, req.storage_gb)  # 400 price_unknown
    charges = service.create_charges(req, rates, auto_default)  # the very charges a create is admitted for
    now = clock.now()
    stop_at, source = service.planned_stop(req, auto_default, now)
    until = parse_time(stop_at)
    hourly = rates.compute + (rates.ipv4 if req.associate_public_ip else 0.0) + rates.storage
    summary = spending.summary(now)
    end = summary.period_end
    run_until = min(until, end) if until else end
    run = hourly * max(0.0, (run_until - now).total_seconds() / 3600)
    refusal = None
    try:
        spending.admit(None, charges, f"Creating this {req.instance_type}")
    except ApiError as exc:
        refusal = exc.detail
    return Estimate(hourly, until, source, run, charges.totals[0], max(charges.totals[1:], default=0.0),
                    spending.budget_usd,
                    spending.budget_setting, summary.committed_usd, refusal)


def policy_problem(service: InstanceService, req: InstanceCreate) -> tuple[str, str] | None:
    """(field, message) of the free-tier refusal a create would get, from the cached catalogue (no process)."""
    try:
        check_static(service.settings.allowed_instance_types, req.instance_type, req.storage_gb)
        if service.catalog.types:
            check_catalog(service.catalog, service.settings.allowed_instance_types, req.ami, req.instance_type,
                          service.place)
    except ApiError as exc:
        return FIELD_OF_CODE.get(exc.code, ""), exc.detail
    return None


# -- the routes ----------------------------------------------------------------------------------------------------
def _defaults(service: InstanceService) -> dict[str, Any]:
    amis = [c["value"] for c in ami_choices(service)]
    types = service.catalog.types
    allowed = service.settings.allowed_instance_types
    return {"name": "", "ami": "amazon-linux-2023" if "amazon-linux-2023" in amis else (amis or [""])[0],
            "instance_type": next((t for t in allowed if t in types), allowed[0] if allowed else ""),
            "storage_gb": str(MIN_STORAGE_GB), "auto_stop_minutes": "", "schedule": "",
            "associate_public_ip": True, "ssh_from": "my_ip"}


async def _page(request: Request, session: UiSession, service: InstanceService, store, values: dict[str, Any],
                errors: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    schedules = [s["name"] for s in await asyncio.to_thread(store.list_schedules)]
    return render(request, "create.html", session, status_code=status_code, values=values, errors=errors or {},
                  amis=ami_choices(service), types=type_choices(service), schedules=schedules,
                  min_gb=MIN_STORAGE_GB, max_gb=MAX_STORAGE_GB,
                  default_auto_stop=service.settings.default_auto_stop_minutes)


@router.get("/ui/create")
async def create_page(request: Request, session: SessionDep, service: ServiceDep, store: StoreDep) -> HTMLResponse:
    """The Create form (the cached catalogue's choices; no process)."""
    return await _page(request, session, service, store, _defaults(service))


@router.post("/ui/create/estimate")
async def create_estimate(request: Request, session: CsrfDep, service: ServiceDep,
                          spending: SpendingDep) -> HTMLResponse:
    """The estimate of the form as it stands (HTMX, on every change): cost until its planned stop and this
    month, the budget's remaining after it, and whether it would be refused."""
    values = form_values(await request.form())
    body, errors = request_body(values)
    body.setdefault("name", "not-named-yet")  # the cost does not depend on it: no "required" while it is typed
    req, problems = parse(body) if not errors else (None, errors)
    context: dict[str, Any] = {"estimate": None, "problem": None}
    if req is None:
        field, message = next(iter(problems.items()))
        context["problem"] = f"{field}: {message}" if field else message
    elif (found := policy_problem(service, req)) is not None:
        context["problem"] = f"{found[0]}: {found[1]}" if found[0] else found[1]
    else:
        try:
            context["estimate"] = await asyncio.to_thread(estimate, service, spending, req)
        except ApiError as exc:  # price_unknown, unknown_schedule (the planner), a store that cannot answer
            context["problem"] = exc.detail
    return render(request, "_create_estimate.html", session, now=clock.now(), duration=duration, **context)


@router.post("/ui/create")
async def create(request: Request, session: CsrfDep, service: ServiceDep, store: StoreDep) -> Response:
    """Create it as POST /instances does (owned by the caller); then the instances page, where it shows pending
    then running live. Refused: the form again with the API's message next to the field at fault."""
    values = form_values(await request.form())
    body, errors = request_body(values)
    req, problems = parse(body) if not errors else (None, errors)
    if req is None:
        return await _page(request, session, service, store, values, problems, status_code=422)
    try:
        await service.create(req, None, caller=session.caller,
                             client_ip=request.client.host if request.client else None)
    except ApiError as exc:
        return await _page(request, session, service, store, values, {FIELD_OF_CODE.get(exc.code, ""): exc.detail},
                           status_code=exc.status_code)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": "/ui"})
    return RedirectResponse("/ui", status_code=303)
