"""Dispatchers and the recovery sweep against the real local Redis (a database of its own)."""

import base64
import json
import subprocess
import sys
from datetime import timedelta

import pytest
import redis

from app.core.celery_config import RUN_JOB_TASK
from app.core.jobs.dispatch_backends import DISPATCH_MARKER, CeleryDispatcher, message_retried
from app.core.persistence.models import utcnow
from tests.support.rows import event_types, load_job, make_job
from worker.recovery import sweep

CPU_SPEC = {"kind": "transfer", "arch": {"name": "mlp"}, "source": ["a", "b"], "targets": [{"seed": 1}],
            "train_data": "d", "params": {"device": "cpu"}}


@pytest.fixture
def broker(redis_url) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def celery_settings(settings, redis_url):
    return settings.model_copy(update={"broker_url": redis_url, "dispatcher": "celery"})


def _queued_job_ids(broker: redis.Redis, queue: str) -> list[str]:
    """Job ids in the kombu Redis list `queue`, checking each message is JSON `run_job(id)`."""
    ids = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        assert message["content-type"] == "application/json"
        assert message["headers"]["task"] == RUN_JOB_TASK
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert kwargs == {} and len(args) == 1
        ids.append(args[0])
    return ids


def test_celery_dispatch_sends_only_the_job_id_to_its_queue(celery_settings, tenant_id, broker):
    gpu_job = make_job(celery_settings, tenant_id)
    cpu_job = make_job(celery_settings, tenant_id, spec=CPU_SPEC, queue="cpu")
    dispatcher = CeleryDispatcher(celery_settings)
    for job_id in (gpu_job, cpu_job):
        dispatcher.dispatch(job_id, load_job(celery_settings, job_id).queue)
    assert _queued_job_ids(broker, "gpu") == [gpu_job]
    assert _queued_job_ids(broker, "cpu") == [cpu_job]
    assert dispatcher.marked_at(gpu_job) is not None and broker.ttl(DISPATCH_MARKER.format(job_id=gpu_job)) > 3600


def test_dispatch_with_the_broker_down_leaves_the_job_to_recovery(celery_settings, tenant_id):
    down = celery_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    job_id = make_job(down, tenant_id)
    CeleryDispatcher(down).dispatch(job_id, "gpu")  # logs, does not raise
    assert load_job(down, job_id).status == "queued"


def test_sweep_resends_lost_and_stale_jobs_and_fails_exhausted_ones(celery_settings, tenant_id, broker):
    settings = celery_settings
    dispatcher = CeleryDispatcher(settings)
    stale = utcnow() - timedelta(seconds=settings.stale_seconds + 5)
    lost = make_job(settings, tenant_id, age_seconds=60)  # its message vanished with a Redis restart
    in_broker = make_job(settings, tenant_id, age_seconds=60)
    dispatcher.dispatch(in_broker, "gpu")
    young = make_job(settings, tenant_id)
    dead_worker = make_job(settings, tenant_id, status="running", attempts=1, heartbeat_at=stale)
    exhausted = make_job(settings, tenant_id, status="running", attempts=settings.max_attempts,
                         heartbeat_at=stale)

    result = sweep(settings, dispatcher, queued_grace_seconds=10)

    assert sorted(result.redispatched) == sorted([lost, dead_worker])
    assert result.failed == [exhausted]
    assert sorted(_queued_job_ids(broker, "gpu")) == sorted([in_broker, lost, dead_worker])
    assert young not in result.redispatched
    assert event_types(settings, lost) == ["redispatched"]
    assert load_job(settings, exhausted).error_code == "worker_lost"
    # Within the stale period the messages just sent are left to arrive.
    assert sweep(settings, dispatcher, queued_grace_seconds=10).redispatched == []


def test_the_api_process_never_imports_torch_with_either_dispatcher(sqlite_url, tmp_path):
    script = f"""
import sys
from app.main import create_app
from app.core.settings import Settings
from app.core.jobs import claim
from app.core.jobs import dispatch_backends as dispatchers
from worker import recovery, webhooks
for name in ("celery", "embedded"):
    create_app(Settings(database_url={sqlite_url!r}, data_dir={str(tmp_path)!r}, dispatcher=name,
                        storage_dir={str(tmp_path / 'artifacts')!r}))
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch")[:3])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sweep_resends_a_queued_job_whose_marker_outlived_its_message(celery_settings, tenant_id, broker):
    """A crash between the job's commit and its message (or a message consumed without a
    claim whose marker stayed) leaves a marker and no message: a marker is believed only
    while it is fresh, i.e. for `resend_after_seconds` after its message was last sent or
    seen alive by a worker retrying it."""
    dispatcher = CeleryDispatcher(celery_settings)
    stranded = make_job(celery_settings, tenant_id, age_seconds=60)
    broker.set(DISPATCH_MARKER.format(job_id=stranded), "1", ex=90_000)  # as old code set it, before sending
    waiting = make_job(celery_settings, tenant_id, age_seconds=20)
    dispatcher.dispatch(waiting, "gpu")  # a message in a busy queue, within the bound
    deferred = make_job(celery_settings, tenant_id, age_seconds=600)
    message_retried(celery_settings, deferred)  # its message keeps coming back (a retry)

    result = sweep(celery_settings, dispatcher, queued_grace_seconds=10, resend_after_seconds=30)

    assert result.redispatched == [stranded]
    assert sorted(_queued_job_ids(broker, "gpu")) == sorted([waiting, stranded])
    # Re-sent now, it is left to its new message for another bound.
    assert sweep(celery_settings, dispatcher, queued_grace_seconds=10, resend_after_seconds=30).redispatched == []


def test_dispatch_sends_before_it_marks(celery_settings, tenant_id, broker, monkeypatch):
    """The window between the job's commit and its message: a send that fails leaves no
    marker, so the next sweep past the grace period re-sends the job."""
    dispatcher = CeleryDispatcher(celery_settings)
    job_id = make_job(celery_settings, tenant_id, age_seconds=60)

    def broker_down(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(dispatcher._celery, "send_task", broker_down)
    dispatcher.dispatch(job_id, "gpu")
    assert dispatcher.marked_at(job_id) is None
    monkeypatch.undo()
    assert sweep(celery_settings, dispatcher, queued_grace_seconds=10).redispatched == [job_id]
