"""`/v1/queue` (workers and where the caller's queued jobs stand) and `/v1/usage` (the
caller's storage and queue against its limits)."""

from fastapi import APIRouter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api.deps import ServicesDep, TenantId
from app.api.responses import V1_PROBLEMS, problem_responses
from app.api.schemas import QueuedJobPublic, QueuePublic, UsagePublic, WorkerPublic
from app.core.jobs.queue_view import queue_view
from app.core.persistence.models import Job
from app.core.tenancy.limits import stored_bytes

router = APIRouter(prefix="/v1", tags=["queue"], responses=problem_responses(*V1_PROBLEMS))


@router.get("/queue", response_model=QueuePublic)
async def read_queue(services: ServicesDep, tenant_id: TenantId) -> QueuePublic:
    """Workers seen holding jobs (alive or not), and each of the caller's queued jobs with
    its place in the queue and why it waits."""
    settings = services.settings

    def view(session: Session) -> QueuePublic:
        seen = queue_view(session, tenant_id, max_running=settings.tenant_max_running_jobs,
                          stale_seconds=settings.stale_seconds)
        return QueuePublic(
            workers=[WorkerPublic(id=w.worker_id, alive=w.alive, last_heartbeat=w.last_heartbeat,
                                  running_jobs=w.running_jobs) for w in seen.workers],
            running_jobs=seen.running, max_running_jobs=seen.max_running,
            queued=[QueuedJobPublic(id=q.job.id, name=q.job.name, kind=q.job.kind, created_at=q.job.created_at,
                                    position=q.position, reason=q.reason) for q in seen.queued])

    return await services.db.run(view)


@router.get("/usage", response_model=UsagePublic)
async def read_usage(services: ServicesDep, tenant_id: TenantId) -> UsagePublic:
    """Bytes stored and jobs queued, with the tenant's limits."""
    settings = services.settings

    def usage(session: Session) -> UsagePublic:
        queued = session.scalar(select(func.count()).where(Job.tenant_id == tenant_id, Job.status == "queued"))
        return UsagePublic(stored_bytes=stored_bytes(session, tenant_id),
                           max_stored_bytes=settings.tenant_max_stored_bytes or None,
                           queued_jobs=queued, max_queued_jobs=settings.tenant_max_queued_jobs)

    return await services.db.run(usage)
