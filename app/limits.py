"""Per-tenant limits checked when something is created: queued jobs and stored bytes.

The running-jobs limit is the workers' (`worker.fair_share`): a job over it simply
waits in the queue. These two answer at once: 429 `too_many_queued_jobs` (retry once
some have run) and 403 `storage_quota_exceeded` (delete artifacts first). Counted in
the caller's transaction; two requests racing may both pass by one.
"""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Artifact, Job
from app.problems import ProblemError

RETRY_AFTER_SECONDS = 30


def check_queued_jobs(session: Session, tenant_id: str, max_queued: int) -> None:
    """429 problem if the tenant already has `max_queued` queued jobs."""
    queued = session.scalar(select(func.count()).where(Job.tenant_id == tenant_id, Job.status == "queued"))
    if queued >= max_queued:
        raise ProblemError(429, "too_many_queued_jobs",
                           f"the tenant has {queued} queued jobs; the limit is {max_queued} "
                           "(TRAJX_TENANT_MAX_QUEUED_JOBS)", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def check_stored_bytes(session: Session, tenant_id: str, max_bytes: int, adding: int) -> None:
    """403 problem if the tenant's live artifacts plus `adding` bytes exceed `max_bytes` (0: no limit)."""
    if max_bytes <= 0:
        return
    stored = session.scalar(select(func.coalesce(func.sum(Artifact.size), 0)).where(
        Artifact.tenant_id == tenant_id, Artifact.deleted_at.is_(None)))
    if stored + adding > max_bytes:
        raise ProblemError(403, "storage_quota_exceeded",
                           f"storing {adding} more bytes would exceed the tenant's quota of {max_bytes} bytes "
                           f"({stored} stored; TRAJX_TENANT_MAX_STORED_BYTES); delete artifacts first")
