"""Which database errors mean "the database is away" (503) and which are bugs (500)."""

import psycopg
from sqlalchemy import exc as sa

from app.core.persistence.outage import is_unavailable


def _driver_error(error: Exception, during: Exception | None = None) -> Exception:
    """`error` as the driver raises it, while handling `during` if given."""
    try:
        try:
            if during is not None:
                raise during
        finally:
            raise error
    except Exception as raised:  # noqa: BLE001 - the exception object is what is tested
        return raised


def test_an_error_raised_while_the_driver_handled_a_closed_socket_is_an_outage():
    # psycopg refuses to restore autocommit after the socket closed during the pool's ping.
    orig = _driver_error(psycopg.ProgrammingError("can't change 'autocommit' now"),
                         during=psycopg.OperationalError("connection socket closed"))
    assert is_unavailable(sa.ProgrammingError("SELECT 1", {}, orig))


def test_a_programming_error_of_its_own_is_a_bug():
    orig = _driver_error(psycopg.ProgrammingError("syntax error at or near 'SELEC'"))
    assert not is_unavailable(sa.ProgrammingError("SELEC 1", {}, orig))
    orig = _driver_error(psycopg.errors.UniqueViolation("duplicate key"),
                         during=ValueError("unrelated"))
    assert not is_unavailable(sa.IntegrityError("INSERT", {}, orig))


def test_operational_and_interface_errors_stay_outages():
    orig = _driver_error(psycopg.OperationalError("connection refused"))
    assert is_unavailable(sa.OperationalError("SELECT 1", {}, orig))
    assert is_unavailable(sa.InterfaceError("SELECT 1", {}, orig))
