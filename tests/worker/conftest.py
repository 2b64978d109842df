"""Worker test fixtures: migrated SQLite and PostgreSQL databases, a tenant, job rows.

PostgreSQL gets a uniquely named database per test session, dropped at the end;
its tests skip (with the reason) only when the local server is down.
"""

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from app.migrate import upgrade
from app.settings import Settings
from tests.worker.factories import make_tenant

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = f"trajx_worker_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _settings(tmp: Path, database_url: str, **overrides) -> Settings:
    settings = Settings(data_dir=tmp, database_url=database_url, storage_dir=tmp / "artifacts",
                        dispatcher="none", create_local_key=False, auto_migrate=False, **overrides)
    upgrade(settings.database_url)
    return settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request, tmp_path: Path) -> Settings:
    """Settings on a migrated SQLite file or on the session's PostgreSQL database."""
    if request.param == "sqlite":
        return _settings(tmp_path, f"sqlite:///{tmp_path / 'trajx.db'}")
    return _settings(tmp_path, request.getfixturevalue("pg_database_url"))


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path, f"sqlite:///{tmp_path / 'trajx.db'}")


@pytest.fixture
def tenant_id(settings: Settings) -> str:
    return make_tenant(settings)
