"""Shared fixtures: migrated databases (SQLite and a real PostgreSQL), settings, the API.

- `database_url`: a clean, migrated database, parametrized over SQLite and PostgreSQL
  (PostgreSQL cases skip with a reason when the server at 127.0.0.1:5432 is down, and
  fail instead when TRAJX_REQUIRE_SERVICES=1: see `service_unavailable`).
  `sqlite_url` / `postgres_url` pick one backend.
- `settings`: Settings for that database with a temp data dir and dispatcher "none",
  and the artifact store `store_backend` names: "local" unless a test parametrizes
  `store_backend` with "s3" (then a real SeaweedFS bucket, `s3_endpoint`, with a prefix
  of its own; on SQLite only, since the store does not depend on the database).
- `session_factory`, `store`: the database sessions and artifact store of `settings`.
- `redis_server`, `redis_url`: a private Redis server per test module (so parallel
  workers share no queues and a test may restart it).
- `run_cache`: a temp folder shared by every worker of this run (`tests.support.run_cache`);
  `digits`: the digits source trajectory and data shards, trained once per run there;
  `tiny_lm`: the tiny GPT-2 source and stdlib text of tests/engine/stdlib_lm.py, likewise.
- `tenant`: a fresh tenant and API key (`tenant.headers` authenticates as it).
- `dispatcher`: a `tests.support.dispatch.RecordingDispatcher`, the one `api_app` hands jobs to.
- `api_app`, `api`: the FastAPI app for `settings` and a TestClient on it.

One PostgreSQL database is created per test session (uniquely named) and dropped at
the end; each test gets it truncated. Under pytest-xdist (`.ci/test` runs `-n 4 --dist
loadgroup`) each worker is its own session, so nothing above is shared between workers;
`pytest_collection_modifyitems` keeps a module with module-scoped fixtures on one worker
(its expensive setup is built once) and starts modules with `slow` tests first (the long
ones do not end the run alone).
"""

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import text

from app.core.persistence.db import make_engine, make_session_factory, session_scope
from app.core.persistence.migrate import upgrade
from app.core.persistence.models import Base
from app.core.settings import Settings
from app.core.storage.store import ArtifactStore
from app.core.tenancy.admin import create_tenant
from app.core.tenancy.auth import issue_key
from tests.support.dispatch import RecordingDispatcher
from tests.support.postgres import PostgresUnavailable, scratch_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        scopes = {d.scope for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs}
        if scopes & {"module", "class"}:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # Modules with slow tests first; a stable sort keeps each module's tests together.
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)


