"""Set-based writes of plain rows: several tables in one statement on PostgreSQL.

A batch of submissions writes a few rows into each of several tables (jobs, HOLD
entries, audit rows, outbox events, balances). Through the unit of work that was most
of the API process's CPU: an object per row, books kept on each, a statement per table
and ids read back. Here the rows are dicts of column values, and

- PostgreSQL gets one statement for all of them: a data-modifying CTE per table, each
  ``INSERT ... SELECT ... FROM json_populate_recordset(NULL::table, rows as JSON)``
  (``UPDATE ... FROM`` the same for the balances), so a round trip per batch and one
  parameter per table, its rows written by orjson (foreign keys between the
  tables are checked at the statement's end). A value of a JSON column is written as
  itself (None: SQL NULL, where the ORM would write JSON null);
- any other database (SQLite, the embedded default) gets one executemany per table,
  in the order given.

Generated primary keys are left to the database (nothing reads them back), and the
session's events (``before_flush``) do not see these rows: the caller writes what
they would have (``outbox.accepted_events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, cast

import orjson
from sqlalchemy import ColumnElement, Table, any_, bindparam, insert, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.types import ARRAY

from ..db import Base

Row = dict[str, Any]
#: A model and its rows to insert, each with every column (``complete``).
Inserts = Sequence[tuple[type[Base], Sequence[Row]]]
#: A model and its rows' new values, each with the primary key ``id``.
Updates = Sequence[tuple[type[Base], Sequence[Row]]]

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def in_list(column: Any, name: str, *, pg: bool) -> ColumnElement[bool]:
    """``column`` in the list bound as ``name``: ``= ANY(array)`` on PostgreSQL (the
    statement's text does not depend on the list's length: built once, prepared once by
    the server), an expanding ``IN`` elsewhere."""
    if pg:
        clause: ColumnElement[bool] = column == any_(bindparam(name, type_=ARRAY(column.type)))
        return clause
    clause = column.in_(bindparam(name, expanding=True))
    return clause


def is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


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


def _quote(name: str) -> str:
    return _PG.identifier_preparer.quote(name)


def _pg_statement(inserts: Inserts, updates: Updates) -> tuple[str, dict[str, Any]]:
    """One statement: a CTE per table over its rows as one JSON parameter
    (``json_populate_recordset`` of the table's row type: the rows' values are read by
    PostgreSQL's own parsers, not adapted one by one here)."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    for n, (model, rows) in enumerate(inserts):
        table = _table(model)
        name = _quote(table.name)
        cols = ", ".join(_quote(k) for k in rows[0])
        params[f"p{n}"] = orjson.dumps(rows).decode()
        # Names from the models' metadata only; every value is a parameter.
        parts.append(
            f"i{n} AS (INSERT INTO {name} ({cols}) SELECT {cols} "  # noqa: S608
            f"FROM json_populate_recordset(NULL::{name}, %(p{n})s::json))"
        )
    for m, (model, rows) in enumerate(updates, start=len(inserts)):
        table = _table(model)
        name = _quote(table.name)
        sets = ", ".join(f"{_quote(k)} = v.{_quote(k)}" for k in rows[0] if k != "id")
        params[f"p{m}"] = orjson.dumps(rows).decode()
        parts.append(
            f"u{m} AS (UPDATE {name} SET {sets} "  # noqa: S608
            f"FROM json_populate_recordset(NULL::{name}, %(p{m})s::json) AS v "
            f"WHERE {name}.id = v.id)"
        )
    return "WITH " + ", ".join(parts) + " SELECT 1", params
