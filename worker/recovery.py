"""Recovery: re-dispatch jobs that a lost message or a dead worker left behind.

`python -m worker.recovery` runs the sweep on start and every `--interval` seconds
beside Celery workers (one such process is enough; more only send harmless duplicate
messages). Each sweep fails stale jobs that have no attempts left (`worker_lost`),
re-sends running jobs whose heartbeat is stale (at most once per stale period), and
re-sends queued jobs older than a grace period whose message is no longer in the
broker (e.g. Redis restarted, or consumed without a claim), or whose message was
neither sent nor seen alive for `--resend-after` seconds, whatever the broker seems
to hold: no job depends on one message. It also delivers the webhook outbox,
so a message whose worker ended before sending it still goes out, and sweeps what
dead uploads and jobs left in its host's temp directory (and, with the S3 backend,
stale multipart uploads in the bucket).
The embedded worker does the same by itself. No torch here.
"""

import argparse
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.core.jobs.claim import add_event, claimable_job_ids, fail_exhausted, fail_overrun
from app.core.jobs.dispatcher import Dispatcher, get_dispatcher
from app.core.logs import configure_logging
from app.core.persistence.models import Job, JobEvent, utcnow
from app.core.settings import Settings, get_settings
from app.core.storage.temp_files import PeriodicSweep
from worker.context import worker_context
from worker.lost_jobs import expire_lost_jobs
from worker.webhooks import deliverer

log = logging.getLogger(__name__)
# How long a queued job's dispatched marker is believed unless refreshed: past it the job
# is re-sent anyway.
RESEND_AFTER_SECONDS = 300.0


@dataclass(frozen=True)
class SweepResult:
    failed: list[str]
    redispatched: list[str]


def sweep(settings: Settings, dispatcher: Dispatcher, queued_grace_seconds: float,
          resend_after_seconds: float = RESEND_AFTER_SECONDS) -> SweepResult:
    """One recovery pass (see the module docstring); returns what it did."""
    sessions = worker_context(settings).sessions
    now = utcnow()
    with sessions() as session:
        expire_lost_jobs(session, settings)
        failed = fail_overrun(session, settings.stale_seconds, settings.job_time_limit_seconds)
        failed += fail_exhausted(session, settings.stale_seconds)
        candidates = claimable_job_ids(session, settings.stale_seconds,
                                       queued_before=now - timedelta(seconds=queued_grace_seconds))
        jobs = {row.id: row for row in session.execute(
            select(Job.id, Job.status, Job.queue, Job.created_at).where(Job.id.in_(candidates)))}
        last_resent = dict(session.execute(
            select(JobEvent.job_id, func.max(JobEvent.created_at))
            .where(JobEvent.job_id.in_(candidates), JobEvent.type == "redispatched").group_by(JobEvent.job_id)).all())
        session.rollback()
    redispatched = []
    for job_id in candidates:
        job = jobs[job_id]
        if job.status == "running":
            # A message re-sent within the last stale period is still on its way: a busy
            # worker would otherwise find the queue clogged with duplicates.
            reason, wait, sent_at = "stale_heartbeat", settings.stale_seconds, last_resent.get(job_id)
        else:
            # A queued job's message is trusted while its marker is fresh (sent, or seen
            # alive by a worker that retries it): a marker can outlive its message.
            reason, marked_at = "lost_message", dispatcher.marked_at(job_id)
            if marked_at is None:
                wait, sent_at = queued_grace_seconds, last_resent.get(job_id, job.created_at)
            else:
                wait, sent_at = resend_after_seconds, datetime.fromtimestamp(marked_at, UTC)
        if sent_at is not None and sent_at > now - timedelta(seconds=wait):
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
    parser.add_argument("--resend-after", type=float, default=RESEND_AFTER_SECONDS,
                        help="a queued job unclaimed this long is re-sent even if its message seems queued")
    parser.add_argument("--once", action="store_true", help="sweep once and exit")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)  # the same JSON lines as the API
    dispatcher = get_dispatcher(settings)
    webhooks = deliverer(settings)  # the outbox: messages of every job, whichever worker ended it
    store = worker_context(settings).store
    # What killed jobs and uploads left on this host's disk, and (S3) in the bucket.
    temp_files = PeriodicSweep(store.tmp_dir, max(args.interval, 60.0), also=store.sweep)
    while True:
        try:
            sweep(settings, dispatcher, args.grace, args.resend_after)
        except Exception:
            # The database or broker may be restarting: try again next round.
            log.exception("recovery sweep failed")
        temp_files.maybe_sweep()
        if args.once:
            webhooks.stop()
            return
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
