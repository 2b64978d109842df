"""The workers' Celery application (configuration in `app.core.celery_config`).

Run a GPU worker (one per GPU, one job at a time):

    python -m celery -A worker.celery_app worker -Q gpu -c 1

The task module is listed in `include`, so only a worker process imports it (and torch).
"""

from app.core.celery_config import RUN_JOB_TASK, create_celery
from app.core.settings import get_settings

__all__ = ["RUN_JOB_TASK", "app"]

app = create_celery(get_settings(), include=("worker.celery_tasks",))
