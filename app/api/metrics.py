"""GET /metrics: Prometheus text (from the record and this process's counters; never calls AWS)."""

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import SettingsDep, _bearer, require_admin, require_token
from app.api.errors import error_responses

router = APIRouter(tags=["metrics"], responses=error_responses(401, 403))


def metrics_access(settings: SettingsDep,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """METRICS_TOKEN opens it to a scraper; otherwise it needs an admin's token (API_TOKEN, or an admin of
    API_TOKENS_FILE) when any token is configured: it counts every person's instances."""
    if settings.metrics_token is not None and credentials is not None and hmac.compare_digest(
            credentials.credentials.encode(), settings.metrics_token.get_secret_value().encode()):
        return
    require_admin(require_token(settings, credentials))


@router.get("/metrics", dependencies=[Depends(metrics_access)],
            responses={200: {"content": {"text/plain": {"example": "ec2cl_instances{state=\"running\"} 2.0\n"}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, aws processes, instances by state, last sweep, committed budget."""
    body = await asyncio.to_thread(generate_latest, request.app.state.metrics.registry)  # reads the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)
