"""Set-based writes of plain rows: several tables in one statement on PostgreSQL.

A batch of submissions writes a few rows into each of several tables (jobs, HOLD
entries, audit rows, outbox events, balances). Through the unit of work that was most
of the API process's CPU: an object per row, books kept on each, a statement per table
and ids read back. Here the rows are dicts of column values, and

- PostgreSQL gets one statement for all of them: a data-modifying CTE per table, each
  ``INSERT ... SELECT * FROM unnest(array per column)`` (``UPDATE ... FROM unnest``
  for the balances), so the round trip and the parameters' adaptation are per column,
  not per row (foreign keys between the tables are checked at the statement's end);
- any other database (SQLite, the embedded default) gets one executemany per table,
  in the order given.

Generated primary keys are left to the database (nothing reads them back), and the
session's events (``before_flush``) do not see these rows: the caller writes what
they would have (``outbox.accepted_events``).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from functools import cache
from typing import Any, cast

from sqlalchemy import Column, Table, bindparam, insert, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON

from ..db import Base

Row = dict[str, Any]
#: A model and its rows to insert, each with every column (``complete``).
Inserts = Sequence[tuple[type[Base], Sequence[Row]]]
#: A model and its rows' new values, each with the primary key ``id``.
Updates = Sequence[tuple[type[Base], Sequence[Row]]]

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


@cache
def _defaults(model: type[Base]) -> tuple[tuple[str, Any, bool], ...]:
    """(key, default, callable) of each column a row must carry: all but a generated
    primary key."""
    table = _table(model)
    out = []
    for column in table.columns:
        if column is table.autoincrement_column:
            continue
        default = column.default
        arg = getattr(default, "arg", None)  # a ScalarElementColumnDefault or callable one
        out.append((column.key, arg, default is not None and default.is_callable))
    return tuple(out)


def complete(model: type[Base], row: Row) -> Row:
    """``row`` with each column it lacks set to the column's default (in place)."""
    for key, default, is_callable in _defaults(model):
        if key not in row:
            row[key] = default(None) if is_callable else default
    return row


def fill(obj: Base) -> None:
    """Set each column attribute ``obj`` lacks to its default, as a flush would (for an
    object read before it is flushed)."""
    for key, default, is_callable in _defaults(type(obj)):
        if key not in obj.__dict__:
            setattr(obj, key, default(None) if is_callable else default)


def write(session: Session, inserts: Inserts, updates: Updates = ()) -> None:
    """Insert the rows, then update the others, in the caller's transaction."""
    inserts = [(m, rows) for m, rows in inserts if rows]
    updates = [(m, rows) for m, rows in updates if rows]
    if not inserts and not updates:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        sql, params = _pg_statement(inserts, updates)
        conn.exec_driver_sql(sql, params)
        return
    for model, rows in inserts:
        session.execute(insert(_table(model)), list(rows))
    for model, rows in updates:
        table = _table(model)
        keys = [k for k in rows[0] if k != "id"]
        stmt = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({k: bindparam(k) for k in keys})
        )
        conn.execute(stmt, [{"row_id": r["id"], **{k: r[k] for k in keys}} for r in rows])


@cache
def _cast(column: Column[Any]) -> str:
    """The column's type as an array, without a length: an explicit cast to VARCHAR(n)
    would cut a longer value short, where the insert refuses it."""
    return re.sub(r"\(\d+\)", "", column.type.compile(dialect=_PG)) + "[]"


def _is_json(column: Column[Any]) -> bool:
    return isinstance(column.type, JSON)


def _pg_value(value: Any, is_json: bool) -> Any:
    if is_json:
        return json.dumps(value)  # None too: the JSON type stores JSON null
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _quote(name: str) -> str:
    return _PG.identifier_preparer.quote(name)


def _pg_statement(inserts: Inserts, updates: Updates) -> tuple[str, dict[str, Any]]:
    parts: list[str] = []
    params: dict[str, Any] = {}

    def arrays(n: int, table: Table, keys: list[str], rows: Sequence[Row]) -> list[str]:
        out = []
        for i, key in enumerate(keys):
            column = table.c[key]
            name = f"p{n}_{i}"
            is_json = _is_json(column)
            params[name] = [_pg_value(r[key], is_json) for r in rows]
            out.append(f"%({name})s::{_cast(column)}")
        return out

    for n, (model, rows) in enumerate(inserts):
        table = _table(model)
        keys = list(rows[0])
        cols = ", ".join(_quote(k) for k in keys)
        values = ", ".join(arrays(n, table, keys, rows))
        # Names from the models' metadata only; every value is a parameter.
        parts.append(
            f"i{n} AS (INSERT INTO {_quote(table.name)} ({cols}) "  # noqa: S608
            f"SELECT * FROM unnest({values}))"
        )
    for m, (model, rows) in enumerate(updates, start=len(inserts)):
        table = _table(model)
        keys = list(rows[0])
        values = ", ".join(arrays(m, table, keys, rows))
        sets = ", ".join(f"{_quote(k)} = v.{_quote(k)}" for k in keys if k != "id")
        names = ", ".join(_quote(k) for k in keys)
        parts.append(
            f"u{m} AS (UPDATE {_quote(table.name)} SET {sets} "  # noqa: S608
            f"FROM unnest({values}) AS v({names}) WHERE {_quote(table.name)}.id = v.id)"
        )
    return "WITH " + ", ".join(parts) + " SELECT 1", params
