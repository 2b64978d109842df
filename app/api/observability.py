"""Structured JSON logs with a request id, and Prometheus metrics.

`RequestMiddleware` (plain ASGI, so upload and download bodies stream through it
untouched) assigns each request an id (`X-Request-ID`, echoed back), logs one JSON
line per request and counts it. Jobs by status and bytes stored are read from the
database when `/metrics` is scraped, so every API replica reports the same truth.
"""

import contextvars
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.models import JOB_STATUSES, Artifact, Job

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_log = logging.getLogger("app.access")
log = logging.getLogger("app.observability")
_LOG_FIELDS = ("request_id", "job_id", "method", "path", "route", "status", "duration_ms", "tenant_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and known context fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for field in _LOG_FIELDS[1:]:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send every log record to stderr as JSON (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)


class Metrics:
    """The API process's Prometheus registry and request instruments."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("trajx_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("trajx_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.registry.register(_DatabaseCollector(sessions))


class _DatabaseCollector:
    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.sessions = sessions

    def collect(self):
        jobs = GaugeMetricFamily("trajx_jobs", "Jobs by status", labels=["status"])
        stored = GaugeMetricFamily("trajx_artifact_bytes_stored", "Bytes in the store (each blob once)")
        try:
            with self.sessions() as session:
                counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
                blobs = (select(Artifact.sha256, Artifact.size).where(Artifact.deleted_at.is_(None))
                         .distinct().subquery())
                total = session.scalar(select(func.coalesce(func.sum(blobs.c.size), 0)))
        except SQLAlchemyError as exc:
            # The request metrics still help while the database is down (/readyz reports that).
            log.warning("metrics: the database gauges are left out: %s: %s", type(exc).__name__,
                        str(exc).splitlines()[0])
            return
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        stored.add_metric([], total or 0)
        yield jobs
        yield stored


class RequestMiddleware:
    """Request id, one access-log line and the request metrics for every HTTP request."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 100 and incoming.isprintable() else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
            access_log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                "request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route, "status": status,
                "duration_ms": round(elapsed * 1000, 2)})
            request_id_var.reset(token)
