"""A job's recorded steps (`job_steps`): what each completed step left for resuming.

An executor reports a `Checkpoint` after each completed step; the worker records it,
fenced by its claim (a worker that lost the job records nothing), and a later attempt
reads the steps back and continues after the last. Rows Rows go when the job ends (`app.core.jobs.claim.forget_steps`). No torch here: the state
is the executor's opaque bytes.
"""

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.core.jobs.claim import Claim, owned
from app.core.persistence.models import Job, JobStep, utcnow


def record_step(session: Session, claim: Claim, step: int, state: bytes, data: dict[str, Any]) -> bool:
    """Record completed `step` of the claimed job (replacing an earlier record of it) and
    refresh the heartbeat, in one commit; False (nothing written) if the claim is lost."""
    if session.execute(update(Job).where(owned(claim)).values(heartbeat_at=utcnow())).rowcount != 1:
        session.rollback()
        return False
    session.execute(delete(JobStep).where(JobStep.job_id == claim.job_id, JobStep.step == step))
    session.add(JobStep(job_id=claim.job_id, step=step, attempt=claim.attempt, state=state, data=data))
    session.commit()
    return True


def recorded_steps(session: Session, job_id: str) -> list[JobStep]:
    """The job's recorded steps 1..r in order: the first run of consecutive steps (a gap
    cannot be resumed across, so what follows one is ignored)."""
    rows = session.scalars(select(JobStep).where(JobStep.job_id == job_id).order_by(JobStep.step)).all()
    session.rollback()
    run = []
    for row in rows:
        if row.step != len(run) + 1:
            break
        run.append(row)
    return run
