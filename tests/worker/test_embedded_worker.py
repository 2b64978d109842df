"""The embedded worker process keeps going through database errors, and its runner
restarts it when it dies; real processes, a real outage of the real database."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.core.jobs.dispatch_backends import EmbeddedRunner, settings_env
from app.core.settings import Settings
from tests.support.rows import load_job, make_job


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _finished(settings: Settings, job_id: str) -> bool:
    return load_job(settings, job_id).status in ("succeeded", "failed", "cancelled")


@contextmanager
def database_outage(settings: Settings) -> Iterator[None]:
    """SQLite: another process holds the write lock past the busy timeout. PostgreSQL: the
    database refuses connections and its open ones are terminated."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (url.database,))
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')


@pytest.fixture
def embedded_worker(settings, tmp_path) -> Iterator[tuple[subprocess.Popen, Path]]:
    log_path = tmp_path / "embedded.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen([sys.executable, "-m", "worker.embedded"], stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, **settings_env(settings)})
    try:
        yield child, log_path
    finally:
        child.terminate()
        child.wait(30)


@pytest.mark.slow
def test_the_embedded_worker_survives_a_database_outage(settings, tenant_id, embedded_worker):
    child, log_path = embedded_worker
    before = make_job(settings, tenant_id)  # a row without inputs: it fails fast
    _wait_until(lambda: _finished(settings, before), 90, "the first job")
    with database_outage(settings):
        _wait_until(lambda: "running jobs failed" in log_path.read_text() or child.poll() is not None, 60,
                    "the worker to hit the outage")
    assert child.poll() is None, log_path.read_text()  # the error was logged, not a crash
    after = make_job(settings, tenant_id)
    _wait_until(lambda: _finished(settings, after), 60, "a job after the outage")
    assert load_job(settings, after).status == "failed"
    assert child.poll() is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_runner_restarts_a_dead_worker_without_a_new_job(settings, tenant_id):
    runner = EmbeddedRunner(settings, watchdog_seconds=0.2)
    runner.start()
    try:
        first_pid = runner.pid
        os.kill(first_pid, signal.SIGKILL)
        _wait_until(lambda: runner.pid not in (None, first_pid), 10, "a new worker process")
        job_id = make_job(settings, tenant_id)  # no wake-up: the new worker finds it by polling
        _wait_until(lambda: _finished(settings, job_id), 90, "the job")
    finally:
        runner.stop()
