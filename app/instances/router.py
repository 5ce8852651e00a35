"""Thin routes: validate, call the service, return the recorded instance."""

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response, status
from pydantic import StringConstraints

from app.api.deps import CallerDep, StoreDep, require_token
from app.api.errors import error_responses
from app.api.fields import IDEMPOTENCY_KEY_PATTERN, TAG_FILTER_PATTERN
from app.auth.tokens import Caller
from app.instances.deps import InstanceDep, ReconcilerDep, ServiceDep
from app.instances.idle_alarms import METRICS
from app.instances.schemas import (
    CREATE_EXAMPLE,
    BulkAction,
    BulkActionResult,
    Cost,
    EventList,
    Instance,
    InstanceCreate,
    InstanceFilter,
    InstanceList,
    InstancePatch,
    MetricSeries,
    Snooze,
    SshAccess,
    StateName,
    SyncResult,
)
from app.instances.service import InstanceService
from app.store.rows import InstanceRow

router = APIRouter(prefix="/instances", tags=["instances"], dependencies=[Depends(require_token)],
                   responses=error_responses(401))

AWS_ERRORS = (400, 403, 404, 409, 422, 502, 503, 504)

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN,
    description="Retry-safe create (1-255 printable ASCII characters): the same key with the same body returns the "
                "same instance (Idempotent-Replayed: true) and launches nothing; with another body, or a key someone "
                "else used, 409 idempotency_key_reused. Keys are kept for EVENTS_RETENTION_DAYS after their launch "
                "finished (then deleted with the events; default 90 days).")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Instance,
             responses=error_responses(*AWS_ERRORS))
async def create_instance(body: Annotated[InstanceCreate, Body(openapi_examples={"a_box": {
                              "summary": "t3.micro, 8 GB, the server's default auto-stop, no idle alarm",
                              "value": CREATE_EXAMPLE}})],
                          service: ServiceDep, response: Response, caller: CallerDep, request: Request,
                          idempotency_key: IdempotencyKey = None) -> Instance:
    """Launch a free-tier instance, owned by the caller; answers as soon as EC2 accepted it (state pending)."""
    row, replayed = await service.create(body, idempotency_key, caller=caller,
                                         client_ip=request.client.host if request.client else None)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Instance.from_row(row)


StateFilter = StateName
TagFilter = Annotated[str, StringConstraints(min_length=1, max_length=385, pattern=TAG_FILTER_PATTERN)]


@router.get("", response_model=InstanceList, responses=error_responses(422))
def list_instances(
        store: StoreDep,
        caller: CallerDep,
        include_terminated: bool = Query(False, description="Also list terminated ones"),
        state: Annotated[list[StateFilter] | None, Query(
            description="Only these states (repeatable: any of them); asking for terminated lists terminated ones")
        ] = None,
        tag: Annotated[list[TagFilter] | None, Query(
            description="`Key=Value`, or `Key` for any value (repeatable: all must match)")] = None,
        name: Annotated[str | None, Query(min_length=1, max_length=128, description="Exact name")] = None) -> Response:
    """List tracked instances (a user's own; an admin's: all), optionally filtered (from the database; never
    calls AWS)."""
    if not state and not tag and name is None:
        return Response(store.list_instances_json(include_terminated, caller.only_owner),
                        media_type="application/json")
    wanted = InstanceFilter.of(state, tag, name)
    rows = store.list_instances(include_terminated or wanted.asks_for_ended)
    body = InstanceList(instances=[Instance.from_row(r) for r in rows
                                   if caller.may_see(r["owner"]) and wanted.matches(r)])
    return Response(body.model_dump_json(exclude={"instances": {"__all__": {"cost"}}}), media_type="application/json")


@router.post("/actions", response_model=BulkActionResult, responses=error_responses(400, 403, 409, 422, 503))
async def bulk_action(body: BulkAction, service: ServiceDep, caller: CallerDep) -> BulkActionResult:
    """Stop, start or delete many instances (ids, or a selector) with one `aws` process; a result per instance.
    A user's selector matches their own instances only, and someone else's id is a 404 line."""
    ids = body.ids if body.ids is not None else await service.select(body.selector, caller)  # type: ignore[arg-type]
    results = await service.bulk(body.action, ids, caller)
    return BulkActionResult.model_validate({"action": body.action, "results": results})


@router.post("/sync", response_model=SyncResult, responses=error_responses(403, 502, 503, 504))
async def sync_instances(reconciler: ReconcilerDep, store: StoreDep, caller: CallerDep) -> SyncResult:
    """Reconcile with EC2 now: one describe-instances call; returns what changed (for a user: of their own)."""
    result = await reconciler.sweep()
    if caller.is_admin:
        return result
    named = [*result.adopted, *result.updated, *result.gone, *result.missing]
    rows = await asyncio.to_thread(store.get_instances, named) if named else {}
    mine = {i for i, row in rows.items() if caller.may_see(row["owner"])}
    return SyncResult.model_validate({field: [i for i in getattr(result, field) if i in mine]
                                      for field in ("adopted", "updated", "gone", "missing")})


