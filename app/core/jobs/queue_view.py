"""What the database knows about workers and the queue, as a tenant may see it.

Workers are known from the jobs they hold: a worker running a job heartbeats on it, so a
worker is listed while it holds a job, alive when its latest heartbeat is younger than
the stale limit (an idle worker leaves no row: the database cannot tell it from none).
A queued job waits for one of two reasons the database can tell: its tenant already runs
its share of jobs, or the jobs ahead of it (every tenant's, oldest first) hold the workers.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.jobs.fair_share import RUNNING, as_aware
from app.core.persistence.models import Job, utcnow


@dataclass(frozen=True)
class WorkerSeen:
    worker_id: str
    alive: bool
    last_heartbeat: datetime | None
    running_jobs: int


@dataclass(frozen=True)
class QueuedJob:
    job: Job
    position: int  # 1 = next of all tenants' queued jobs in creation order
    reason: str


@dataclass(frozen=True)
class QueueView:
    workers: list[WorkerSeen]
    running: int  # this tenant's
    max_running: int
    queued: list[QueuedJob]  # this tenant's, oldest first


def queue_view(session: Session, tenant_id: str, *, max_running: int, stale_seconds: float,
               limit: int = 50) -> QueueView:
    now = utcnow()
    seen = session.execute(select(Job.worker_id, func.max(Job.heartbeat_at), func.count()).where(
        Job.status.in_(RUNNING), Job.worker_id.is_not(None)).group_by(Job.worker_id)).all()
    workers = [WorkerSeen(worker, beat is not None and as_aware(beat) > now - timedelta(seconds=stale_seconds),
                          as_aware(beat), count) for worker, beat, count in seen]
    running = session.scalar(select(func.count()).where(Job.tenant_id == tenant_id, Job.status.in_(RUNNING)))
    mine = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.status == "queued")
                           .order_by(Job.id).limit(limit)).all()
    queued = []
    for job in mine:
        ahead = session.scalar(select(func.count()).where(Job.status == "queued", Job.id < job.id))
        queued.append(QueuedJob(job, ahead + 1, _reason(ahead, running, max_running, workers)))
    return QueueView(workers, running, max_running, queued)


def _reason(ahead: int, running: int, max_running: int, workers: list[WorkerSeen]) -> str:
    if running >= max_running:
        return (f"your jobs already use their share of workers ({running} running, at most {max_running} "
                "at once: TRAJX_TENANT_MAX_RUNNING_JOBS); it starts when one of them ends")
    if workers and not any(w.alive for w in workers):
        return "no worker has sent a heartbeat recently: check that workers are running"
    if ahead:
        return f"{ahead} queued job{'s' if ahead > 1 else ''} (of any tenant) came first; it starts when a worker is free"
    return "next in line: it starts when a worker is free (or a worker picks it up now)"

