"""A database outage with jobs queued in Redis and one running: every job still finishes.

Real processes on a PostgreSQL database of the test's own (made unavailable with
`ALLOW_CONNECTIONS false` and its connections terminated), Redis, `celery worker -c 1`,
the recovery loop and the API under uvicorn.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from app.core.jobs.dispatch_backends import DISPATCH_MARKER
from app.core.persistence.db import make_engine, make_session_factory
from app.core.settings import Settings
from tests.conftest import make_tenant
from tests.support.db_faults import database_down, scratch_postgres
from tests.support.digits import digits_spec
from tests.support.services import Service, api_server, celery_worker, recovery_loop
from trajx.client import Client
from worker.celery_app import RUN_JOB_TASK, create_celery

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

LONG = {"steps": 20, "grad_batches": 2}
QUICK_STEPS = 3
# Longer than the stale period (the running job's heartbeat goes stale), and than Celery's
# default 3 retries of 1 + 2 + 4 + 8 s: a message used to be dropped after those (issue 28.1).
OUTAGE_SECONDS = 20
# Every job is done this soon after the outage ends (one retry period, plus the jobs' run time).
DONE_AFTER_OUTAGE_SECONDS = 90


@dataclass
class Stack:
    database_url: str
    settings: Settings
    worker: Service
    client: Client
    ids: dict[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, digits) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("outage-stack")
    with scratch_postgres() as url:
        settings = Settings(database_url=url, data_dir=root, storage_dir=root / "artifacts", broker_url=redis_url,
                            dispatcher="celery", heartbeat_seconds=0.5, stale_seconds=3,
                            auto_migrate=False, create_local_key=False)
        engine = make_engine(url)
        key = make_tenant(make_session_factory(engine)).key
        engine.dispose()
        with recovery_loop(settings, root, resend_after=10), celery_worker(settings, root) as worker, \
                api_server(settings, root) as api, Client(api.url, key, timeout=10) as client:
            yield Stack(url, settings, worker, client, digits.upload(client))


def _claims(stack: Stack, job_id: str) -> int:
    return [event.type for event in stack.client.events(job_id)].count("started")  # one per claim


def test_jobs_queued_and_running_through_a_database_outage_all_finish(stack):
    running = stack.client.create_job(digits_spec(stack.ids, **LONG))
    queued = [stack.client.create_job(digits_spec(stack.ids, steps=QUICK_STEPS, seeds=(seed,)))
              for seed in range(1, 5)]
    deadline = time.monotonic() + 60
    while (stack.client.get_job(running.id).progress.step or 0) < 2:  # step 1 recorded
        assert time.monotonic() < deadline, stack.worker.log_tail()
        time.sleep(0.05)

    with database_down(stack.database_url):
        time.sleep(OUTAGE_SECONDS)
    deadline = time.monotonic() + DONE_AFTER_OUTAGE_SECONDS

    for job in (running, *queued):
        done = stack.client.wait(job.id, timeout=max(1.0, deadline - time.monotonic()), poll_interval=0.2,
                                 max_interval=1)
        assert done.status == "succeeded", (done, stack.worker.log_tail())
    assert all(_claims(stack, job.id) == 1 for job in queued)  # none ran twice
    assert _claims(stack, running.id) == 2  # interrupted by the outage, run again ...
    resumed = [e.data["step"] for e in stack.client.events(running.id) if e.type == "resumed"]
    assert len(resumed) == 1 and resumed[0] >= 1  # ... after the step it had reached
    assert "database unavailable" in stack.worker.log_since_start()  # messages met the outage


def test_a_message_consumed_without_a_claim_clears_the_dispatched_marker(stack):
    """E.g. a worker pointed at another deployment's database: the job it cannot find stays
    queued where it lives, and that deployment's recovery must not wait for the marker."""
    broker = redis.Redis.from_url(stack.settings.broker_url)
    marker = DISPATCH_MARKER.format(job_id="job_00000000000000000000000000000000")
    broker.set(marker, "1", ex=3600)
    create_celery(stack.settings).send_task(RUN_JOB_TASK, args=["job_00000000000000000000000000000000"],
                                            queue="cpu")
    deadline = time.monotonic() + 30
    while broker.exists(marker):
        assert time.monotonic() < deadline, stack.worker.log_tail()
        time.sleep(0.1)
