"""Celery's configuration, shared by the sender (the API's dispatcher) and the workers.

Redis broker, JSON messages carrying only a job id, sent by task name (`RUN_JOB_TASK`):
the sender never imports the task. The database is the truth about jobs, so there is
no result backend; a message is only a nudge to `run_job(job_id)`, whose atomic claim
makes redelivery harmless. The worker's app is `worker.celery_app`.
"""

from celery import Celery
from kombu import Queue

from app.core.settings import Settings

RUN_JOB_TASK = "trajx.run_job"
QUEUES = ("gpu", "cpu")
# Redis redelivers an unacknowledged message after the visibility timeout; it must
# outlast the longest job or a healthy long job would get a (harmless) second message.
VISIBILITY_MARGIN_SECONDS = 3600


def celery_config(settings: Settings) -> dict:
    """The Celery configuration for `settings` (a plain dict, pinned by tests)."""
    hard_limit = settings.job_time_limit_seconds + settings.stale_seconds
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": int(hard_limit + VISIBILITY_MARGIN_SECONDS),
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        # A killed child requeues its message; the DB attempt counter bounds the retries.
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # One job at a time per worker: a gpu worker owns its GPU (`-c` overrides it for cpu workers).
        "worker_concurrency": 1,
        # A warm child runs job after job (a fresh child per job cost 3 s of start-up
        # before each job on the test machine); the task releases CUDA memory after each
        # job, and a child is replaced after 50 jobs or once it holds 4 GiB of host memory.
        "worker_max_tasks_per_child": 50,
        "worker_max_memory_per_child": 4 * 1024 * 1024,  # KiB
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": "gpu",
        # The job runs its own deadline cooperatively; the hard limit is a backstop.
        "task_time_limit": int(hard_limit),
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def create_celery(settings: Settings, include: tuple[str, ...] = ()) -> Celery:
    """A Celery app for `settings`; a worker passes its task modules in `include`."""
    celery = Celery("trajx", include=list(include))
    celery.conf.update(celery_config(settings))
    return celery
