"""Real processes for the integration tests: Celery worker, recovery loop, API, a private Redis.

Each runs as a subprocess in its own session (so a stop reaches its children),
logs to a file in the test's temp dir, and is ready only once it says so.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import redis

from app.core.jobs.dispatch_backends import settings_env
from app.core.settings import Settings
from trajx.demo.server import free_port
from worker.recovery import RESEND_AFTER_SECONDS


class Service:
    """A subprocess started with `settings` (if any) as TRAJX_* variables; `ready()` says when it's up."""

    def __init__(self, name: str, command: list[str], settings: Settings | None, log_dir: Path,
                 ready: Callable[["Service"], bool], start_timeout: float = 60.0) -> None:
        self.name = name
        self.command = command
        self.env = {**os.environ, **(settings_env(settings) if settings is not None else {})}
        self.log_path = log_dir / f"{name}.log"
        self._ready = ready
        self._start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._log_start = 0

    def start(self) -> "Service":
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self._start_timeout
        while not self._ready(self):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the whole process group; SIGKILL it if it outlives `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        """What the current run (not an earlier one on the same log) has logged."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def celery_worker(settings: Settings, log_dir: Path, name: str = "worker", concurrency: int = 1) -> Service:
    """`celery worker -Q gpu,cpu -c 1`: one job at a time, a fresh child per job (`concurrency`
    children: as many workers)."""
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "gpu,cpu",
               "-c", str(concurrency), "--hostname", f"{name}@%h", "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return Service(name, command, settings, log_dir, lambda s: " ready." in s.log_since_start(), start_timeout=90)


def recovery_loop(settings: Settings, log_dir: Path, interval: float = 0.5, grace: float = 1.0,
                  resend_after: float = RESEND_AFTER_SECONDS) -> Service:
    command = [sys.executable, "-m", "worker.recovery", "--interval", str(interval), "--grace", str(grace),
               "--resend-after", str(resend_after)]
    return Service("recovery", command, settings, log_dir, lambda s: s.process.poll() is None)


def api_server(settings: Settings, log_dir: Path, port: int | None = None) -> Service:
    """The API under uvicorn; `service.url` is its base URL."""
    port = port or free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    service = Service(f"api-{port}", command, settings, log_dir, _answers_readyz)
    service.url = f"http://127.0.0.1:{port}"
    return service


def _answers_readyz(service: Service) -> bool:
    try:
        return httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def redis_server(log_dir: Path) -> Service:
    """A private `redis-server` on a free port, nothing persisted; `service.url` is its DB 0.

    Each test module that needs a broker gets its own: parallel test workers never share
    a queue, and a test may restart it without touching the machine's Redis.
    """
    port = free_port()
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", str(log_dir)]
    service = Service(f"redis-{port}", command, None, log_dir, _answers_ping)
    service.url = f"redis://127.0.0.1:{port}/0"
    return service


def _answers_ping(service: Service) -> bool:
    try:
        return bool(redis.Redis.from_url(service.url, socket_timeout=1).ping())
    except redis.ConnectionError:
        return False


@contextmanager
def redis_restarted(server: Service) -> Iterator[None]:
    """Stop `server` (its queues are lost: nothing is persisted), then start it again on
    the same port; the restart is in a `finally`."""
    server.stop()
    try:
        yield
    finally:
        server.start()


@dataclass
class CeleryStack:
    """The production shape on one machine: API, Celery worker and recovery loop over
    PostgreSQL and Redis, with one tenant whose key is `api_key`."""

    settings: Settings
    worker: Service
    api: Service
    api_key: str


@contextmanager
def celery_stack(database_url: str, root: Path, broker_url: str) -> Iterator[CeleryStack]:
    """Start the stack on an empty (migrated) `database_url` and a flushed Redis database;
    fails the caller with redis.ConnectionError when Redis is down."""
    from sqlalchemy import text

    from app.core.persistence.db import make_engine, make_session_factory, session_scope
    from app.core.persistence.models import Base
    from app.core.tenancy.admin import create_api_key, create_tenant

    redis.Redis.from_url(broker_url).flushdb()
    engine = make_engine(database_url)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    settings = Settings(database_url=database_url, data_dir=root, storage_dir=root / "artifacts",
                        broker_url=broker_url, dispatcher="celery", heartbeat_seconds=0.5, stale_seconds=3,
                        auto_migrate=False, create_local_key=False,
                        webhook_allow_private=True)  # tests' webhook receivers are local
    with session_scope(make_session_factory(engine)) as session:
        create_tenant(session, "e2e")
        key = create_api_key(session, "e2e")
    engine.dispose()
    with recovery_loop(settings, root), celery_worker(settings, root) as worker, \
            api_server(settings, root) as api:
        yield CeleryStack(settings, worker, api, key)
