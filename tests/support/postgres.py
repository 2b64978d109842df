"""Scratch PostgreSQL databases on the local server, for tests and benchmarks.

Each is uniquely named, created empty and dropped (connections forced out) at the end.
"""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

POSTGRES_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class PostgresUnavailable(Exception):
    """The local PostgreSQL server does not answer."""


@contextmanager
def scratch_database(prefix: str = "trajx_scratch") -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database; PostgresUnavailable if the server is down."""
    try:
        admin = psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise PostgresUnavailable(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}".splitlines()[0]) from exc
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
