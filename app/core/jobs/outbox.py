"""The webhook outbox: a job's webhook messages are rows written with its transitions.

Whoever changes a job's state (the worker, the recovery sweep, the API's cancel)
calls `enqueue` in the same transaction, so a message exists exactly when its
transition committed, and survives any process ending. `worker.webhooks` delivers
the rows. No torch, no HTTP here: the API process imports it.
"""

import uuid
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.core.jobs.result import public_result
from app.core.persistence.models import Job, WebhookDelivery, utcnow

PROGRESS = "job.progress"
# Webhook event types a job can be subscribed to; the worker delivers them.
WEBHOOK_EVENTS = ("job.running", PROGRESS, "job.succeeded", "job.failed", "job.cancelled")
DEFAULT_WEBHOOK_EVENTS = ["job.succeeded", "job.failed", "job.cancelled"]


def wanted_events(events: list[str] | None) -> frozenset[str]:
    """The job events a webhook asked for; None or empty means the terminal ones."""
    return frozenset(events or DEFAULT_WEBHOOK_EVENTS)


def job_snapshot(job: Job) -> dict[str, Any]:
    """The job fields a webhook receiver needs to act without calling back."""
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "attempts": job.attempts,
        "progress": {"step": job.progress_step, "total": job.progress_total},
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "result": public_result(job.result), "summary": job.summary,
    }


def enqueue(session: Session, job_id: str, event: str, data: dict[str, Any] | None = None) -> bool:
    """Add webhook message `event` for the job if its webhook wants it (flushes pending
    changes, does not commit). `data` defaults to the job's snapshot as the session sees it.

    A newer `job.progress` replaces one not yet tried, so a slow receiver cannot build a
    backlog. Returns True if a message was added.
    """
    session.flush()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or not (job.webhook_url and job.webhook_secret) or event not in wanted_events(job.webhook_events):
        return False
    if event == PROGRESS:
        session.execute(delete(WebhookDelivery).where(
            WebhookDelivery.job_id == job_id, WebhookDelivery.event == PROGRESS, WebhookDelivery.attempts == 0))
    now = utcnow()
    session.add(WebhookDelivery(job_id=job_id, event=event, message_id=f"msg_{uuid.uuid4().hex}",
                                data=job_snapshot(job) if data is None else data, attempts=0,
                                next_attempt_at=now, created_at=now))
    return True
