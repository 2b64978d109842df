"""Substring and token matches in SQL that treat the user's text literally (LIKE's `%`, `_`
and the escape character are escaped), the same on SQLite and PostgreSQL."""

from sqlalchemy import ColumnElement, Text, cast, func


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains_ignoring_case(column: ColumnElement, text: str) -> ColumnElement[bool]:
    """`column` holds `text`, any case."""
    return func.lower(column).like(f"%{_escaped(text.lower())}%", escape="\\")


def json_list_holds(column: ColumnElement, token: str) -> ColumnElement[bool]:
    """A JSON list of strings in `column` holds `token` (a token without quotes or
    backslashes: then its quoted form occurs in the list's text exactly when it is listed)."""
    return cast(column, Text).like(f'%"{_escaped(token)}"%', escape="\\")