@router.get("/{instance_id}", response_model=Instance, responses=error_responses(404, 422))
async def get_instance(instance: InstanceDep, service: ServiceDep) -> Instance:
    """One tracked instance, with its spend this budget period (from the database; never calls AWS)."""
    cost = await asyncio.to_thread(service.spending.cost_of, instance)
    return Instance.from_row(instance, Cost(spent_usd=cost.spent_usd, projected_usd=cost.projected_usd))


@router.patch("/{instance_id}", response_model=Instance, responses=error_responses(400, 403, 404, 409, 422))
async def patch_instance(instance: InstanceDep, change: InstancePatch, service: ServiceDep) -> Instance:
    """Change its name, its tags (null removes one), its auto-stop (auto_stop_minutes or stop_at), its schedule."""
    return Instance.from_row(await service.patch(instance["id"], change))


@router.post("/{instance_id}/snooze", response_model=Instance, responses=error_responses(400, 404, 409, 422))
async def snooze_instance(instance: InstanceDep, body: Snooze, service: ServiceDep, caller: CallerDep) -> Instance:
    """Push its next stop (schedule or auto-stop) by `minutes` or to `until`; no `aws` process. Budget-checked."""
    return Instance.from_row(await service.snooze(instance["id"], body.minutes, body.until, actor=caller.name))


@router.put("/{instance_id}/ssh-access", response_model=Instance, responses=error_responses(*AWS_ERRORS))
async def put_ssh_access(instance: InstanceDep, body: SshAccess, service: ServiceDep, request: Request) -> Instance:
    """Replace who may reach port 22 (home -> office) in the instance's own security group: the same instance,
    two `aws` processes (none when that rule is already in force)."""
    return Instance.from_row(await service.set_ssh_access(
        instance["id"], body.ssh_from, request.client.host if request.client else None))


MetricName = Literal[METRICS]  # type: ignore[valid-type]


@router.get("/{instance_id}/metrics", response_model=MetricSeries, responses=error_responses(*AWS_ERRORS))
async def instance_metrics(
        instance: InstanceDep, service: ServiceDep,
        metric: Annotated[MetricName, Query(description="An AWS/EC2 metric")] = "CPUUtilization",
        minutes: Annotated[int, Query(ge=1, le=1440, description="How far back, in minutes (up to one day)")] = 60,
        period: Annotated[int, Query(ge=60, le=86400, multiple_of=60, description=(
            "Seconds per datapoint, a multiple of 60 (basic monitoring has 5-minute data: 300)"))] = 300,
) -> MetricSeries:
    """Its CloudWatch datapoints (one `aws` process, then cached for min(period, 5 min))."""
    return MetricSeries.model_validate(await service.instance_metrics(instance, metric, minutes, period))


@router.get("/{instance_id}/events", response_model=EventList, responses=error_responses(404, 422))
def instance_events(instance: InstanceDep, store: StoreDep) -> EventList:
    """The instance's history: every observed state change, with time and source."""
    return EventList.model_validate({"events": store.list_events(instance["id"])})


async def _transition(instance: InstanceRow, action: str, service: InstanceService, response: Response,
                      caller: Caller) -> Instance:
    row, changed = await service.transition(instance["id"], action, actor=caller.name)
    response.status_code = status.HTTP_202_ACCEPTED if changed else status.HTTP_200_OK
    return Instance.from_row(row)


@router.post("/{instance_id}/start", response_model=Instance, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"description": "Already running or pending (nothing done)", "model": Instance},
                        **error_responses(*AWS_ERRORS)})
async def start_instance(instance: InstanceDep, service: ServiceDep, response: Response, caller: CallerDep) -> Instance:
    """Start a stopped instance (202, state pending); 200 if it already runs; 409 if terminated."""
    return await _transition(instance, "start", service, response, caller)


@router.post("/{instance_id}/stop", response_model=Instance, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"description": "Already stopping or stopped (nothing done)", "model": Instance},
                        **error_responses(*AWS_ERRORS)})
async def stop_instance(instance: InstanceDep, service: ServiceDep, response: Response, caller: CallerDep) -> Instance:
    """Stop a running instance (202, state stopping); 200 if already stopped; 409 if terminated."""
    return await _transition(instance, "stop", service, response, caller)


@router.delete("/{instance_id}", response_model=Instance, status_code=status.HTTP_202_ACCEPTED,
               responses={200: {"description": "Already terminated (nothing done)", "model": Instance},
                          **error_responses(*AWS_ERRORS)})
async def delete_instance(instance: InstanceDep, service: ServiceDep, response: Response,
                          caller: CallerDep) -> Instance:
    """Terminate the instance in EC2 (202); the record stays, with state terminated."""
    return await _transition(instance, "delete", service, response, caller)
