"""`GET /v1/jobs/{id}/events` as server-sent events (`Accept: text/event-stream`).

The database is the source: each connection polls the job's events table every
`POLL_SECONDS` and sends what is new, one SSE message per event (`id` is the event
id, so a client resuming with `Last-Event-ID` gets exactly what it missed). The stream
ends once the job is finished and every event up to its final one was sent, or after
`MAX_STREAM_SECONDS` (the client then reconnects with `Last-Event-ID`).
A tenant holds at most about `MAX_STREAMS_PER_TENANT` open streams per API process
(more are a 429 problem), so one tenant's open pages cannot take the thread pool.

sse-starlette writes the messages, sends a comment every `HEARTBEAT_SECONDS` so proxies
keep the connection open, stops at a client's disconnect, and tells every open stream
when uvicorn begins to shut down, which then ends at once: uvicorn waits for open
responses before it stops, and a stream would last as long as its job (clients resume
elsewhere with `Last-Event-ID`).
"""

import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.deps import Database
from app.api.problems import ProblemError
from app.api.schemas import EventPublic
from app.core.jobs import lifecycle as jobs
from app.core.persistence.models import TERMINAL_JOB_STATUSES, Job, JobEvent

EVENT_STREAM = "text/event-stream"
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 3600.0
BATCH = 500  # events read per poll: one poll costs bounded work however long the job's history
# Tells the browser how long to wait before reconnecting after the stream drops.
RETRY_MILLISECONDS = 2000
MAX_STREAMS_PER_TENANT = 16
# How long a stream told of shutdown may take to end by itself (a poll in flight) before it is cut.
SHUTDOWN_GRACE_SECONDS = 2.0


class StreamSlots:
    """Open streams per tenant in this process (one per app, on `app.state`).

    A stream counts from its first byte to its end; the check before the response is
    not a reservation, so concurrent requests can pass it together: the cap is soft by
    at most the number of requests arriving at the same moment, and never leaks.
    """

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self.open: Counter[str] = Counter()

    def check(self, tenant_id: str) -> None:
        if self.open[tenant_id] >= self.per_tenant:
            raise ProblemError(429, "too_many_streams",
                               f"this key's tenant already has {self.open[tenant_id]} open event streams "
                               f"(at most {self.per_tenant}); close one or poll the events",
                               headers={"Retry-After": "5"})

    @contextmanager
    def held(self, tenant_id: str) -> Iterator[None]:
        self.open[tenant_id] += 1
        try:
            yield
        finally:
            self.open[tenant_id] -= 1
            if not self.open[tenant_id]:
                del self.open[tenant_id]


def stream_slots(app: Any) -> StreamSlots:
    """The slots of `app` (one `StreamSlots` per application, made on first use)."""
    if not hasattr(app.state, "event_stream_slots"):
        app.state.event_stream_slots = StreamSlots(MAX_STREAMS_PER_TENANT)
    return app.state.event_stream_slots


def wants_event_stream(accept: str | None) -> bool:
    """Whether an Accept header asks for SSE (a browser's EventSource, `curl -H`, the CLI)."""
    return accept is not None and any(
        part.split(";")[0].strip().lower() == EVENT_STREAM for part in accept.split(","))


def parse_last_event_id(value: str | None) -> int | None:
    """The event id to resume after; anything that is not a plain non-negative id means "from the start"."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 18:
        return None
    return int(value.strip())


async def event_stream_response(db: Database, slots: StreamSlots, tenant_id: str, job_id: str,
                                after: int | None) -> EventSourceResponse:
    """The SSE response; the job is looked up first, so another tenant's job is a 404 problem
    (and a tenant with too many open streams gets a 429 one)."""
    await db.run(jobs.get_job, tenant_id, job_id)
    slots.check(tenant_id)
    shutdown = anyio.Event()
    return EventSourceResponse(_messages(db, slots, tenant_id, job_id, after, shutdown), ping=HEARTBEAT_SECONDS,
                               ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
                               shutdown_event=shutdown, shutdown_grace_period=SHUTDOWN_GRACE_SECONDS)


async def _messages(db: Database, slots: StreamSlots, tenant_id: str, job_id: str, after: int | None,
                    shutdown: anyio.Event) -> AsyncIterator[ServerSentEvent]:
    with slots.held(tenant_id):
        async for message in _job_messages(db, job_id, after, shutdown):
            yield message


async def _job_messages(db: Database, job_id: str, after: int | None,
                        shutdown: anyio.Event) -> AsyncIterator[ServerSentEvent]:
    """The job's events after `after` until it is finished, the time limit or `shutdown`;
    a stream that ends by itself ends cleanly (a final empty chunk, not a cut connection)."""
    started = time.monotonic()
    yield ServerSentEvent(retry=RETRY_MILLISECONDS)
    while not shutdown.is_set() and time.monotonic() - started < MAX_STREAM_SECONDS:
        events, finished = await db.run(_poll, job_id, after)
        for event in events:
            after = event.id
            # One `data:` line: JSON has no raw newlines, so the message cannot be split or forged.
            yield ServerSentEvent(event.model_dump_json(), id=str(event.id), event=event.type)
        if finished and len(events) < BATCH:
            return
        if len(events) < BATCH:
            with anyio.move_on_after(POLL_SECONDS):
                await shutdown.wait()


def _poll(session: Session, job_id: str, after: int | None) -> tuple[list[EventPublic], bool]:
    """Events after `after` and whether the job was finished before they were read.

    The status is read first: the final event commits with the final status, so a
    job seen finished has all its events up to the final one in the read that follows.
    """
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    rows = session.scalars(query.order_by(JobEvent.id).limit(BATCH))
    return [EventPublic.model_validate(row) for row in rows], status is None or status in TERMINAL_JOB_STATUSES
