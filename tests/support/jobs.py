"""Inputs and jobs created through the very functions the API calls (no rows written by hand)."""

from pathlib import Path
from typing import Any

from app.core.jobs.lifecycle import create_job
from app.core.settings import Settings
from app.core.storage.artifacts import publish_upload
from worker.context import worker_context


def upload_file(settings: Settings, tenant_id: str, path: Path, name: str | None = None) -> str:
    """Upload `path` as the API's `POST /v1/artifacts` does; returns the artifact id."""
    ctx = worker_context(settings)
    with ctx.store.writer() as writer, open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            writer.write(chunk)
        with ctx.sessions() as session:
            return publish_upload(session, ctx.store, writer, tenant_id, name or path.name, settings).id


def upload_files(settings: Settings, tenant_id: str, paths: dict[str, Path]) -> dict[str, str]:
    """Upload each file; returns artifact ids under the same keys."""
    return {key: upload_file(settings, tenant_id, path) for key, path in paths.items()}


def submit_job(settings: Settings, tenant_id: str, spec_document: dict[str, Any], **columns: Any) -> str:
    """Create a queued job as `POST /v1/jobs` does (spec validated, inputs resolved into
    `job_artifacts`, queue chosen); `columns` then overwrite fields of the row (a test's setup)."""
    with worker_context(settings).sessions() as session:
        job, _ = create_job(session, tenant_id, spec_document, max_attempts=settings.max_attempts, idempotency_key=None)
        for name, value in columns.items():
            setattr(job, name, value)
        session.commit()
        return job.id
