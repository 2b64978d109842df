"""Celery tasks: thin wrappers that carry a job id to `run_job`.

Imported by the worker process only (it is in the app's `include`). The parent
imports torch, the engine and the database driver here, once, so every child it
forks starts warm. The parent never runs a torch op: an OpenMP thread pool started
before a fork hangs the child.
"""

import torch

# torch.use_deterministic_algorithms imports this lazily: 2.5 s in every fresh child.
import torch._inductor.config

from app.db import make_engine
from app.settings import get_settings
from worker.celery_app import RUN_JOB_TASK, app
from worker.jobs import run_job

# Loads the SQLAlchemy dialect and driver without opening a connection (none may cross a fork).
make_engine(get_settings().database_url).dispose()


@app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)
def run_job_task(job_id: str) -> None:
    """Run job `job_id`; a job that cannot be claimed (done, or running elsewhere) is a no-op."""
    try:
        run_job(job_id)
    finally:
        # The child stays for the next job: hand cached GPU memory back. (No gc.collect():
        # tensors are freed by reference counting; a full collection cost 0.2 s a job.)
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
