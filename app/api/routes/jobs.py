"""`/v1/jobs`: create (validated, idempotent), read, list, cancel, events."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.body_limit import body_limited_route
from app.api.deps import ServicesDep, TenantId
from app.api.event_stream import (
    EVENT_STREAM,
    MAX_STREAMS_PER_TENANT,
    event_stream_response,
    parse_last_event_id,
    stream_slots,
    wants_event_stream,
)
from app.api.problems import ProblemError
from app.api.responses import V1_PROBLEMS, problem_responses
from app.api.schemas import (
    EventPublic,
    EventsPage,
    JobCreate,
    JobListItem,
    JobPublic,
    JobsPage,
    JobStatus,
    JobUpdate,
)
from app.core.jobs import lifecycle as jobs
from app.core.jobs.idempotency import check_key
from app.core.jobs.result import public_result
from app.core.jobs.webhook_guard import url_fault
from app.core.persistence.models import JOB_ID_PREFIX, JOB_LABEL_PATTERN, Job, id_pattern
from app.core.settings import Settings
from app.core.validation.json_document import check_json_document

# A spec is a small JSON document; anything bigger is a mistake, refused before parsing.
MAX_JOB_BODY_BYTES = 1024 * 1024
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(*V1_PROBLEMS),
                   route_class=body_limited_route(MAX_JOB_BODY_BYTES))
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
_CREATED = {202: {"description": "queued (or, with a replayed Idempotency-Key, the job created before)",
                  "headers": {"Location": {"schema": {"type": "string"}, "description": "the job's URL"},
                              "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}}}}}


@router.post("", status_code=202, response_model=JobPublic, responses={
    **_CREATED, **problem_responses(400, 413, 429, descriptions={413: f"body larger than {MAX_JOB_BODY_BYTES} bytes"})})
async def create_job(body: JobCreate, response: Response, services: ServicesDep, tenant_id: TenantId,
                     idempotency_key: IdempotencyKey = None) -> JobPublic:
    """Queue a job; every referenced artifact is checked first. `Location` points at the job."""
    check_json_document(body.spec, "spec", services.settings.max_json_depth)
    if body.webhook is not None:
        _check_webhook_url(str(body.webhook.url), services.settings.webhook_allow_private)
    job, created = await services.db.run(_create, tenant_id, body, services.settings,
                                         check_key(idempotency_key))
    if created:
        # A Celery send is network I/O: keep it off the event loop too. A broker outage is
        # the dispatcher's to absorb (the job stays queued for the recovery sweep).
        await run_in_threadpool(services.dispatcher.dispatch, job.id, job.queue)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


def _check_webhook_url(url: str, allow_private: bool) -> None:
    fault = url_fault(url, allow_private)
    if fault is not None:
        raise ProblemError(422, "webhook_url_not_allowed", f"webhook URL refused: {fault}",
                           errors=[{"field": "body.webhook.url", "message": fault}])


def _create(session: Session, tenant_id: str, body: JobCreate, settings: Settings,
            idempotency_key: str | None) -> tuple[JobPublic, bool]:
    webhook = jobs.Webhook(str(body.webhook.url), list(body.webhook.events)) if body.webhook else None
    job, created = jobs.create_job(session, tenant_id, body.spec, webhook, max_attempts=settings.max_attempts,
                                   idempotency_key=idempotency_key, max_queued=settings.tenant_max_queued_jobs,
                                   name=body.name, labels=body.labels)
    return job_public(job), created


def job_public(job: Job) -> JobPublic:
    """The job resource as the API shows it."""
    return JobPublic(
        id=job.id, kind=job.kind, name=job.name, labels=job.labels or [], status=job.status, spec=job.spec, queue=job.queue,
        progress={"step": job.progress_step, "total": job.progress_total},
        attempts=job.attempts, max_attempts=job.max_attempts, cancel_requested=job.cancel_requested,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        error={"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
        result=public_result(job.result), summary=job.summary,
        webhook={"url": job.webhook_url, "events": job.webhook_events or [], "secret": job.webhook_secret}
        if job.webhook_url else None,
    )


def job_list_item(job: Job) -> JobListItem:
    """The job as a list shows it (what a table row needs, not the whole resource)."""
    arch = job.spec.get("arch") if isinstance(job.spec.get("arch"), dict) else {}
    headline = {"kind": job.kind, "method": job.spec.get("method"),
                "arch": {key: arch[key] for key in ("name", "program") if arch.get(key) is not None}}
    if isinstance(job.spec.get("targets"), list):
        headline["targets"] = job.spec["targets"]
    return JobListItem(
        id=job.id, kind=job.kind, name=job.name, labels=job.labels or [], status=job.status, spec=headline,
        queue=job.queue,
        progress={"step": job.progress_step, "total": job.progress_total},
        attempts=job.attempts, max_attempts=job.max_attempts, cancel_requested=job.cancel_requested,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        error={"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
        summary=job.summary,
    )


FilterText = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("", response_model=JobsPage)
async def list_jobs(services: ServicesDep, tenant_id: TenantId, status: JobStatus | None = None,
                    cursor: Annotated[str | None, Query(pattern=id_pattern(JOB_ID_PREFIX))] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    kind: Annotated[str | None, Query(pattern="^[a-z_]{1,32}$")] = None,
                    method: Annotated[str | None, Query(pattern="^[a-z_0-9]{1,32}$")] = None,
                    arch: FilterText = None,
                    label: Annotated[str | None, Query(pattern=JOB_LABEL_PATTERN)] = None,
                    q: Annotated[FilterText, Query(description="a part of the job's name, any case")] = None,
                    ) -> JobsPage:
    """The caller's jobs, newest first, each as a list row (`GET /v1/jobs/{id}` for the whole
    job: spec, result, webhook); every filter given must match (`method`: a transfer's
    method or an average job's `method.name`; `arch`: the architecture's name)."""
    filters = jobs.JobFilters(status=status, kind=kind, method=method, arch=arch, label=label, q=q)

    def page(session: Session) -> JobsPage:
        rows, next_cursor = jobs.list_jobs(session, tenant_id, limit=limit, cursor=cursor, filters=filters)
        return JobsPage(data=[job_list_item(j) for j in rows], next_cursor=next_cursor)

    return await services.db.run(page)


@router.get("/{job_id}", response_model=JobPublic, responses=problem_responses(404))
async def read_job(services: ServicesDep, tenant_id: TenantId, job_id: str) -> JobPublic:
    """Status, progress, error, result artifact ids and summary metrics of a job."""
    return await services.db.run(lambda s: job_public(jobs.get_job(s, tenant_id, job_id)))


@router.patch("/{job_id}", response_model=JobPublic, responses=problem_responses(
    400, 404, 413, descriptions={413: f"body larger than {MAX_JOB_BODY_BYTES} bytes"}))
async def update_job(services: ServicesDep, tenant_id: TenantId, job_id: str, body: JobUpdate) -> JobPublic:
    """Rename a job or set its labels (any status; the spec and results never change)."""
    changes = body.model_dump(include=body.model_fields_set)
    return await services.db.run(lambda s: job_public(jobs.rename_job(s, tenant_id, job_id, changes)))


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=problem_responses(404, 409))
async def cancel_job(services: ServicesDep, tenant_id: TenantId, job_id: str) -> JobPublic:
    """Cancel: a queued job at once, a running one at its next step (status `cancelling`)."""
    return await services.db.run(lambda s: job_public(jobs.cancel_job(s, tenant_id, job_id)))


_EVENTS_OK = {200: {"description": "a page of events, or with `Accept: text/event-stream` a live "
                                     "stream of them (SSE, resumable with `Last-Event-ID`)",
                      "content": {EVENT_STREAM: {"schema": {"type": "string"}}}}}


@router.get("/{job_id}/events", response_model=EventsPage,
            responses={**_EVENTS_OK, **problem_responses(404, 429, descriptions={
                429: f"with `Accept: text/event-stream`: the tenant has {MAX_STREAMS_PER_TENANT} streams open"})})
async def list_job_events(request: Request, services: ServicesDep, tenant_id: TenantId, job_id: str,
                          cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> EventsPage | StreamingResponse:
    """The job's events in order, after the event id `cursor`; streamed live until the job
    finishes when the request accepts `text/event-stream` (then a `Last-Event-ID` header beats `cursor`)."""
    if wants_event_stream(request.headers.get("accept")):
        after = parse_last_event_id(request.headers.get("last-event-id"))
        return await event_stream_response(services.db, stream_slots(request.app), tenant_id, job_id,
                                           cursor if after is None else after)

    def page(session: Session) -> EventsPage:
        rows, next_cursor = jobs.list_events(session, tenant_id, job_id, limit=limit, cursor=cursor)
        return EventsPage(data=[EventPublic.model_validate(e) for e in rows], next_cursor=next_cursor)

    return await services.db.run(page)
