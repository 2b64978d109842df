"""A request id and an access-log line per request, and Prometheus metrics.

`RequestMiddleware` (plain ASGI, so upload and download bodies stream through it
untouched) assigns each request an id (`X-Request-ID`, echoed back), logs one JSON
line per request and counts it. Jobs by status and bytes stored are read from the
database when `/metrics` is scraped, so every API replica reports the same truth.
"""

import logging
import time
import uuid
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.core.logs import request_id_var
from app.core.persistence.models import JOB_STATUSES, Artifact, Job, JobEvent

access_log = logging.getLogger("app.access")
# Job event types counted on /metrics: what an operator alerts on (`storage_full`) or watches.
FAULT_EVENTS = ("storage_full", "lost", "released", "resumed")
log = logging.getLogger("app.api.observability")


class Metrics:
    """The API process's Prometheus registry and request instruments."""

    def __init__(self, sessions: Callable[[], Session], free_bytes: Callable[[], int | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("trajx_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("trajx_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.registry.register(_DatabaseCollector(sessions))
        self.registry.register(_FreeSpaceCollector(free_bytes))


class _FreeSpaceCollector:
    """Free bytes where uploads land (the local store's disk; absent for an object store)."""

    def __init__(self, free_bytes: Callable[[], int | None]) -> None:
        self.free_bytes = free_bytes

    def collect(self):
        try:
            free = self.free_bytes()
        except OSError:
            return
        if free is not None:
            yield GaugeMetricFamily("trajx_storage_free_bytes", "Free bytes where uploads are stored", value=free)


class _DatabaseCollector:
    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.sessions = sessions

    def collect(self):
        jobs = GaugeMetricFamily("trajx_jobs", "Jobs by status", labels=["status"])
        stored = GaugeMetricFamily("trajx_artifact_bytes_stored", "Bytes in the store (each blob once)")
        faults = CounterMetricFamily("trajx_job_fault_events", "Job events of faults survived: a full store "
                                     "(storage_full), a worker known lost (lost), a job handed back "
                                     "(released), a job resumed after its last step (resumed)", labels=["type"])
        try:
            with self.sessions() as session:
                counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
                seen = dict(session.execute(select(JobEvent.type, func.count()).where(
                    JobEvent.type.in_(FAULT_EVENTS)).group_by(JobEvent.type)).all())
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
        for type_ in FAULT_EVENTS:
            faults.add_metric([type_], seen.get(type_, 0))
        yield jobs
        yield stored
        yield faults


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
