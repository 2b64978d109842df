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
import os
import signal
import threading
from pathlib import Path

import torch

# torch.use_deterministic_algorithms imports this lazily: 2.5 s in every fresh child.
import torch._inductor.config
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_shutting_down

from app.core.db import make_engine
from app.core.fair_share import DEFERRED
from app.core.settings import get_settings
from worker.celery_app import RUN_JOB_TASK, app
from worker.jobs import run_job
from worker.webhooks import deliverer

# Loads the SQLAlchemy dialect and driver without opening a connection (none may cross a fork).
make_engine(get_settings().database_url).dispose()

# SIGUSR1 is billiard's soft-time-limit signal in pool children.
RELEASE_SIGNAL = signal.SIGUSR2
_shutdown = threading.Event()
# A job deferred by its tenant's running quota is offered again after this long.
DEFER_SECONDS = 5.0


@app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True, bind=True)
def run_job_task(self, job_id: str) -> None:
    """Run job `job_id`; a job that cannot be claimed (done, or running elsewhere) is a no-op,
    one whose tenant has its running quota is tried again after DEFER_SECONDS."""
    try:
        status = run_job(job_id, shutdown=_shutdown)
    finally:
        # The child stays for the next job: hand its GPU memory back. A reference cycle
        # (a traceback, an autograd graph) can keep tensors alive, and the cache can only
        # release blocks nothing references; a collection costs ~0.2 s, so CUDA jobs only.
        if torch.cuda.is_initialized():
            gc.collect()
            torch.cuda.empty_cache()
    if status == "queued":
        raise Reject(f"worker shutting down; job {job_id} handed back", requeue=True)
    if status == DEFERRED:
        raise self.retry(countdown=DEFER_SECONDS, max_retries=None)


@worker_process_init.connect
def _start_child(**_: object) -> None:
    signal.signal(RELEASE_SIGNAL, lambda *_: _shutdown.set())
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
