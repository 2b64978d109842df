"""Celery tasks: thin wrappers that carry a job id to `run_job`.

Imported by the worker process only (it is in the app's `include`). The parent
imports torch, the engine and the database driver here, once, so every child it
forks starts warm. The parent never runs a torch op: an OpenMP thread pool started
before a fork hangs the child.

On a warm shutdown (SIGTERM to the worker, e.g. `docker stop`) the parent tells its
children (SIGUSR2); a running job goes back to the queue at its next step and its
message is requeued, so another worker resumes it without waiting for a stale heartbeat.
"""

import gc
import logging
import os
import signal
import threading
from functools import lru_cache
from pathlib import Path

import torch

# torch.use_deterministic_algorithms imports this lazily: 2.5 s in every fresh child.
import torch._inductor.config
from celery.exceptions import Reject
from celery.signals import celeryd_init, worker_process_init, worker_shutting_down

from app.core.jobs.dispatch_backends import message_consumed, message_retried
from app.core.jobs.fair_share import DEFERRED
from app.core.persistence.db import make_engine
from app.core.persistence.outage import is_unavailable
from app.core.settings import get_settings
from app.core.storage.temp_files import PeriodicSweep
from worker.celery_app import RUN_JOB_TASK, app
from worker.context import worker_context
from worker.runner import STORAGE_FULL, run_job
from worker.threads import threads_per_job, use_threads
from worker.webhooks import deliverer

# Loads the SQLAlchemy dialect and driver without opening a connection (none may cross a fork).
make_engine(get_settings().database_url).dispose()

log = logging.getLogger(__name__)
# The longest wait before a message that met an unavailable database is tried again.
MAX_RETRY_SECONDS = 30
# SIGUSR1 is billiard's soft-time-limit signal in pool children.
RELEASE_SIGNAL = signal.SIGUSR2
_shutdown = threading.Event()
# torch threads of each pool child, set in the parent from its concurrency (children inherit it).
_child_threads: int | None = None
# A job handed back because the store is full is tried again after this long.
STORAGE_FULL_RETRY_SECONDS = 30.0


# max_retries=None on the task itself: `retry(max_retries=None)` would mean Celery's default
# of 3, and the fourth retry would drop the message silently while its marker looks fresh.
@app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True, bind=True, max_retries=None)
def run_job_task(self, job_id: str) -> None:
    """Run job `job_id`; a job that cannot be claimed (done, or running elsewhere) is a no-op,
    one whose tenant has its running quota is tried again after `Settings.defer_seconds`.

    With the database unavailable the message is not spent: it goes back to the broker
    (`retry`, with backoff, as often as it takes: the job's attempts, not the message's,
    bound the work) and the job's dispatched marker is refreshed, so nothing depends on
    recovery noticing. A job the outage interrupted is released by this process once the
    database answers again (`worker.runner`), so it holds no tenant slot meanwhile.
    """
    try:
        status = run_job(job_id, shutdown=_shutdown)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        countdown = min(2 ** self.request.retries, MAX_RETRY_SECONDS)
        log.warning("job %s: database unavailable (%s); message retried in %d s (retry %d)", job_id,
                    type(exc).__name__, countdown, self.request.retries + 1)
        message_retried(get_settings(), job_id)
        raise self.retry(countdown=countdown) from None
    finally:
        # The child stays for the next job: hand its GPU memory back. A reference cycle
        # (a traceback, an autograd graph) can keep tensors alive, and the cache can only
        # release blocks nothing references; a collection costs ~0.2 s, so CUDA jobs only.
        if torch.cuda.is_initialized():
            gc.collect()
            torch.cuda.empty_cache()
    _temp_files().maybe_sweep()
    if status == "queued":
        raise Reject(f"worker shutting down; job {job_id} handed back", requeue=True)
    if status == DEFERRED:
        defer = get_settings().defer_seconds
        log.info("job %s: its tenant is at its running-job limit; message retried in %g s", job_id, defer)
        message_retried(get_settings(), job_id)
        raise self.retry(countdown=defer)
    if status == STORAGE_FULL:
        log.warning("job %s: the store is full; message retried in %g s", job_id, STORAGE_FULL_RETRY_SECONDS)
        message_retried(get_settings(), job_id)
        raise self.retry(countdown=STORAGE_FULL_RETRY_SECONDS)
    message_consumed(get_settings(), job_id)


@lru_cache
def _temp_files() -> PeriodicSweep:
    """This child's sweep of the store's temporary files (a killed sibling's job directory)."""
    return PeriodicSweep(worker_context(get_settings()).store.tmp_dir)


@celeryd_init.connect
def _share_cores(options: dict | None = None, **_: object) -> None:
    # Runs in the parent before it forks; only a number is computed, no torch op.
    global _child_threads
    concurrency = (options or {}).get("concurrency") or os.cpu_count() or 1  # Celery's default
    _child_threads = threads_per_job(get_settings().worker_threads, concurrency)


@worker_process_init.connect
def _start_child(**_: object) -> None:
    use_threads(_child_threads or threads_per_job(get_settings().worker_threads))
    signal.signal(RELEASE_SIGNAL, lambda *_: _shutdown.set())
    _temp_files().maybe_sweep()  # a new child often replaces a killed one
    # Every child delivers the webhook outbox (its own jobs' messages first, promptly).
    deliverer(get_settings())


@worker_shutting_down.connect
def _tell_children_to_release(**_: object) -> None:
    # Runs in the parent; only its pool children take the signal.
    for pid in _child_pids():
        try:
            os.kill(pid, RELEASE_SIGNAL)
        except ProcessLookupError:
            pass


def _child_pids() -> list[int]:
    """This process's children, from /proc (Linux); none where that is unavailable."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids
