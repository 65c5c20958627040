"""Set-based inserts of a session's new objects: one statement per class, no unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, inspect
from sqlalchemy.orm import Session

from ..db import Base


def insert_new(session: Session, classes: Sequence[type[Base]]) -> dict[type[Base], list[Base]]:
    """Insert the session's new objects of ``classes``, one executemany per class in
    that order, each class's rows in the order they were added; returns them by class.

    The unit of work would keep books on each object and read back every generated id
    (RETURNING); here each object gets its column defaults now (so a caller can show
    them), leaves the session, and its generated id, if any, is left to the database:
    for rows nothing reads back in the transaction. Session events (``before_flush``)
    do not see them: a caller whose rows need one tells its listener itself.
    """
    new = list(session.new)  # in the order they were added
    groups = {cls: [o for o in new if type(o) is cls] for cls in classes}
    for objs in groups.values():  # all out first: an insert's autoflush must not take them
        for obj in objs:
            session.expunge(obj)
    with session.no_autoflush:
        for cls, objs in groups.items():
            if objs:
                session.execute(insert(cls), [_row(obj) for obj in objs])
    return groups


def _row(obj: Base) -> dict[str, Any]:
    """``obj``'s column attributes, each unset one given its default (set on ``obj``
    too); a generated primary key is left to the database."""
    row: dict[str, Any] = {}
    state = obj.__dict__
    for prop in inspect(type(obj)).column_attrs:
        key = prop.key
        if key in state:
            row[key] = state[key]
            continue
        column = prop.columns[0]
        default = column.default
        if default is None:
            if not column.primary_key:
                row[key] = None
                setattr(obj, key, None)
            continue
        value = default.arg(None) if default.is_callable else default.arg
        row[key] = value
        setattr(obj, key, value)
    return row
