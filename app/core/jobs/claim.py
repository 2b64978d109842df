"""The job state machine in SQL: atomic claim, heartbeat, fenced finish, recovery sweeps.

Every transition is one conditional UPDATE, so concurrent workers, redelivered
messages and the recovery loop can race freely: whoever matches the WHERE clause
wins and the others see zero rows. A claim is fenced by `(worker_id, attempts)`: a
worker that lost its claim (its heartbeat went stale and another took over) can
neither heartbeat nor finish the job. No torch here: the API process may import it.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, or_, select, update
from sqlalchemy.orm import Session

from app.core.jobs.fair_share import lock_tenant, tenant_has_room
from app.core.jobs.outbox import enqueue
from app.core.persistence.models import Job, JobEvent, JobStep, utcnow

WORKER_LOST = "worker_lost"
TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
# The heartbeat of a job known lost: older than any stale period.
LOST_HEARTBEAT = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Claim:
    """Proof that this worker owns attempt `attempt` of job `job_id`."""

    job_id: str
    worker_id: str
    attempt: int


def _stale(job_stale_before: datetime):
    return and_(Job.status == "running", Job.heartbeat_at < job_stale_before)


def add_event(session: Session, job_id: str, type_: str, data: dict[str, Any] | None = None) -> None:
    """Append a job event (committed with the caller's transaction)."""
    session.add(JobEvent(job_id=job_id, type=type_, data=data or {}))


def claim_job(session: Session, job_id: str, worker_id: str, stale_seconds: float,
              max_running: int | None = None, time_limit: float | None = None) -> Claim | None:
    """Claim `job_id` if it is queued, or running with a heartbeat older than `stale_seconds`,
    and its tenant runs fewer than `max_running` other live jobs (if given).

    Increments `attempts` and records the one event of the transition, `started`
    (with its `job.running` webhook message), in the same commit. Returns None when
    another worker owns the job, it is finished, it has no attempts left (then it is
    failed with `worker_lost`), or its tenant has its running quota (then it stays
    queued). A job that was not left queued gets a `claim_refused` event, so every
    message for it leaves a trace (a duplicate is seen to do nothing).
    """
    now = utcnow()
    stale_before = now - timedelta(seconds=stale_seconds)
    if time_limit is not None:
        fail_overrun(session, stale_seconds, time_limit, job_id)
    claimable = or_(Job.status == "queued", _stale(stale_before))
    quota = []
    if max_running is not None:
        lock_tenant(session, job_id)
        quota = [tenant_has_room(max_running, stale_before)]
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable, Job.attempts < Job.max_attempts, *quota)
        .values(status="running", attempts=Job.attempts + 1, worker_id=worker_id,
                heartbeat_at=now, started_at=now)
        .returning(Job.attempts)
    ).first()
    if row is None:
        session.commit()
        fail_exhausted(session, stale_seconds, job_id)
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status not in (None, "queued"):  # queued: deferred by the quota, tried again soon
            add_event(session, job_id, "claim_refused", {"worker_id": worker_id, "status": status})
        session.commit()
        return None
    data = {"attempt": row.attempts, "worker_id": worker_id}
    add_event(session, job_id, "started", data)
    enqueue(session, job_id, "job.running", {"id": job_id, "status": "running", **data})
    session.commit()
    return Claim(job_id, worker_id, row.attempts)


def owned(claim: Claim) -> ColumnElement[bool]:
    """SQL condition: the job row is still held by `claim` (running or cancelling)."""
    return and_(Job.id == claim.job_id, Job.worker_id == claim.worker_id, Job.attempts == claim.attempt,
                Job.status.in_(("running", "cancelling")))


def heartbeat(session: Session, claim: Claim, progress_step: int | None = None,
              progress_total: int | None = None) -> bool:
    """Refresh the heartbeat (and the progress, if given: a step below the one shown, as
    after a resume that redoes a step, leaves the shown one, so progress never goes back).

    Returns False when the claim is lost: the job was taken over or finalised. Commits.
    """
    progress: dict[str, Any] = {}
    if progress_step is not None:
        progress["progress_step"] = case((Job.progress_step > progress_step, Job.progress_step),
                                         else_=progress_step)
    if progress_total is not None:
        progress["progress_total"] = progress_total
    done = session.execute(update(Job).where(owned(claim)).values(heartbeat_at=utcnow(), **progress))
    session.commit()
    return done.rowcount == 1


def expire_lost(session: Session, job_id: str, worker_id: str, reason: str, time_limit: float) -> bool:
    """Make a running job whose worker is known gone (its process died, or it dropped the
    job in a database outage) stale now, instead of after the stale period: it is claimable
    at once and holds no slot of its tenant's running limit. One that ran past `time_limit`
    fails `time_limit_exceeded` instead. Does not commit; False if the job was not there."""
    held = and_(Job.id == job_id, Job.worker_id == worker_id, Job.status.in_(("running", "cancelling")))
    row = session.execute(select(Job.id, Job.started_at, Job.heartbeat_at).where(held)).first()
    if row is None or _fail_if_overrun(session, row, time_limit, held):
        return row is not None
    session.execute(update(Job).where(held).values(heartbeat_at=LOST_HEARTBEAT))
    add_event(session, job_id, "lost", {"worker_id": worker_id, "reason": reason})
    return True


def cancel_requested(session: Session, claim: Claim) -> bool:
    """True when a cancel was requested or the claim is lost (either way: stop working)."""
    row = session.execute(select(Job.cancel_requested).where(owned(claim))).first()
    session.rollback()
    return row is None or bool(row.cancel_requested)


