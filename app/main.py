"""The application: settings, database, reconciler task, routes, offline docs, one error envelope."""

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings, config_problems, get_settings
from app.errors import ApiError, install_error_handlers
from app.models.instance import Health
from app.routers import budget, instances, inventory, metrics, notifications
from app.security import GuardMiddleware, check_bind
from app.services import clock
from app.services.aws_cli import AwsCli
from app.services.cloudwatch import AlarmKeeper
from app.services.db import Database, SchemaTooNew, open_database
from app.services.enforcement import BudgetGuard
from app.services.instances import InstanceService
from app.services.notifications import Notifier
from app.services.observability import Metrics, RequestMiddleware, configure_logging
from app.services.replicas import Leadership
from app.services.scheduling import AutoStopper

log = logging.getLogger("ec2_creator")


def _load_settings() -> Settings:
    """The settings, or SystemExit with one line per problem, each naming its variable."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise SystemExit("\n".join(f"ec2-creator-local: bad configuration: {line}"
                                   for line in config_problems(exc))) from None


class QuietStartupExit:
    """Pure ASGI: a SystemExit with a message raised while the app starts (a database of a newer version, a
    public --host without a token) ends the start with that message on stderr, without the traceback that
    Starlette attaches to a failed startup (uvicorn would print it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                stop = sys.exc_info()[1]  # Starlette sends this from the `except` that caught it
                if isinstance(stop, SystemExit) and isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr, flush=True)
                    message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, quiet_send)


async def _warm_catalog(service: InstanceService) -> None:
    try:
        await service.ensure_catalog()
    except ApiError as exc:
        log.warning("AMI catalogue not loaded yet (%s); the next create retries", exc.detail)


async def _log_cli_version(aws: AwsCli, db: Database) -> None:
    """Log which AWS CLI the server runs, and its version. `aws --version` costs a process, so the answer is
    kept in the database for that executable (path, size, modification time) and asked again only when it
    changes."""
    path = aws.env["AWS_CLI"]
    try:
        found = os.stat(path)
    except OSError as exc:
        log.error("AWS_CLI=%s cannot be found (%s): every AWS call will fail. Set AWS_CLI to the aws executable.",
                  path, exc.strerror)
        return
    key = f"aws_cli_version:{os.path.realpath(path)}:{found.st_size}:{found.st_mtime_ns}"
    version = await asyncio.to_thread(db.kv_get, key)
    if version is None:
        try:
            version = await aws.version()
        except ApiError as exc:
            log.error("%s", exc.detail)
            return
        await asyncio.to_thread(db.kv_set, key, version)
    log.info("AWS CLI %s: %s", path, version)
    if version.startswith("aws-cli/1."):
        log.info("AWS CLI v1 is in maintenance mode since 15 July 2026; to use v2, set AWS_CLI to its path "
                 "(docs/REFERENCE.md: Which AWS CLI)")


