"""Keyset (cursor) pagination over a unique, ordered column."""

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session


def keyset_page(session: Session, query: Select, key: InstrumentedAttribute, *, limit: int,
                cursor: Any | None, newest_first: bool = True) -> tuple[list[Any], str | None]:
    """One page of `query` ordered by the unique column `key`, starting after `cursor`.

    Returns (rows, next_cursor): next_cursor is the last row's key as a string, or
    None when no row follows. Stable under inserts, unlike offsets.
    """
    if cursor is not None:
        query = query.where(key < cursor if newest_first else key > cursor)
    rows = list(session.scalars(query.order_by(key.desc() if newest_first else key.asc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, str(getattr(rows[-1], key.key))