def finish(session: Session, claim: Claim, status: str, **values: Any) -> str | None:
    """Set the final `status` (and result/summary/error columns) if the claim still holds.

    A job whose cancel was requested while it ran ends `cancelled` whatever `status`
    says, and then keeps no result (unless `status` is `cancelled`: partial results). Does not commit (the caller adds its artifacts and
    events to the same transaction); returns the status written, None if the claim was lost.
    """
    row = session.execute(select(Job.cancel_requested).where(owned(claim)).with_for_update()).first()
    if row is None:
        return None
    if row.cancel_requested and status != "cancelled":
        status, values = "cancelled", {}
    session.execute(update(Job).where(owned(claim))
                    .values(status=status, finished_at=utcnow(), heartbeat_at=None, **values))
    forget_steps(session, claim.job_id)
    return status


def forget_steps(session: Session, *job_ids: str) -> None:
    """Delete the jobs' recorded steps (`app.core.jobs.steps`), in the caller's transaction:
    the jobs ended."""
    if job_ids:
        session.execute(delete(JobStep).where(JobStep.job_id.in_(job_ids)))


def release(session: Session, claim: Claim, reason: str = "shutdown") -> bool:
    """Hand a running job back to the queue: this worker is shutting down cleanly, or
    (`reason`) cannot finish it now (the store is full).

    The attempt is not counted (the job did nothing wrong); its recorded steps stay for the
    next attempt. Commits (what `session` holds too); False, rolled back, if the claim was
    already lost or a cancel was requested.
    """
    owned_running = and_(owned(claim), Job.cancel_requested.is_(False))
    released = session.execute(
        update(Job).where(owned_running)
        .values(status="queued", attempts=Job.attempts - 1, worker_id=None, heartbeat_at=None)
    ).rowcount == 1
    if released:
        add_event(session, claim.job_id, "released", {"worker_id": claim.worker_id, "reason": reason})
        session.commit()
        return True
    session.rollback()
    return False


def fail_exhausted(session: Session, stale_seconds: float, job_id: str | None = None) -> list[str]:
    """Fail stale running jobs that used all their attempts (`worker_lost`), and end stale
    `cancelling` jobs as `cancelled`. Limited to `job_id` if given. Returns the failed ids. Commits.
    """
    now = utcnow()
    stale_before = now - timedelta(seconds=stale_seconds)
    only = [Job.id == job_id] if job_id else []
    failed = session.scalars(
        update(Job)
        .where(*only, _stale(stale_before), Job.attempts >= Job.max_attempts)
        .values(status="failed", finished_at=now, heartbeat_at=None, error_code=WORKER_LOST,
                error_message="the job's worker stopped responding and no attempts are left")
        .returning(Job.id)
    ).all()
    cancelled = session.scalars(
        update(Job)
        .where(*only, Job.status == "cancelling", Job.heartbeat_at < stale_before)
        .values(status="cancelled", finished_at=now, heartbeat_at=None)
        .returning(Job.id)
    ).all()
    forget_steps(session, *failed, *cancelled)
    for id_ in failed:
        add_event(session, id_, "failed", {"code": WORKER_LOST})
        enqueue(session, id_, "job.failed")
    for id_ in cancelled:
        add_event(session, id_, "cancelled", {"reason": "worker stopped while cancelling"})
        enqueue(session, id_, "job.cancelled")
    session.commit()
    return list(failed)


def fail_overrun(session: Session, stale_seconds: float, time_limit: float, job_id: str | None = None) -> list[str]:
    """Fail stale running jobs whose last attempt kept its heartbeat for `time_limit` seconds
    or more (`time_limit_exceeded`): the cooperative deadline did not stop it, so the hard
    limit killed it, and another attempt would only do the same. Commits; returns their ids."""
    stale = _stale(utcnow() - timedelta(seconds=stale_seconds))
    only = [Job.id == job_id] if job_id else []
    rows = session.execute(select(Job.id, Job.started_at, Job.heartbeat_at).where(*only, stale)).all()
    failed = [row.id for row in rows if _fail_if_overrun(session, row, time_limit, stale)]
    session.commit()
    return failed


def _fail_if_overrun(session: Session, row: Any, time_limit: float, still: ColumnElement[bool]) -> bool:
    """Fail the job of `row` (id, started_at, heartbeat_at) `time_limit_exceeded` if its attempt
    ran `time_limit` seconds or more and it still matches `still`; does not commit."""
    if row.started_at is None or row.heartbeat_at is None or \
            (row.heartbeat_at - row.started_at).total_seconds() < time_limit:
        return False
    message = f"the job ran past its time limit of {time_limit:g} s and was stopped"
    if not session.execute(update(Job).where(Job.id == row.id, still, Job.heartbeat_at == row.heartbeat_at)
                           .values(status="failed", finished_at=utcnow(), heartbeat_at=None,
                                   error_code=TIME_LIMIT_EXCEEDED, error_message=message)).rowcount:
        return False
    forget_steps(session, row.id)
    add_event(session, row.id, "failed", {"code": TIME_LIMIT_EXCEEDED, "message": message})
    enqueue(session, row.id, "job.failed")
    return True


def claimable_job_ids(session: Session, stale_seconds: float, queued_before: datetime | None = None,
                      limit: int = 100) -> list[str]:
    """Ids of jobs a worker could claim now, oldest first: queued (before `queued_before`
    if given) or running with a stale heartbeat and attempts left."""
    queued = Job.status == "queued"
    if queued_before is not None:
        queued = and_(queued, Job.created_at < queued_before)
    stale = and_(_stale(utcnow() - timedelta(seconds=stale_seconds)), Job.attempts < Job.max_attempts)
    ids = session.scalars(select(Job.id).where(or_(queued, stale)).order_by(Job.created_at).limit(limit)).all()
    session.rollback()
    return list(ids)
