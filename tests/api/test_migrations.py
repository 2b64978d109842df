"""One Alembic chain on SQLite and PostgreSQL: up from empty, down again, no drift from the models."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.core.db import make_engine
from app.core.migrate import alembic_config, upgrade
from app.core.models import Base
from tests.conftest import POSTGRES_ADMIN_URL, service_unavailable


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    import psycopg

    try:
        admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}".splitlines()[0])
    name = f"trajx_migr_{tmp_path.name[-20:].replace('-', '_').lower()}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_upgrade_from_empty_has_no_drift_and_downgrades(empty_database_url):
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                    Base.metadata)
            assert diff == [], f"models and migrations drifted: {diff}"
            assert set(inspect(connection).get_table_names()) >= {t.name for t in Base.metadata.sorted_tables}
        upgrade(empty_database_url)  # at head already: a no-op
        command.downgrade(alembic_config(empty_database_url), "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 0
    finally:
        engine.dispose()
