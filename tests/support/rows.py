"""Rows and files the worker tests need, written straight to the database."""

from datetime import timedelta
from typing import Any

from app.core.persistence.models import Job, JobEvent, utcnow
from app.core.settings import Settings
from worker.context import worker_context

MINIMAL_SPEC = {
    "kind": "transfer",
    "arch": {"name": "mlp", "config": {}},
    "source": ["art_a", "art_b"],
    "targets": [{"seed": 1}],
    "train_data": "art_d",
}


def make_job(settings: Settings, tenant_id: str, *, spec: dict[str, Any] | None = None,
             age_seconds: float = 0.0, **columns: Any) -> str:
    """A job row (queued unless `columns` say otherwise) created `age_seconds` ago."""
    with worker_context(settings).sessions() as session:
        job = Job(tenant_id=tenant_id, kind="transfer", spec=spec or MINIMAL_SPEC,
                  max_attempts=settings.max_attempts,
                  created_at=utcnow() - timedelta(seconds=age_seconds), **columns)
        session.add(job)
        session.commit()
        return job.id


def load_job(settings: Settings, job_id: str) -> Job:
    with worker_context(settings).sessions() as session:
        return session.get(Job, job_id)


def event_types(settings: Settings, job_id: str) -> list[str]:
    with worker_context(settings).sessions() as session:
        return [e.type for e in session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id)]
