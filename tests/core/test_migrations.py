"""One Alembic chain on SQLite and PostgreSQL: up from empty, down again, no drift from the models."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.core.persistence.db import make_engine
from app.core.persistence.migrate import alembic_config, upgrade
from app.core.persistence.models import Base
from tests.conftest import scratch_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with scratch_postgres("trajx_migr") as url:
        yield url


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
