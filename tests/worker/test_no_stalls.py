"""Issue 28.1: no job waits with workers idle. A tenant whose running limit (1) is below the
number of workers (2) has its queued jobs deferred while one runs; a deferral used to spend
one of Celery's 3 retries, the fourth dropped the message while its dispatched marker looked
fresh, and the job sat until recovery's `--resend-after` (300 s). Now deferral repeats for as
long as it takes and the waiting jobs start within seconds of the slot freeing up.

The slot is held by a job row kept fresh by the test (no compute), for longer than four
deferrals. Real processes: a PostgreSQL database of the test's own, Redis, `celery worker -c 2`, the
recovery loop with its default resend period, and the API.
"""

import threading
import time

import pytest
from sqlalchemy import update

from app.core.persistence.db import make_engine, make_session_factory
from app.core.persistence.models import Job, utcnow
from app.core.settings import Settings
from tests.conftest import make_tenant
from tests.support.db_faults import scratch_postgres
from tests.support.digits import digits_spec
from tests.support.rows import make_job
from tests.support.services import api_server, celery_worker, recovery_loop
from trajx.client import Client
from worker.context import worker_context

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# Deferrals of 1 s (the default is 5 s): the tenant's one slot is held longer than four of
# them, where the old retries ran out.
DEFER_SECONDS = 1.0
HOLD_SECONDS = 7
# A waiting job starts this soon after the slot frees up (one deferral period, plus slack).
START_BOUND_SECONDS = 11


def _hold_the_slot(settings: Settings, tenant_id: str, seconds: float) -> str:
    """A job of the tenant running elsewhere (fresh heartbeat) for `seconds`, then finished;
    returns when it finished (no compute: the deferrals are what is measured)."""
    job_id = make_job(settings, tenant_id, status="running", attempts=1, worker_id="elsewhere:1",
                      heartbeat_at=utcnow(), started_at=utcnow())
    sessions = worker_context(settings).sessions
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with sessions() as session:
            session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))
            session.commit()
        time.sleep(0.5)
    with sessions() as session:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(status="succeeded", heartbeat_at=None, finished_at=utcnow()))
        session.commit()
    return utcnow()


def test_jobs_deferred_by_a_running_limit_start_once_the_slot_is_free(tmp_path, redis_url, digits):
    with scratch_postgres() as url:
        settings = Settings(database_url=url, data_dir=tmp_path, storage_dir=tmp_path / "artifacts",
                            broker_url=redis_url, dispatcher="celery", heartbeat_seconds=0.5, stale_seconds=3,
                            tenant_max_running_jobs=1, defer_seconds=DEFER_SECONDS, auto_migrate=False,
                            create_local_key=False)
        engine = make_engine(url)
        tenant = make_tenant(make_session_factory(engine))
        engine.dispose()
        with recovery_loop(settings, tmp_path), celery_worker(settings, tmp_path, concurrency=2) as worker, \
                api_server(settings, tmp_path) as api, Client(api.url, tenant.key, timeout=10) as client:
            ids = digits.upload(client)
            holder = threading.Thread(target=lambda: freed.append(_hold_the_slot(settings, tenant.id, HOLD_SECONDS)))
            freed: list = []
            holder.start()
            time.sleep(1)
            waiting = [client.create_job(digits_spec(ids, steps=3, seeds=(seed,))) for seed in (1, 2)]
            holder.join()
            ready = freed[0]
            for job in waiting:
                done = client.wait(job.id, timeout=90, poll_interval=0.2)
                assert done.status == "succeeded", (done.error, worker.log_tail())
                assert (done.started_at - ready).total_seconds() < START_BOUND_SECONDS, worker.log_tail()
                ready = done.finished_at  # the next one waited for this one's slot
            log = worker.log_since_start()
            assert log.count("running-job limit; message retried in 1 s") >= 8  # > 4 per waiting job
            assert "MaxRetriesExceeded" not in log
