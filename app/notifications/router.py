"""GET /notifications: what was sent where, and what is still being retried (from the database)."""

import asyncio

from fastapi import APIRouter, Depends, Query, Request

from app.api.deps import StoreDep, require_admin
from app.api.errors import error_responses
from app.notifications.schemas import Notifications

# The whole server's deliveries (every person's instances): an admin's (403 for a user).
router = APIRouter(tags=["notifications"], dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 403))


@router.get("/notifications", response_model=Notifications, responses=error_responses(422))
async def list_notifications(request: Request, store: StoreDep,
                             limit: int = Query(50, ge=1, le=500, description="Newest first")) -> Notifications:
    """Recent deliveries, newest first: channel, status, attempts, last error (never a secret)."""
    notifier = request.app.state.notifier
    rows = await asyncio.to_thread(store.list_deliveries, limit)
    return Notifications(enabled=notifier.enabled, channels=[c.name for c in notifier.channels],
                         deliveries=rows)