@asynccontextmanager
async def lifespan(app: FastAPI):
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    settings = await asyncio.to_thread(_load_settings)  # read at import; off the loop: Apprise imports
    configure_logging(settings.log_format)
    if settings.clock_start is not None:
        clock.start_at(settings.clock_start)
        log.warning("CLOCK_START: the service's clock reads %s (a test setting)", clock.now().isoformat())
    check_bind(settings)
    db = open_database(settings.database_url, settings.database_path)
    try:
        await asyncio.to_thread(db.migrate)
    except SchemaTooNew as exc:
        raise SystemExit(f"ec2-creator-local: {exc}") from None
    await asyncio.to_thread(db.claim_unscoped_launches, settings.region, settings.endpoint_key)
    metrics: Metrics = app.state.metrics
    aws = AwsCli(settings, on_process=metrics.aws_process)
    service = InstanceService(settings, db, aws)
    metrics.record.counts = db.count_by_state
    metrics.record.last_sweep = lambda: service.reconciler.last_success
    metrics.record.committed = lambda: service.spending.summary().committed_usd
    await service.load_catalog()
    app.state.settings, app.state.store = settings, db
    app.state.service, app.state.reconciler = service, service.reconciler
    notifier = Notifier(settings, db, service.spending, settings.region, settings.endpoint_key)
    if notifier.enabled:
        await asyncio.to_thread(db.enable_notifications)
    app.state.notifier = notifier
    stopper = AutoStopper(db, aws, service.recorder, service.reconciler)
    service.on_stop_at_changed = stopper.wake
    event_loop = asyncio.get_running_loop()

    def stop_armed() -> None:  # the recorder writes in worker threads
        with suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            event_loop.call_soon_threadsafe(stopper.wake)

    service.recorder.on_stop_armed = stop_armed
    alarms = AlarmKeeper(db, aws, settings.region, settings.endpoint_key, lambda: service.reconciler.account)
    guard = BudgetGuard(settings, db, aws, service.spending, service.recorder, service.reconciler)
    service.on_alarms_changed = alarms.wake
    endpoint = settings.ec2_endpoint_url or "the AWS default endpoint"
    if settings.aws_access_key_id:  # the CLI prefers keys in its environment to a profile
        credentials = "access key from settings" + (
            f" (it wins over AWS_PROFILE={settings.aws_profile})" if settings.aws_profile else "")
    else:
        credentials = f"profile {settings.aws_profile}" if settings.aws_profile else "the AWS CLI's default chain"
    log.info("EC2 Creator Local targets %s (%s, region %s, %s); budget %.2f USD a month (%s); AWS CLI %s; "
             "database %s", settings.target_label, endpoint, settings.region, credentials, settings.budget_usd,
             settings.budget_from, aws.env["AWS_CLI"], db.name)
    # On PostgreSQL several replicas may share the database: only the leader runs the background loops (a
    # follower retries within half an interval, so a dead leader is replaced within one sweep interval).
    leadership = Leadership(db, min(5.0, settings.reconcile_interval_seconds / 2))
    for loop in (service.reconciler, stopper, alarms, notifier, guard):
        loop.leadership = leadership

    if leadership.shared:  # another replica's request cannot wake the leader's loops: each sweep does
        def wake_after_sweep() -> None:
            stopper.wake()
            alarms.wake()

        service.reconciler.after_sweep = wake_after_sweep
    service.reconciler.on_swept = guard.wake  # a sweep may have adopted an instance: spend may pass the budget
    metrics.record.leader = lambda: leadership.is_leader
    leadership.start()
    warm = asyncio.create_task(_warm_catalog(service))
    cli = asyncio.create_task(_log_cli_version(aws, db))
    service.reconciler.start()
    stopper.start()
    alarms.start()
    guard.start()
    service.account_plan.start()
    notifier.start()
    if notifier.enabled:
        log.info("notifications: %s to %s", ", ".join(settings.notify_events) or "every event",
                 ", ".join(c.name for c in notifier.channels))
    try:
        yield
    finally:
        await stopper.stop()
        await guard.stop()
        await service.stop_background()
        await alarms.stop()
        await notifier.stop()
        await service.account_plan.stop()
        await service.reconciler.stop()
        await leadership.stop()
        warm.cancel()
        cli.cancel()


def create_app(settings_getter: Callable[[], Settings] = _load_settings) -> FastAPI:
    """The app; tests in process pass their own settings and override the dependencies in deps.py."""
    app = FastAPIOffline(
        title="EC2 Creator Local",
        version="1.0.0",
        description="Provision and manage free-tier EC2 instances through AWS CLI scripts. "
                    "Reads come from the local record; a background reconciler keeps it in step with EC2.\n\n"
                    "**Tokens** apply only when the server has `API_TOKEN` or `API_TOKENS_FILE` set: then every "
                    "route with a lock needs `Authorization: Bearer <token>` (*Authorize* takes it). Without "
                    "either, the server serves loopback only and no route needs a token: ignore the locks.\n\n"
                    "**Errors** have one shape, `{\"detail\": \"<what to do>\", \"code\": \"<machine code>\"}`; "
                    "each error status below lists its codes.",
        lifespan=lifespan,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.state.metrics = Metrics()
    app.add_middleware(GuardMiddleware, settings_getter=settings_getter)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)  # outermost: every answer counted
    app.add_middleware(QuietStartupExit)  # lifespan only
    app.include_router(instances.router)
    app.include_router(budget.router)
    app.include_router(notifications.router)
    app.include_router(inventory.router)
    app.include_router(metrics.router)

    @app.get("/health", response_model=Health, tags=["health"])
    async def health() -> dict:
        """Liveness: answers at once, never calls AWS."""
        return {"status": "ok"}

    return app


# Checked when uvicorn imports this module, before it starts the app: a bad setting ends the process with one
# line per problem on stderr (exit 1), not a traceback out of the lifespan. The lifespan reuses the result.
_load_settings()
app = create_app()
