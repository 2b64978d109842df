"""Celery tasks: thin wrappers that carry a job id to `run_job`.

Imported by the worker process only (it is in the app's `include`); importing it
loads torch and the engine in the parent, so each forked child starts warm.
"""

from worker.celery_app import RUN_JOB_TASK, app
from worker.jobs import run_job


@app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)
def run_job_task(job_id: str) -> None:
    """Run job `job_id`; a job that cannot be claimed (done, or running elsewhere) is a no-op."""
    run_job(job_id)
