"""Job records: create (validated, idempotent), read, list, cancel, and their events.

Execution is the worker's: it claims `queued` rows, runs them and writes progress,
events, result and summary. The API only creates rows and asks for cancellation.
"""

import base64
import logging
import secrets

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.dispatch import Dispatcher
from app.idempotency import remember, replayed_resource, request_hash
from app.job_inputs import check_permutation_spec, resolve_inputs
from app.limits import check_queued_jobs
from app.models import (
    JOB_ID_PREFIX,
    TERMINAL_JOB_STATUSES,
    Job,
    JobArtifact,
    JobEvent,
    is_id,
    utcnow,
)
from app.outbox import enqueue as enqueue_webhook
from app.pagination import keyset_page
from app.problems import ProblemError, field_path, from_trajx_error, not_found
from app.schemas import JobCreate, JobPublic
from trajx.arch_configs import check_builtin_config
from trajx.errors import InvalidInput
from trajx.spec import parse_job_spec

JOBS_PATH = "/v1/jobs"
log = logging.getLogger("app.jobs")


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def create_job(session: Session, tenant_id: str, body: JobCreate, *, max_attempts: int,
               idempotency_key: str | None, max_queued: int | None = None) -> tuple[Job, bool]:
    """Validate and store a queued job with its `created` event; commits. Returns (job, created).

    `created` is False when `idempotency_key` replays an earlier request. Raises
    ProblemError: 422 `validation_error`/`unknown_kind` for the spec,
    `artifact_not_found`, `wrong_artifact_kind`, `checkpoint_mismatch`, `data_mismatch`
    for its inputs, `permutation_spec_mismatch` for an explicit spec naming unknown
    tensors or the wrong number of axes, `idempotency_key_reused` for a key used with
    another body; 429 `too_many_queued_jobs` past `max_queued` queued jobs of the tenant.
    """
    req_hash = request_hash(body.model_dump(mode="json"))
    if idempotency_key is not None:
        earlier = replayed_resource(session, tenant_id, idempotency_key, JOBS_PATH, req_hash)
        if earlier is not None:
            return get_job(session, tenant_id, earlier), False
    if max_queued is not None:
        check_queued_jobs(session, tenant_id, max_queued)
    spec = _parse_spec(body.spec)
    inputs = resolve_inputs(session, tenant_id, spec.artifact_refs())
    check_permutation_spec(getattr(spec, "permutation_spec", None), inputs["source[0]"])
    webhook = body.webhook
    job = Job(tenant_id=tenant_id, kind=spec.kind, spec=spec.model_dump(mode="json"), status="queued",
              max_attempts=max_attempts, created_at=utcnow(),
              webhook_url=str(webhook.url) if webhook else None,
              webhook_events=list(webhook.events) if webhook else None,
              webhook_secret=new_webhook_secret() if webhook else None)
    session.add(job)
    session.flush()
    session.add_all(JobArtifact(job_id=job.id, artifact_id=a.id, role=field) for field, a in inputs.items())
    session.add(JobEvent(job_id=job.id, type="created", data={"kind": spec.kind}, created_at=utcnow()))
    if idempotency_key is not None:
        remember(session, tenant_id, idempotency_key, JOBS_PATH, req_hash, job.id)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent retry with the same key won the race: answer with its job.
        session.rollback()
        earlier = replayed_resource(session, tenant_id, idempotency_key or "", JOBS_PATH, req_hash)
        if earlier is None:
            raise
        return get_job(session, tenant_id, earlier), False
    return job, True


def _parse_spec(document: dict):
    try:
        spec = parse_job_spec(document)
        check_builtin_config(spec.arch.name, spec.arch.config)
        return spec
    except InvalidInput as exc:
        problem = from_trajx_error(exc)
        for error in problem.errors or []:
            error["field"] = f"spec.{error.get('field', '')}".rstrip(".")
        raise problem from None
    except ValidationError as exc:
        errors = [{"field": field_path(("spec", *e["loc"])), "message": e["msg"]} for e in exc.errors()]
        raise ProblemError(422, "validation_error", "the job spec is not valid", errors=errors) from None


def dispatch_after_commit(dispatcher: Dispatcher, job_id: str) -> None:
    """Hand the job to the dispatcher; a failure leaves it queued for the recovery sweep."""
    try:
        dispatcher.dispatch(job_id)
    except Exception:
        log.exception("dispatch of %s failed; it stays queued for recovery", job_id, extra={"job_id": job_id})


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The caller's job; 404 problem if missing or another tenant's."""
    job = session.get(Job, job_id) if is_id(job_id, JOB_ID_PREFIX) else None
    if job is None or job.tenant_id != tenant_id:
        raise not_found("job", job_id)
    return job


def list_jobs(session: Session, tenant_id: str, *, limit: int, cursor: str | None = None,
              status: str | None = None) -> tuple[list[Job], str | None]:
    """Newest first; returns (page, next_cursor), next_cursor None on the last page."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    return keyset_page(session, query, Job.id, limit=limit, cursor=cursor)


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Queued → cancelled at once; running → cancelling (the worker stops at its next step
    check); cancelling → unchanged. Commits. 409 `job_finished` for a finished job.

    Conditional UPDATEs make this safe against a worker claiming the job meanwhile.
    """
    job = get_job(session, tenant_id, job_id)
    now = utcnow()
    transitions = (
        ("queued", {"status": "cancelled", "cancel_requested": True, "finished_at": now}, "cancelled"),
        ("running", {"status": "cancelling", "cancel_requested": True}, "cancel_requested"),
    )
    changed = False
    for from_status, values, event in transitions:
        if session.execute(update(Job).where(Job.id == job.id, Job.status == from_status)
                           .values(**values)).rowcount:
            session.add(JobEvent(job_id=job.id, type=event, data={}, created_at=now))
            # The worker's outbox delivers the job.cancelled webhook of a queued job.
            enqueue_webhook(session, job.id, f"job.{values['status']}")
            changed = True
            break
    session.commit()
    session.refresh(job)
    if not changed and job.status in TERMINAL_JOB_STATUSES:
        raise ProblemError(409, "job_finished", f"job {job.id} already finished with status {job.status!r}")
    return job


def list_events(session: Session, tenant_id: str, job_id: str, *, limit: int,
                cursor: int | None = None) -> tuple[list[JobEvent], str | None]:
    """Events in order after `cursor` (an event id); next_cursor None when no more exist now."""
    get_job(session, tenant_id, job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    return keyset_page(session, query, JobEvent.id, limit=limit, cursor=cursor, newest_first=False)


def job_public(job: Job) -> JobPublic:
    """The job resource as the API shows it."""
    return JobPublic(
        id=job.id, kind=job.kind, status=job.status, spec=job.spec,
        progress={"step": job.progress_step, "total": job.progress_total},
        attempts=job.attempts, max_attempts=job.max_attempts, cancel_requested=job.cancel_requested,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        error={"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
        result=job.result, summary=job.summary,
        webhook={"url": job.webhook_url, "events": job.webhook_events or [], "secret": job.webhook_secret}
        if job.webhook_url else None,
    )
