"""Jobs known lost before their heartbeat goes stale, and which jobs this process runs.

A job row says which process runs it (`worker_id`, `host:pid`). When that process is gone
(SIGKILL, a host restart, the embedded server restarted), or is this very process and no
longer runs it (a database outage ended its run), waiting out the stale period only keeps
the job, and its tenant's running slot, idle: `expire_lost_jobs` makes such jobs claimable
at once. No torch here: recovery imports it too.
"""

import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.jobs.claim import LOST_HEARTBEAT, expire_lost
from app.core.jobs.fair_share import RUNNING
from app.core.persistence.models import Job
from app.core.settings import Settings

log = logging.getLogger(__name__)

# Jobs this process runs now, a count per id (tests run jobs on threads).
_running: Counter[str] = Counter()
_running_lock = threading.Lock()


def worker_id() -> str:
    """This process as the database knows it: `host:pid` (tests SIGKILL the pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def running_here(job_id: str) -> Iterator[None]:
    """Mark `job_id` as run by this process (from before its claim until its run ends)."""
    with _running_lock:
        _running[job_id] += 1
    try:
        yield
    finally:
        with _running_lock:
            _running[job_id] -= 1
            if not _running[job_id]:
                del _running[job_id]


def expire_lost_jobs(session: Session, settings: Settings) -> list[str]:
    """Jobs known lost now, not after their heartbeat goes stale (`claim.expire_lost`): ones the
    database says this process runs although it does not (a database outage ended their
    run), and ones whose worker process on this host no longer exists. Commits; returns ids."""
    me = worker_id()
    host = me.rsplit(":", 1)[0]
    rows = session.execute(select(Job.id, Job.worker_id).where(
        Job.status.in_(RUNNING), Job.worker_id.startswith(f"{host}:", autoescape=True),
        Job.heartbeat_at > LOST_HEARTBEAT)).all()
    lost = []
    for job_id, holder in rows:
        with _running_lock:
            if job_id in _running:
                continue
        reason = "its run here ended in a database outage" if holder == me else \
            None if _process_alive(holder) else "its worker process is gone"
        if reason and expire_lost(session, job_id, holder, reason, settings.job_time_limit_seconds):
            lost.append(job_id)
    session.commit()
    if lost:
        log.warning("jobs %s: known lost, claimable at once", lost)
    return lost


def _process_alive(holder: str) -> bool:
    """Whether the `host:pid` process (on this host) exists; True when that cannot be told."""
    try:
        os.kill(int(holder.rsplit(":", 1)[1]), 0)
    except ProcessLookupError:
        return False
    except (ValueError, OSError):
        return True
    return True