def service_unavailable(reason: str) -> NoReturn:
    """Skip a test whose PostgreSQL or Redis is down, or fail it when TRAJX_REQUIRE_SERVICES=1:
    where the services are meant to run (CI), a skip would hide a broken setup."""
    if os.environ.get("TRAJX_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (and TRAJX_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def run_cache(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run shares (the workers' temp roots' parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def digits(run_cache):
    """The digits source (θ⁰, θᵀ of the demo's mlp) and its data shards, trained once per run."""
    from tests.support.digits import digits_files, write_digits_source
    from tests.support.run_cache import cached_dir

    return digits_files(cached_dir(run_cache, "digits-source", write_digits_source))


@pytest.fixture(scope="session")
def tiny_lm(run_cache):
    """`tests.engine.stdlib_lm.tiny_lm_source()` (train, held-out, θ⁰, θᵀ), trained once per run."""
    from tests.engine.stdlib_lm import read_tiny_lm_source, write_tiny_lm_source
    from tests.support.run_cache import cached_dir

    return read_tiny_lm_source(cached_dir(run_cache, "tiny-lm-source", write_tiny_lm_source))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A private Redis server for this module (`tests.support.services.redis_server`);
    skips (or fails, see `service_unavailable`) where `redis-server` is not installed."""
    from tests.support.services import redis_server

    if shutil.which("redis-server") is None:
        service_unavailable("redis-server is not installed")
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def redis_url(redis_server) -> str:
    """DB 0 of this module's private Redis server."""
    return redis_server.url


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """`tests.support.postgres.scratch_database`, skipping (or failing, see
    `service_unavailable`) when the server is down."""
    try:
        with scratch_database(prefix) as url:
            yield url
    except PostgresUnavailable as exc:
        service_unavailable(str(exc))


@pytest.fixture(scope="session")
def postgres_database() -> str:
    """URL of a migrated PostgreSQL database private to this test session."""
    with scratch_postgres("trajx_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "trajx.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(_sqlite_template, tmp_path) -> str:
    """A migrated SQLite database in this test's temp dir."""
    path = tmp_path / "trajx.db"
    shutil.copy(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(postgres_database) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    engine = make_engine(postgres_database)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        # A connection some earlier test left inside a transaction would block TRUNCATE
        # forever; fail loudly instead.
        connection.execute(text("SET LOCAL lock_timeout = '10s'"))
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """A clean migrated database, once per backend."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A SeaweedFS S3 endpoint: the one `.ci/services` started, else a private one."""
    from tests.support import seaweedfs

    for name, value in seaweedfs.CREDENTIALS.items():
        os.environ.setdefault(name, value)  # boto3's usual chain, in this process and its children
    if seaweedfs.answers(seaweedfs.SHARED_ENDPOINT):
        yield seaweedfs.SHARED_ENDPOINT
        return
    if os.environ.get("TRAJX_REQUIRE_SERVICES") == "1":
        pytest.fail(f"SeaweedFS at {seaweedfs.SHARED_ENDPOINT} is not reachable (and TRAJX_REQUIRE_SERVICES=1)")
    try:
        server = seaweedfs.SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(f"no SeaweedFS: {exc}")
    yield server.endpoint
    server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint) -> Iterator[str]:
    """This test session's own bucket (parallel sessions never share one)."""
    from tests.support import seaweedfs

    bucket = seaweedfs.new_bucket(s3_endpoint)
    yield bucket
    seaweedfs.drop_bucket(s3_endpoint, bucket)


def s3_settings(endpoint: str, bucket: str, tmp_path: Path) -> dict:
    """The settings that put a test's store in `bucket` under a prefix of its own."""
    return {"storage_backend": "s3", "s3_endpoint_url": endpoint, "s3_bucket": bucket,
            "s3_prefix": f"t-{secrets.token_hex(6)}/", "s3_region": "us-east-1",
            "cache_dir": tmp_path / "cache", "s3_timeout_seconds": 5.0}


@pytest.fixture
def store_backend() -> str:
    """The artifact store backend of `settings`; parametrize it to run a test on both."""
    return "local"


@pytest.fixture
def settings(request, database_url, tmp_path, store_backend) -> Settings:
    storage = {}
    if store_backend == "s3":
        if not database_url.startswith("sqlite"):
            pytest.skip("the S3 variant runs on SQLite only (the store does not depend on the database)")
        storage = s3_settings(request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket"),
                              tmp_path)
    return Settings(database_url=database_url, data_dir=tmp_path / "data", storage_dir=tmp_path / "artifacts",
                    dispatcher="none", auto_migrate=False, create_local_key=False, auth_cache_seconds=0,
                    max_upload_bytes=64 * 1024**2, max_header_bytes=1024**2, webhook_allow_private=True,
                    storage_min_free_bytes=0, **storage)


@pytest.fixture
def session_factory(settings):
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(settings) -> ArtifactStore:
    from worker.context import worker_context

    return worker_context(settings).store


@dataclass(frozen=True)
class TenantKey:
    id: str
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(session_factory, name: str | None = None) -> TenantKey:
    """Create a tenant (random name unless given) with one API key."""
    name = name or f"tenant-{secrets.token_hex(4)}"
    with session_scope(session_factory) as session:
        tenant = create_tenant(session, name)
        _, key = issue_key(session, tenant, "test")
        return TenantKey(tenant.id, name, key)


@pytest.fixture
def tenant(session_factory) -> TenantKey:
    return make_tenant(session_factory)


@pytest.fixture
def tenant_id(tenant) -> str:
    return tenant.id


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def api_app(settings, dispatcher):
    from app.main import create_app

    app = create_app(settings, dispatcher=dispatcher)
    yield app
    app.state.services.engine.dispose()


@pytest.fixture
def api(api_app):
    """A TestClient on the app (lifespan run); pass `headers=tenant.headers` per request."""
    from fastapi.testclient import TestClient

    with TestClient(api_app, raise_server_exceptions=False) as client:
        yield client
