"""Observability: Prometheus metrics (GET /metrics), the request id of every request (X-Request-Id, in every
log line of that request) and JSON logs (LOG_FORMAT=json).

The counters and histograms live in one CollectorRegistry per app. Gauges of the record (instances by state,
the committed budget) are read from the database when scraped, so every replica reports the same numbers.
"""

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import REQUEST_ID

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
AWS_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60)


class _RecordGauges(Collector):
    """ec2cl_instances{state}, ec2cl_reconcile_last_success_timestamp_seconds and ec2cl_budget_committed_usd,
    computed when scraped (the source functions are set by the app's lifespan)."""

    def __init__(self) -> None:
        self.counts: Callable[[], dict[str, int]] | None = None
        self.last_sweep: Callable[[], float | None] | None = None
        self.committed: Callable[[], float] | None = None
        self.leader: Callable[[], bool] | None = None

    def collect(self):
        instances = GaugeMetricFamily("ec2cl_instances", "Tracked instances by recorded state", labels=["state"])
        for state, count in sorted((self.counts() if self.counts else {}).items()):
            instances.add_metric([state], count)
        yield instances
        last = self.last_sweep() if self.last_sweep else None
        if last is not None:
            yield GaugeMetricFamily("ec2cl_reconcile_last_success_timestamp_seconds",
                                    "When the last reconcile sweep succeeded (Unix time)", value=last)
        if self.leader:
            yield GaugeMetricFamily("ec2cl_leader", "1 when this replica runs the background loops (sweeps, "
                                    "auto-stop, idle alarms, notifications), else 0", value=int(self.leader()))
        if self.committed:
            yield GaugeMetricFamily("ec2cl_budget_committed_usd",
                                    "Spent plus what every instance will cost until it stops or the period ends",
                                    value=self.committed())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter("ec2cl_http_requests", "HTTP requests answered",
                                     ["route", "method", "status"], registry=self.registry)
        self.http_duration = Histogram("ec2cl_http_request_duration_seconds", "Time to answer an HTTP request",
                                       ["route"], buckets=HTTP_BUCKETS, registry=self.registry)
        self.aws_processes = Counter("ec2cl_aws_processes", "aws processes run, by script and outcome",
                                     ["script", "outcome"], registry=self.registry)
        self.aws_duration = Histogram("ec2cl_aws_process_duration_seconds", "Wall time of one aws process",
                                      ["script"], buckets=AWS_BUCKETS, registry=self.registry)
        self.record = _RecordGauges()
        self.registry.register(self.record)

    def aws_process(self, script: str, outcome: str, seconds: float) -> None:
        """Called by the runner for every `aws` process it ran (outcome: ok, or the API error code)."""
        self.aws_processes.labels(script, outcome).inc()
        self.aws_duration.labels(script).observe(seconds)


class RequestMiddleware:
    """Gives every request an id (a sane X-Request-Id is kept, else a new one), echoes it, and counts the
    request by route template, method and status. Against the local sandbox (EC2_TARGET=sandbox), every answer
    also says so (`X-EC2-Target: sandbox`): a client then knows the addresses it gets are made up (ec2cl)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, sandbox: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self.metrics = metrics
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for key, value in scope.get("headers") or []:
            if key.lower() == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode()),
                                      *([(b"x-ec2-target", b"sandbox")] if self.sandbox() else [])]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(template, scope.get("method", ""), str(status)).inc()
            self.metrics.http_duration.labels(template).observe(time.perf_counter() - started)
            REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """LOG_FORMAT=json: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        item: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-")}
        if record.exc_info:
            item["exception"] = self.formatException(record.exc_info)
        return json.dumps(item)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def configure_logging(log_format: str) -> None:
    """Every handler of the root logger (uvicorn's too) gets the request id; json: one object per line."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    if log_format == "json":  # uvicorn's own lines (startup, access log) too
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(RequestIdFilter())
                handler.setFormatter(JsonFormatter())
