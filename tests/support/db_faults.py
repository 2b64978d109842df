"""Database faults on a PostgreSQL database of the test's own: outages and dropped connections.

An outage refuses new connections (`ALLOW_CONNECTIONS false`) and terminates the open
ones, the way a restart or a failover looks to a client; it always ends, even when the
test fails, so the database can be dropped.
"""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from app.core.persistence.migrate import upgrade
from tests.conftest import service_unavailable
from tests.support.postgres import POSTGRES_ADMIN_URL

_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}".splitlines()[0])


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """URL of a new, migrated database, dropped at the end."""
    name = f"trajx_faults_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
            upgrade(url)
            yield url
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def terminate_connections(url: str, admin: psycopg.Connection | None = None) -> int:
    """Terminate every connection to the database of `url`; returns how many there were."""
    query = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE datname = %s AND pid <> pg_backend_pid()")
    if admin is not None:
        return admin.execute(query, (_name(url),)).fetchone()[0]
    with _admin() as own:
        return own.execute(query, (_name(url),)).fetchone()[0]


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """The database of `url` refuses connections and has none open, until the block ends."""
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{_name(url)}" ALLOW_CONNECTIONS false')
        try:
            terminate_connections(url, admin)
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{_name(url)}" ALLOW_CONNECTIONS true')
