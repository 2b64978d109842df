"""Job records: create (validated, idempotent), read, list, cancel, and their events.

Execution is the worker's: it claims `queued` rows, runs them and writes progress,
events, result and summary. The API only creates rows and asks for cancellation.
Errors are TrajxError subclasses (InvalidInput, NotFound, Conflict); the HTTP layer
renders them.
"""

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from app.core.errors import Conflict, NotFound, located_in
from app.core.jobs.claim import forget_steps
from app.core.jobs.idempotency import remember, replayed_resource, request_hash
from app.core.jobs.inputs import resolve_inputs
from app.core.jobs.outbox import enqueue as enqueue_webhook
from app.core.persistence.models import (
    JOB_ID_PREFIX,
    TERMINAL_JOB_STATUSES,
    Job,
    JobArtifact,
    JobEvent,
    is_id,
    utcnow,
)
from app.core.persistence.pagination import keyset_page
from app.core.persistence.text_match import contains_ignoring_case, json_list_holds
from app.core.tenancy.limits import check_queued_jobs
from trajx.errors import InvalidInput
from trajx.job_spec import JOB_KINDS, parse_job_spec
from trajx.readable_errors import readable_errors

JOBS_PATH = "/v1/jobs"


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class Webhook:
    """Where and for which events a job's webhook messages go."""

    url: str
    events: list[str]


@dataclass(frozen=True)
class JobFilters:
    """What a listing keeps: each given field must match (`q`: a part of the name, any case)."""

    status: str | None = None
    kind: str | None = None
    method: str | None = None
    arch: str | None = None
    label: str | None = None
    q: str | None = None


def create_job(session: Session, tenant_id: str, spec_document: dict[str, Any], webhook: Webhook | None = None,
               *, max_attempts: int, idempotency_key: str | None, max_queued: int | None = None,
               name: str | None = None, labels: list[str] | None = None) -> tuple[Job, bool]:
    """Validate and store a queued job with its `created` event; commits. Returns (job, created).

    `created` is False when `idempotency_key` replays an earlier request. Raises
    InvalidInput: `validation_error`/`unknown_kind` for the spec,
    `artifact_not_found`, `wrong_artifact_kind`, `checkpoint_mismatch`, `data_mismatch`
    for its inputs, `permutation_spec_mismatch` for an explicit spec naming unknown
    tensors or the wrong number of axes, `idempotency_key_reused` for a key used with
    another body; TooBusy `too_many_queued_jobs` past `max_queued` queued jobs of the tenant.
    """
    named = {"name": name, "labels": labels} if name is not None or labels else {}  # old requests hash as before
    req_hash = request_hash({"spec": spec_document,
                             "webhook": {"url": webhook.url, "events": webhook.events} if webhook else None, **named})
    if idempotency_key is not None:
        earlier = replayed_resource(session, tenant_id, idempotency_key, JOBS_PATH, req_hash)
        if earlier is not None:
            return get_job(session, tenant_id, earlier), False
    if max_queued is not None:
        check_queued_jobs(session, tenant_id, max_queued)
    try:
        spec = parse_job_spec(spec_document)
    except InvalidInput as exc:
        raise located_in(exc, "spec") from None
    except ValidationError as exc:
        errors = readable_errors(exc, ("spec",), JOB_KINDS.get(spec_document.get("kind", "transfer")))
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        raise InvalidInput(f"the job spec is not valid: {summary}", code="validation_error", errors=errors) from None
    inputs = resolve_inputs(session, tenant_id, spec)
    job = Job(tenant_id=tenant_id, kind=spec.kind, spec=spec.model_dump(mode="json"), queue=spec.queue(),
              status="queued", max_attempts=max_attempts, created_at=utcnow(), name=name, labels=labels or None,
              webhook_url=webhook.url if webhook else None,
              webhook_events=list(webhook.events) if webhook else None,
              webhook_secret=new_webhook_secret() if webhook else None)
    session.add(job)
    session.flush()
    session.add_all(JobArtifact(job_id=job.id, artifact_id=a.id, role=field) for field, a in inputs.items())
    session.add(JobEvent(job_id=job.id, type="created", data={"kind": spec.kind, **spec.summary_fields()},
                         created_at=utcnow()))
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


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The caller's job; NotFound if missing or another tenant's."""
    job = session.get(Job, job_id) if is_id(job_id, JOB_ID_PREFIX) else None
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("job", job_id)
    return job


def list_jobs(session: Session, tenant_id: str, *, limit: int, cursor: str | None = None,
              status: str | None = None, filters: JobFilters | None = None) -> tuple[list[Job], str | None]:
    """Newest first; returns (page, next_cursor), next_cursor None on the last page. The
    result and webhook columns are not loaded (a list does not show them); an index on
    (tenant_id, [status,] id) serves every page."""
    query = select(Job).options(defer(Job.result), defer(Job.webhook_secret), defer(Job.webhook_events)) \
        .where(Job.tenant_id == tenant_id, *job_conditions(filters or JobFilters(status=status)))
    return keyset_page(session, query, Job.id, limit=limit, cursor=cursor)


def job_conditions(filters: JobFilters) -> list[ColumnElement[bool]]:
    """SQL conditions for `filters`, the same on SQLite and PostgreSQL (JSON paths into the spec)."""
    conditions = []
    if filters.status is not None:
        conditions.append(Job.status == filters.status)
    if filters.kind is not None:
        conditions.append(Job.kind == filters.kind)
    if filters.method is not None:
        # A transfer's method is a name, an average job's an object with one.
        conditions.append(or_(Job.spec["method"].as_string() == filters.method,
                              Job.spec[("method", "name")].as_string() == filters.method))
    if filters.arch is not None:
        conditions.append(Job.spec[("arch", "name")].as_string() == filters.arch)
    if filters.label is not None:
        conditions.append(json_list_holds(Job.labels, filters.label))
    if filters.q is not None:
        conditions.append(contains_ignoring_case(Job.name, filters.q))
    return conditions


def rename_job(session: Session, tenant_id: str, job_id: str, changes: dict[str, Any]) -> Job:
    """Set the job's `name` and/or `labels` (the keys `changes` holds; None clears); commits."""
    job = get_job(session, tenant_id, job_id)
    if "name" in changes:
        job.name = changes["name"]
    if "labels" in changes:
        job.labels = changes["labels"] or None
    session.commit()
    return job


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Queued → cancelled at once; running → cancelling (the worker stops at its next step
    check); cancelling → unchanged. Commits. Conflict `job_finished` for a finished job.

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
            if values["status"] == "cancelled":
                forget_steps(session, job.id)  # a job handed back mid-run may have recorded steps
            # The worker's outbox delivers the job.cancelled webhook of a queued job.
            enqueue_webhook(session, job.id, f"job.{values['status']}")
            changed = True
            break
    session.commit()
    session.refresh(job)
    if not changed and job.status in TERMINAL_JOB_STATUSES:
        raise Conflict(f"job {job.id} already finished with status {job.status!r}", code="job_finished")
    return job


def list_events(session: Session, tenant_id: str, job_id: str, *, limit: int,
                cursor: int | None = None) -> tuple[list[JobEvent], str | None]:
    """Events in order after `cursor` (an event id); next_cursor None when no more exist now."""
    get_job(session, tenant_id, job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    return keyset_page(session, query, JobEvent.id, limit=limit, cursor=cursor, newest_first=False)
