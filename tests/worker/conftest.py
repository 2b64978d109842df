"""Worker test fixtures on top of the shared ones in tests/conftest.py.

`settings` (SQLite and PostgreSQL), `tenant` and the database fixtures come from
there; the services a worker needs (Redis, Celery worker, API processes) are in
tests/worker/services.py.
"""

import pytest


@pytest.fixture
def tenant_id(tenant) -> str:
    return tenant.id
