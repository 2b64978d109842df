"""The API over a PostgreSQL database that drops connections or goes away: 503, never 500.

A real uvicorn server on a database of the test's own; connections are terminated by
PostgreSQL itself (`pg_terminate_backend`), the outage refuses them (`ALLOW_CONNECTIONS false`).
"""

import threading
import time
from collections import Counter

import httpx
import pytest

from app.core.persistence.db import make_engine, make_session_factory
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import make_tenant
from tests.support.db_faults import database_down, scratch_postgres, terminate_connections
from tests.support.live_server import serve
from tests.support.rows import make_job

pytestmark = [pytest.mark.postgres]

POLLERS = 4
STORM_SECONDS = 6.0


@pytest.fixture
def served(tmp_path):
    with scratch_postgres() as url:
        # No key cache: every request authenticates against the database too.
        settings = Settings(database_url=url, data_dir=tmp_path, storage_dir=tmp_path / "artifacts",
                            dispatcher="none", auto_migrate=False, create_local_key=False, auth_cache_seconds=0)
        engine = make_engine(url)
        tenant = make_tenant(make_session_factory(engine))
        engine.dispose()
        job_id = make_job(settings, tenant.id)
        app = create_app(settings)
        with serve(app) as base_url, httpx.Client(base_url=base_url, headers=tenant.headers, timeout=30) as client:
            yield url, client, job_id
        app.state.services.engine.dispose()


def _poll(client: httpx.Client, job_id: str, stop: threading.Event, statuses: Counter, bodies: list) -> None:
    paths = (f"/v1/jobs/{job_id}", "/v1/jobs", f"/v1/jobs/{job_id}/events")
    while not stop.is_set():
        for path in paths:
            response = client.get(path)
            statuses[response.status_code] += 1
            if response.status_code != 200:
                bodies.append((path, response.status_code, response.text))


def test_a_storm_of_terminated_connections_during_polling_answers_no_500(served):
    url, client, job_id = served
    stop, statuses, bodies = threading.Event(), Counter(), []
    pollers = [threading.Thread(target=_poll, args=(client, job_id, stop, statuses, bodies)) for _ in range(POLLERS)]
    for thread in pollers:
        thread.start()
    terminated = 0
    deadline = time.monotonic() + STORM_SECONDS
    try:
        while time.monotonic() < deadline:
            terminated += terminate_connections(url)
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in pollers:
            thread.join()
    # A request whose connection died is run again on a fresh one; it may still answer 503
    # (three dead connections in a row), but never 500.
    assert set(statuses) <= {200, 503}, bodies[:3]
    assert terminated > 20, terminated  # the storm hit the API's connections, many times
    assert statuses[200] > 100, statuses
    assert statuses[503] <= statuses[200] / 20, statuses


def test_a_database_outage_answers_503_with_retry_after_and_recovers(served):
    url, client, job_id = served
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    with database_down(url):
        for path in (f"/v1/jobs/{job_id}", "/v1/jobs", "/readyz"):
            response = client.get(path)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "database_unavailable"
            assert int(response.headers["retry-after"]) > 0
        cancel = client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancel.status_code == 503 and cancel.json()["code"] == "database_unavailable"
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"
