"""Telling a database that is away (restarting, refusing, a dropped connection) from a bug.

The API answers such errors with 503 and `Retry-After` instead of 500, and retries a
request whose pooled connection died before it committed anything; the worker hands a
message it could not claim back to the broker. No torch here.
"""

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# What a 503 tells clients to wait: a restart or a failover usually takes seconds.
RETRY_AFTER_SECONDS = 5


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection; worth retrying later.

    OperationalError covers refused and terminated connections and server shutdowns (and,
    on SQLite, a lock held too long); InterfaceError a connection closed under us;
    PoolTimeout a pool with no free connection. DataError, IntegrityError and the rest
    are about the request, not the database.
    """
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or _raised_by_a_lost_connection(exc))


def _raised_by_a_lost_connection(exc: DBAPIError) -> bool:
    """The driver's error was raised while it handled a lost connection: psycopg, when the
    socket closes during the pool's pre-ping, refuses to restore autocommit with a
    ProgrammingError whose context is the OperationalError. PEP 249 fixes those names."""
    cause = exc.orig.__cause__ or exc.orig.__context__ if exc.orig is not None else None
    while cause is not None:
        if type(cause).__name__ in ("OperationalError", "InterfaceError"):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def is_dropped_connection(exc: BaseException) -> bool:
    """A statement failed because its connection died (SQLAlchemy invalidated it); the
    transaction it was in is gone, so work that committed nothing can run again."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
