"""Pin the Celery configuration and the registered task names: a change shows in review."""

from app.core.celery_config import celery_config
from app.core.settings import Settings


def test_celery_config_is_json_only_late_ack_and_prefetch_one():
    settings = Settings(broker_url="redis://broker:6379/0", job_time_limit_seconds=3600, stale_seconds=60)
    config = celery_config(settings)
    assert config["broker_url"] == "redis://broker:6379/0"
    assert (config["task_serializer"], config["result_serializer"], config["accept_content"]) == (
        "json", "json", ["json"])
    assert config["task_ignore_result"] is True and config["result_backend"] is None
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1 and config["worker_concurrency"] == 1
    assert config["worker_max_tasks_per_child"] == 50 and config["worker_max_memory_per_child"] == 4 * 1024**2
    assert [q.name for q in config["task_queues"]] == ["gpu", "cpu"]
    # Redelivery must wait longer than any job may run.
    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"] > 3600


def test_registered_task_names():
    import worker.celery_tasks  # noqa: F401  (registers the tasks, as a worker does)
    from worker.celery_app import app

    app.loader.import_default_modules()
    assert sorted(name for name in app.tasks if not name.startswith("celery.")) == ["trajx.run_job"]
    task = app.tasks["trajx.run_job"]
    assert task.acks_late and task.ignore_result

