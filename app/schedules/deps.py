"""The schedule routes' dependency: the service the lifespan built."""

from typing import Annotated

from fastapi import Depends, Request

from app.schedules.service import ScheduleService


def get_schedule_service(request: Request) -> ScheduleService:
    return request.app.state.schedules


ScheduleServiceDep = Annotated[ScheduleService, Depends(get_schedule_service)]
