"""The instance routes' dependencies: the service and the reconciler the lifespan built, and the instance a
path names (a 404 unless the caller may see it)."""

import asyncio
from typing import Annotated

from fastapi import Depends, Path, Request

from app.api.deps import CallerDep, StoreDep
from app.api.fields import INSTANCE_ID_PATTERN
from app.core.errors import NotFound
from app.instances.reconciler import Reconciler
from app.instances.service import InstanceService
from app.store.rows import InstanceRow


def get_service(request: Request) -> InstanceService:
    return request.app.state.service


def get_reconciler(request: Request) -> Reconciler:
    return request.app.state.reconciler


ServiceDep = Annotated[InstanceService, Depends(get_service)]
ReconcilerDep = Annotated[Reconciler, Depends(get_reconciler)]

# The pattern is documented (so clients and fuzzers see what an id looks like) but not enforced by
# the framework: any id we do not track, well-formed or not, is a plain 404.
InstanceIdPath = Annotated[str, Path(description="EC2 instance id, e.g. i-0123456789abcdef0", max_length=64,
                                     json_schema_extra={"pattern": INSTANCE_ID_PATTERN})]


async def valid_instance(instance_id: InstanceIdPath, store: StoreDep, caller: CallerDep) -> InstanceRow:
    """The recorded instance, or 404. Shared by every /instances/{instance_id} route. Another person's
    instance is a 404 too, with the same answer as an unknown id: a user cannot even learn it exists."""
    row = await asyncio.to_thread(store.get_instance, instance_id)
    if row is None or not caller.may_see(row["owner"]):
        raise NotFound(f"No instance {instance_id!r} is tracked. GET /instances lists the known ones.",
                       code="instance_not_found")
    return row


InstanceDep = Annotated[InstanceRow, Depends(valid_instance)]
