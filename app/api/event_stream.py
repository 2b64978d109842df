"""`GET /v1/jobs/{id}/events` as server-sent events (`Accept: text/event-stream`).

The database is the source: each connection polls the job's events table every
`POLL_SECONDS` and sends what is new, one SSE message per event (`id` is the event
id, so a client resuming with `Last-Event-ID` gets exactly what it missed). A comment
line goes out every `HEARTBEAT_SECONDS` so proxies keep the connection open. The
stream ends once the job is finished and every event up to its final one was sent,
or after `MAX_STREAM_SECONDS` (the client then reconnects with `Last-Event-ID`).
"""

import asyncio
import time
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import StreamingResponse

from app import jobs
from app.api.deps import Database
from app.models import TERMINAL_JOB_STATUSES, Job, JobEvent
from app.schemas import EventPublic

EVENT_STREAM = "text/event-stream"
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 3600.0
BATCH = 500  # events read per poll: one poll costs bounded work however long the job's history
# Tells the browser how long to wait before reconnecting after the stream drops.
RETRY_MILLISECONDS = 2000


def wants_event_stream(accept: str | None) -> bool:
    """Whether an Accept header asks for SSE (a browser's EventSource, `curl -H`, the CLI)."""
    return accept is not None and any(
        part.split(";")[0].strip().lower() == EVENT_STREAM for part in accept.split(","))


def parse_last_event_id(value: str | None) -> int | None:
    """The event id to resume after; anything that is not a plain non-negative id means "from the start"."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 18:
        return None
    return int(value.strip())


async def event_stream_response(db: Database, tenant_id: str, job_id: str, after: int | None,
                                *, poll_seconds: float = POLL_SECONDS) -> StreamingResponse:
    """The SSE response; the job is looked up first, so another tenant's job is a 404 problem."""
    await db.run(jobs.get_job, tenant_id, job_id)
    return StreamingResponse(_messages(db, job_id, after, poll_seconds), media_type=EVENT_STREAM,
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _messages(db: Database, job_id: str, after: int | None, poll_seconds: float) -> AsyncIterator[str]:
    started = last_sent = time.monotonic()
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    while time.monotonic() - started < MAX_STREAM_SECONDS:
        events, finished = await db.run(_poll, job_id, after)
        for event in events:
            after = event.id
            yield _message(event)
        if events:
            last_sent = time.monotonic()
        if finished and len(events) < BATCH:
            return
        if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if len(events) < BATCH:
            await asyncio.sleep(poll_seconds)


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


def _message(event: EventPublic) -> str:
    # One `data:` line: JSON has no raw newlines, so the message cannot be split or forged.
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"
