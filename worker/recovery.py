"""Recovery: re-dispatch jobs that a lost message or a dead worker left behind.

`python -m worker.recovery` runs the sweep on start and every `--interval` seconds
beside Celery workers (one such process is enough; more only send harmless duplicate
messages). Each sweep fails stale jobs that have no attempts left (`worker_lost`),
re-sends running jobs whose heartbeat is stale, and re-sends queued jobs older than
a grace period whose message is no longer in the broker (e.g. Redis restarted); a
job is re-sent at most once per stale period. It also delivers the webhook outbox,
so a message whose worker ended before sending it still goes out.
The embedded worker does the same by itself. No torch here.
"""

import argparse
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from app.core.claim import add_event, claimable_job_ids, fail_exhausted
from app.core.dispatch import Dispatcher, get_dispatcher
from app.core.logs import configure_logging
from app.core.models import Job, JobEvent, utcnow
from app.core.settings import Settings, get_settings
from worker.context import worker_context
from worker.webhooks import deliverer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    failed: list[str]
    redispatched: list[str]


def sweep(settings: Settings, dispatcher: Dispatcher, queued_grace_seconds: float) -> SweepResult:
    """One recovery pass (see the module docstring); returns what it did."""
    sessions = worker_context(settings).sessions
    now = utcnow()
    with sessions() as session:
        failed = fail_exhausted(session, settings.stale_seconds)
        candidates = claimable_job_ids(session, settings.stale_seconds,
                                       queued_before=now - timedelta(seconds=queued_grace_seconds))
        jobs = {row.id: row for row in session.execute(
            select(Job.id, Job.status, Job.queue).where(Job.id.in_(candidates)))}
        # A job re-sent within the last stale period still has its message in flight: a
        # busy worker would otherwise find the queue clogged with duplicates.
        recently_sent = set(session.scalars(
            select(JobEvent.job_id).where(JobEvent.job_id.in_(candidates), JobEvent.type == "redispatched",
                                          JobEvent.created_at > now - timedelta(seconds=settings.stale_seconds))))
        session.rollback()
    redispatched = []
    for job_id in candidates:
        if job_id not in jobs:
            continue  # deleted with its tenant meanwhile
        reason = "stale_heartbeat" if jobs[job_id].status == "running" else "lost_message"
        if job_id in recently_sent or (reason == "lost_message" and dispatcher.is_pending(job_id)):
            continue
        with sessions() as session:
            add_event(session, job_id, "redispatched", {"reason": reason})
            session.commit()
        dispatcher.dispatch(job_id, jobs[job_id].queue)
        redispatched.append(job_id)
    if failed or redispatched:
        log.info("recovery: failed %s, re-dispatched %s", failed, redispatched)
    return SweepResult(failed, redispatched)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between sweeps")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="a queued job younger than this is left to its message")
    parser.add_argument("--once", action="store_true", help="sweep once and exit")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)  # the same JSON lines as the API
    dispatcher = get_dispatcher(settings)
    webhooks = deliverer(settings)  # the outbox: messages of every job, whichever worker ended it
    while True:
        try:
            sweep(settings, dispatcher, args.grace)
        except Exception:
            # The database or broker may be restarting: try again next round.
            log.exception("recovery sweep failed")
        if args.once:
            webhooks.stop()
            return
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
