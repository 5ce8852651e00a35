"""CloudWatch: an instance's metrics (one `aws` process per answer, then cached) and the idle alarms.

An idle alarm stops an instance whose average CPU stays below a threshold for a while, by EC2's own stop
action (`arn:aws:automate:<region>:ec2:stop`), so it works while this server is down. Creates and PATCHes
only record what is asked (`stop_when_idle`); the AlarmKeeper, a lifespan task, makes CloudWatch match:
it puts the alarm, replaces it when the setting changes, and deletes it when the setting is removed or the
instance ends. Every call it makes is idempotent (a put replaces, a delete of nothing is fine), so two
replicas doing the same work do no harm. Every ten minutes, while any instance asks for an alarm, one
`describe-alarms` tells it what CloudWatch really holds (an alarm deleted in the console is put again).
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core import clock
from app.core.backoff import backoff
from app.core.clock import TIME_FORMAT, parse_time, utcnow
from app.core.errors import ApiError
from app.core.loops import WakeableLoop
from app.store import Database, canonical_json
from app.store.rows import InstanceRow, InstanceState

log = logging.getLogger("ec2_creator.cloudwatch")

METRICS = ("CPUUtilization", "NetworkIn", "NetworkOut", "CPUCreditBalance", "StatusCheckFailed")
ALARM_PREFIX = "ec2-creator-local-idle-stop-"
ALARM_PERIOD_SECONDS = 300
CACHE_SECONDS_MAX = 300  # basic monitoring publishes every 5 minutes: a longer cache would hide new data
CACHE_ENTRIES = 512
CHECK_SECONDS = 60.0  # the longest sleep of the alarm keeper between rounds
AUDIT_SECONDS = 600.0  # how often CloudWatch is asked what it holds (while any instance has an alarm)
RETRY_SECONDS, RETRY_MAX_SECONDS = 5.0, 1800.0
GONE = {"ResourceNotFound", "ResourceNotFoundException"}  # deleting an alarm that is not there
USED_KEY = "idle_alarms_used"  # kv: set once any instance asked for an idle alarm (the audit runs from then on)


def alarm_name(instance_id: str) -> str:
    return f"{ALARM_PREFIX}{instance_id}"


def wanted(row: Mapping[str, Any]) -> str | None:
    """The setting CloudWatch should hold for this instance (canonical JSON); none once it is shutting down."""
    return None if row["state"].ended or row["state"] == InstanceState.SHUTTING_DOWN \
        else canonical_json(row["stop_when_idle"])


def _cloudwatch_time(value: Any) -> str | None:
    """A datapoint's timestamp in our format: CLI v1 prints epoch seconds here, v2 ISO 8601."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime(TIME_FORMAT)
    at = parse_time(value if isinstance(value, str) else None)
    return at.strftime(TIME_FORMAT) if at else None


class Metrics:
    """GET /instances/{id}/metrics: one get-metric-statistics per (instance, metric, minutes, period), cached
    for min(period, 5 min); concurrent asks for the same series share one process."""

    def __init__(self, aws) -> None:
        self.aws = aws
        self._cache: OrderedDict[tuple, tuple[float, dict]] = OrderedDict()
        self._inflight: dict[tuple, asyncio.Task] = {}

    async def series(self, row: InstanceRow, metric: str, minutes: int, period: int) -> dict:
        key = (row["id"], row["region"], metric, minutes, period)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._inflight.get(key)
        if task is None:  # its own task: a caller that gives up does not cancel it for the others
            task = self._inflight[key] = asyncio.create_task(self._fetch_and_keep(key, row, metric, minutes, period))
        return await asyncio.shield(task)

    async def _fetch_and_keep(self, key: tuple, row: InstanceRow, metric: str, minutes: int, period: int) -> dict:
        try:
            answer = await self._fetch(row, metric, minutes, period)
        finally:
            del self._inflight[key]
        self._cache[key] = (time.monotonic() + min(period, CACHE_SECONDS_MAX), answer)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return answer

    async def _fetch(self, row: InstanceRow, metric: str, minutes: int, period: int) -> dict:
        end = clock.now().replace(microsecond=0)
        start = end - timedelta(minutes=minutes)
        doc = await self.aws.run("get_metric_statistics.sh", "--instance-id", row["id"], "--metric", metric,
                                 "--start", start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 "--end", end.strftime("%Y-%m-%dT%H:%M:%SZ"), "--period", str(period),
                                 region=row["region"])
        points = []
        for point in doc.get("Datapoints") or []:
            at = _cloudwatch_time(point.get("Timestamp"))
            if at is None:
                continue
            points.append({"timestamp": at, "average": point.get("Average"), "minimum": point.get("Minimum"),
                           "maximum": point.get("Maximum"), "sum": point.get("Sum"),
                           "sample_count": point.get("SampleCount"), "unit": point.get("Unit")})
        points.sort(key=lambda p: p["timestamp"])
        return {"instance_id": row["id"], "metric": metric, "period": period,
                "start": start.strftime(TIME_FORMAT), "end": end.strftime(TIME_FORMAT),
                "unit": next((p["unit"] for p in points if p["unit"]), None), "datapoints": points,
                "fetched_at": utcnow()}


