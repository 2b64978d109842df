"""Per-tenant limits checked when something is created: queued jobs and stored bytes.

The running-jobs limit is the workers' (`app.core.jobs.fair_share`): a job over it simply
waits in the queue. These two answer at once: `TooBusy` `too_many_queued_jobs` (429:
retry once some have run) and `QuotaExceeded` `storage_quota_exceeded` (403: delete
artifacts first). Counted in
the caller's transaction; two requests racing may both pass by one.
"""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import QuotaExceeded, TooBusy
from app.core.persistence.models import Artifact, Job

RETRY_AFTER_SECONDS = 30


def check_queued_jobs(session: Session, tenant_id: str, max_queued: int) -> None:
    """TooBusy if the tenant already has `max_queued` queued jobs."""
    queued = session.scalar(select(func.count()).where(Job.tenant_id == tenant_id, Job.status == "queued"))
    if queued >= max_queued:
        raise TooBusy(f"the tenant has {queued} queued jobs; the limit is {max_queued} "
                      "(TRAJX_TENANT_MAX_QUEUED_JOBS)", code="too_many_queued_jobs",
                      retry_after=RETRY_AFTER_SECONDS)


def stored_bytes(session: Session, tenant_id: str) -> int:
    """The bytes of the tenant's live artifacts (what its storage quota counts)."""
    return session.scalar(select(func.coalesce(func.sum(Artifact.size), 0)).where(
        Artifact.tenant_id == tenant_id, Artifact.deleted_at.is_(None)))


def check_stored_bytes(session: Session, tenant_id: str, max_bytes: int, adding: int) -> None:
    """QuotaExceeded if the tenant's live artifacts plus `adding` bytes exceed `max_bytes` (0: no limit)."""
    if max_bytes <= 0:
        return
    stored = stored_bytes(session, tenant_id)
    if stored + adding > max_bytes:
        raise QuotaExceeded(f"storing {adding} more bytes would exceed the tenant's quota of {max_bytes} bytes "
                            f"({stored} stored; TRAJX_TENANT_MAX_STORED_BYTES); delete artifacts first",
                            code="storage_quota_exceeded")
