"""/schedules: office hours by name (admins define them; everyone lists, previews and attaches them)."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status

from app.api.deps import CallerDep, require_admin, require_token
from app.api.errors import error_responses
from app.api.fields import SCHEDULE_NAME_PATTERN
from app.schedules.deps import ScheduleServiceDep
from app.schedules.schemas import SCHEDULE_EXAMPLE, Preview, Schedule, ScheduleBody, ScheduleCreate, ScheduleList

router = APIRouter(prefix="/schedules", tags=["schedules"], dependencies=[Depends(require_token)],
                   responses=error_responses(401))

NamePath = Annotated[str, Path(description="The schedule's name", max_length=64,
                               json_schema_extra={"pattern": SCHEDULE_NAME_PATTERN})]
ADMIN = [Depends(require_admin)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Schedule, dependencies=ADMIN,
             responses=error_responses(400, 403, 409, 422))
async def create_schedule(body: Annotated[ScheduleCreate, Body(openapi_examples={"office_hours": {
                              "summary": "Weekdays 9 to 18 in Berlin, off on two holidays",
                              "value": SCHEDULE_EXAMPLE}})],
                          service: ScheduleServiceDep) -> Schedule:
    """Create a schedule (admins): when its instances start and stop. Attach it with `schedule` on an instance."""
    created = await asyncio.to_thread(service.create, body)
    service.wake()
    return Schedule.model_validate(created)


@router.get("", response_model=ScheduleList)
async def list_schedules(service: ScheduleServiceDep) -> ScheduleList:
    """Every schedule (from the database; never calls AWS)."""
    return ScheduleList.model_validate({"schedules": await asyncio.to_thread(service.db.list_schedules)})


@router.get("/{name}", response_model=Schedule, responses=error_responses(404, 422))
async def get_schedule(name: NamePath, service: ScheduleServiceDep) -> Schedule:
    """One schedule."""
    return Schedule.model_validate(await asyncio.to_thread(service.get, name))


@router.put("/{name}", response_model=Schedule, dependencies=ADMIN,
            responses=error_responses(400, 403, 404, 422))
async def replace_schedule(name: NamePath, body: ScheduleBody, service: ScheduleServiceDep) -> Schedule:
    """Change a schedule (admins); its running instances' next stops are planned again (a snooze is kept)."""
    changed = await asyncio.to_thread(service.replace, name, body)
    service.wake()
    return Schedule.model_validate(changed)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=ADMIN,
               responses=error_responses(403, 404, 409, 422))
async def delete_schedule(name: NamePath, service: ScheduleServiceDep, caller: CallerDep) -> Response:
    """Delete a schedule (admins); 409 schedule_in_use while an instance has it attached."""
    await asyncio.to_thread(service.delete, name, caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/preview", response_model=Preview, responses=error_responses(404, 422))
async def preview_schedule(name: NamePath, service: ScheduleServiceDep, caller: CallerDep,
                           days: Annotated[int, Query(ge=1, le=31, description="How many days ahead (1-31)")] = 7,
                           ) -> Preview:
    """What the schedule would do over the next `days` days (its instances that you may see) and what it saves
    against running them all the time, priced by the spend guard's price file."""
    return Preview.model_validate(await asyncio.to_thread(service.preview, name, days, caller))