def observed_setting(alarm: dict) -> str | None:
    """What an alarm of ours in CloudWatch does, as a setting (canonical JSON); "{}" when it is not the alarm
    we put (changed by hand): then it is put again."""
    try:
        minutes = int(alarm["EvaluationPeriods"]) * int(alarm["Period"]) // 60
        setting = {"cpu_below_percent": round(float(alarm["Threshold"]), 2), "for_minutes": minutes}
        actions = alarm.get("AlarmActions") or []
        ours = (alarm.get("MetricName") == "CPUUtilization" and alarm.get("Namespace") == "AWS/EC2"
                and alarm.get("ComparisonOperator") == "LessThanThreshold" and len(actions) == 1
                and actions[0].endswith(":ec2:stop") and int(alarm["Period"]) == ALARM_PERIOD_SECONDS)
    except (KeyError, TypeError, ValueError):
        return "{}"
    return canonical_json(setting) if ours else "{}"


class AlarmKeeper(WakeableLoop):
    """Makes each instance's CloudWatch idle alarm what its record asks for (see the module docstring)."""

    name = "idle-alarms"
    failure_delay = CHECK_SECONDS

    def __init__(self, db: Database, aws, region: str, endpoint: str,
                 account: Callable[[], str | None] = lambda: None) -> None:
        self.db = db
        self.aws = aws
        self.region = region
        self.endpoint = endpoint
        self.account = account  # the AWS account of the server's credentials, once known
        self._audited_at = float("-inf")
        super().__init__()

    async def round(self) -> None:
        await self.run_once()

    async def next_delay(self) -> float:
        return await self._delay()

    async def _delay(self) -> float:
        retry = parse_time(await asyncio.to_thread(self.db.next_alarm_retry, self.region, self.endpoint,
                                                   self.account()))
        if retry is None:
            return CHECK_SECONDS
        return min(CHECK_SECONDS, max(1.0, (retry - clock.now()).total_seconds() + 0.05))

    async def run_once(self) -> int:
        """One round: audit when due, then put or delete what differs. Returns the `aws` calls that succeeded."""
        if time.monotonic() - self._audited_at >= AUDIT_SECONDS:
            await self.audit()
        done = 0
        for row in await asyncio.to_thread(self.db.alarm_work, self.region, self.endpoint, self.account(), utcnow()):
            try:
                done += await self._converge(row)
            except Exception as exc:  # noqa: BLE001 - one bad row must not starve the others
                log.exception("idle alarms: %s failed", row["id"])
                try:
                    await asyncio.to_thread(self._record_failure, row["id"], f"internal error: {exc}")
                except Exception:  # noqa: BLE001 - the database itself fails: the round's backoff applies
                    raise exc from None
        return done

    async def audit(self) -> None:
        """Ask CloudWatch which alarms of ours exist (one process), once idle alarms were ever used here: an alarm
        the record lost (another replica's late write, a hand-made one) is found and deleted."""
        rows = await asyncio.to_thread(self.db.with_alarms, self.region, self.endpoint, self.account())
        if not rows and await asyncio.to_thread(self.db.kv_get, USED_KEY) is None:
            self._audited_at = time.monotonic()
            return
        try:
            doc = await self.aws.run("describe_alarms.sh", "--prefix", ALARM_PREFIX, background=True)
        except ApiError as exc:
            log.warning("idle alarms: cannot list CloudWatch alarms (%s); trusting the record", exc.detail)
            self._audited_at = time.monotonic() - AUDIT_SECONDS + CHECK_SECONDS  # again in a minute
            return
        self._audited_at = time.monotonic()
        found = {a["AlarmName"][len(ALARM_PREFIX):]: observed_setting(a) for a in doc.get("MetricAlarms") or []
                 if isinstance(a, dict) and str(a.get("AlarmName", "")).startswith(ALARM_PREFIX)}
        known = {r["id"]: r for r in rows}
        for instance_id in found.keys() - known.keys():
            row = await asyncio.to_thread(self.db.get_instance, instance_id)
            account = self.account()
            if row is not None and (row["region"], row["endpoint"]) == (self.region, self.endpoint) and \
                    (account is None or row["account"] in (None, account)):
                known[instance_id] = row  # an alarm of ours on an instance that asks for none: deleted next
        for instance_id, row in known.items():
            held = found.get(instance_id)
            if held != row["alarm_held"]:
                log.info("idle alarms: CloudWatch holds %s for %s, the record said %s", held or "no alarm",
                         instance_id, row["alarm_held"] or "none")
                await asyncio.to_thread(self._record, instance_id, held, None)

    async def _converge(self, row: InstanceRow) -> int:
        instance_id, want = row["id"], wanted(row)
        name = alarm_name(instance_id)
        if want == row["alarm_held"]:  # CloudWatch holds what is asked: only what the instance shows is stale
            await asyncio.to_thread(self._record, instance_id, want, None)
            return 0
        try:
            if want is None:
                try:
                    await self.aws.run("delete_alarms.sh", "--alarm-name", name, region=row["region"], background=True)
                except ApiError as exc:
                    if exc.aws_error_code not in GONE:
                        raise
            else:
                setting = row["stop_when_idle"] or {}
                await self.aws.run("put_idle_stop_alarm.sh", "--instance-id", instance_id, "--alarm-name", name,
                                   "--cpu-below", f"{float(setting['cpu_below_percent']):.2f}".rstrip("0").rstrip("."),
                                   "--minutes", str(int(setting["for_minutes"])), region=row["region"],
                                   background=True)
        except ApiError as exc:
            log.warning("idle alarms: %s of %s failed: %s", "delete" if want is None else "put", name, exc.detail)
            await asyncio.to_thread(self._record_failure, instance_id, exc.detail)
            return 0
        await asyncio.to_thread(self._record, instance_id, want, None)
        log.info("idle alarms: %s %s", "deleted" if want is None else "put", name)
        return 1

    def _record(self, instance_id: str, held: str | None, error: str | None) -> None:
        """CloudWatch now holds `held` for this instance: record it, and what the instance shows."""
        with self.db.transaction():
            row = self.db.get_instance(instance_id)
            if row is None:
                return
            fields: dict[str, Any] = {"alarm_held": held, "alarm_attempts": 0, "alarm_retry_at": None}
            fields["idle_alarm"] = self._view({**row, **fields}, error)
            self.db.update_instance(instance_id, fields)

    def _record_failure(self, instance_id: str, error: str) -> None:
        with self.db.transaction():
            row = self.db.get_instance(instance_id)
            if row is None:
                return
            attempts = row["alarm_attempts"] + 1
            delay = backoff(attempts, RETRY_SECONDS, RETRY_MAX_SECONDS)
            retry_at = (clock.now() + timedelta(seconds=delay)).strftime(TIME_FORMAT)
            self.db.update_instance(instance_id, {"alarm_attempts": attempts, "alarm_retry_at": retry_at,
                                                  "idle_alarm": self._view(row, error[:500])})

    @staticmethod
    def _view(row: Mapping[str, Any], error: str | None) -> dict | None:
        return idle_alarm_view(row["id"], wanted(row), row["alarm_held"], error)


def idle_alarm_view(instance_id: str, want: str | None, held: str | None, error: str | None = None) -> dict | None:
    """What an instance shows of its alarm: none when none is asked for or held; set when CloudWatch holds
    what is asked; otherwise pending (to put) or deleting (to remove)."""
    if want is None and held is None:
        return None
    status = "set" if want == held else ("deleting" if want is None else "pending")
    return {"name": alarm_name(instance_id), "status": status, "error": error}
