"""The wiring, in one place: at start the settings, the store (migrated), the AWS runner, the services and
the background loops (sweeps, auto-stop, schedules, idle alarms, the budget guard, notifications), each loop run
by the leader replica only; at stop, the same in reverse. Schedules plug into the instances' stop plan here (the
instances domain does not import them)."""

import asyncio
import logging
import os
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from app.api.middleware import Metrics, configure_logging
from app.api.security import check_bind
from app.auth import tokens
from app.aws.runner import AwsCli
from app.budget import spending
from app.config import Settings, load_settings
from app.core import clock
from app.core.errors import ApiError
from app.core.leadership import Leadership
from app.instances.auto_stop import AutoStopper
from app.instances.budget_guard import BudgetGuard
from app.instances.idle_alarms import AlarmKeeper
from app.instances.service import InstanceService
from app.notifications import service as notifications
from app.notifications.service import Notifier
from app.schedules.planner import Calendars, SchedulePlanner
from app.schedules.scheduler import Scheduler
from app.schedules.service import ScheduleService
from app.store import Database, SchemaTooNew, open_database
from app.ui.session import Sessions, session_secret
from app.ui.shutdown import watch_stop_signals

log = logging.getLogger("ec2_creator")

# What the settings need checked by the domains that read them (files' formats, event names): installed here,
# where the app is wired, so that app/config.py imports no domain. Every problem is still one line at start.
SETTINGS_CHECKS = (tokens.settings_problems, spending.settings_problems, notifications.settings_problems)
Settings.checks = SETTINGS_CHECKS


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
    settings = await asyncio.to_thread(load_settings)  # read at import; off the loop: Apprise imports
    configure_logging(settings.log_format)
    if settings.clock_start is not None:
        clock.start_at(settings.clock_start)
        log.warning("CLOCK_START: the service's clock reads %s (a test setting)", clock.now().isoformat())
    check_bind(settings)
    db = open_database(settings.database_url, settings.database_path, settings.database_pool_size,
                       settings.database_max_overflow)
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
    app.state.spending, app.state.account_plan = service.spending, service.account_plan
    notifier = Notifier(settings, db, service.spending, settings.region, settings.endpoint_key)
    if notifier.enabled:
        await asyncio.to_thread(db.enable_notifications)
    app.state.notifier = notifier
    app.state.ui_sessions = Sessions(settings, await asyncio.to_thread(session_secret, settings, db), db)
    app.state.ui_stopping = asyncio.Event()  # the dashboard's live streams end when it is set
    watch_stop_signals(app.state.ui_stopping)
    calendars = Calendars(db)
    service.recorder.planner = SchedulePlanner(db, calendars)
    app.state.schedules = schedules = ScheduleService(db, service, calendars)
    scheduler = Scheduler(settings, db, aws, service, calendars)
    schedules.on_changed = scheduler.wake
    stopper = AutoStopper(db, aws, service.recorder, service.reconciler, service.locks)
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
    for loop in (service.reconciler, stopper, alarms, notifier, guard, scheduler):
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
    scheduler.start()
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
        app.state.ui_stopping.set()
        await scheduler.stop()
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
        await asyncio.to_thread(db.dispose)  # the pool's connections close now, not when the process ends
