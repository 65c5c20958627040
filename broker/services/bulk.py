"""Plain rows in and out: set-based writes (several tables in one statement on
PostgreSQL) and reads that skip SQLAlchemy's per-statement work.

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

``fetch`` runs a Core ``select`` built once (the batch's lock, its Idempotency-Keys)
and returns its rows as tuples. On PostgreSQL the statement is compiled to SQL once
and run on the session's own DBAPI connection, in its transaction, with the columns'
result processors (an enum's string made its member): SQLAlchemy's work per execution
(the statement's cache key, result metadata, row objects) cost ~60-250 us of the API
process's CPU per statement, against ~17 us for the round trip itself. Writes on
PostgreSQL go the same way (their SQL is made once per set of tables and columns).

On an engine given to ``defer_round_trips`` (the submission batch writer's), a
transaction's BEGIN goes with its first statement and ``write``'s statements with its
next one or its COMMIT, each group in one round trip (psycopg's pipeline mode): a
batch that locks its balance rows and writes its jobs waits for the server twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

import orjson
from psycopg.pq import TransactionStatus
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    any_,
    bindparam,
    event,
    insert,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
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


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement's SQL (psycopg's ``%(name)s`` parameters) and what converts its
    parameters (by name) and its result columns (by position), where anything does.
    ``sql`` is None for a statement with values of its own (``in_()`` of constants):
    it is run by SQLAlchemy, which renders them."""

    sql: str | None
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    results: tuple[Callable[[Any], Any] | None, ...]


#: A select of any columns (what ``fetch`` runs).
Query = Select[*tuple[Any, ...]]

_COMPILED: dict[Query, _Compiled] = {}


def _compiled(stmt: Query, conn: Connection) -> _Compiled:
    found = _COMPILED.get(stmt)
    if found is not None:
        return found
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    binds = []
    if not all(bind.required for bind in compiled.bind_names):
        found = _COMPILED[stmt] = _Compiled(None, (), ())
        return found
    for bind, name in compiled.bind_names.items():
        proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if proc is not None:
            binds.append((name, proc))
    columns = stmt.selected_columns
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    found = _Compiled(compiled.string, tuple(binds), results)
    _COMPILED[stmt] = found  # statements built once (cached by their builders)
    return found


def fetch(session: Session, stmt: Query, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of ``stmt`` (a Core statement its caller builds once and keeps, e.g.
    in a ``functools.cache``) as tuples, in the session's transaction (see the module)."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return [tuple(row) for row in conn.execute(stmt, dict(params))]
    c = _compiled(stmt, conn)
    if c.sql is None:
        return [tuple(row) for row in conn.execute(stmt, dict(params))]
    if c.binds:
        params = dict(params)
        for name, proc in c.binds:
            params[name] = proc(params[name])
    with _raw(conn, c.sql, params) as cur:
        state = _deferred(conn)
        if state is None or not state.pending:
            cur.execute(c.sql, params)
        else:  # what waits goes first, in the same round trip
            with cur.connection.pipeline():
                state.send(cur.connection)
                cur.execute(c.sql, params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
    if not any(c.results):
        return rows
    procs = c.results
    return [
        tuple(v if p is None else p(v) for p, v in zip(procs, row, strict=True)) for row in rows
    ]


@contextmanager
def _raw(conn: Connection, sql: str, params: Mapping[str, Any]) -> Iterator[Any]:
    """A cursor of the DBAPI (psycopg) connection under ``conn``, in its transaction.
    Its errors are raised as SQLAlchemy raises them (``DBAPIError``: the API's 503 for
    an outage, the batch's retry of a deadlock victim), and a connection the server
    dropped is invalidated (not handed to the next batch)."""
    dialect = conn.dialect
    dbapi = dialect.loaded_dbapi
    try:
        driver: Any = conn.connection.driver_connection
        with driver.cursor() as cur:
            yield cur
    except dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, dict(params), exc, dbapi.Error, connection_invalidated=gone, dialect=dialect
        ) from exc


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
        state = _deferred(conn)
        if state is not None:  # sent with the next round trip (the COMMIT's, usually)
            state.writes.append((sql, params))
            return
        with _raw(conn, sql, params) as cur:
            cur.execute(sql, params)
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


# -- Fewer round trips: a transaction's BEGIN and its writes wait for the next statement


_DEFERRED = "broker.bulk.deferred"


@dataclass(slots=True)
class _Deferred:
    """What a connection of a ``defer_round_trips`` engine has yet to send: its
    transaction's BEGIN (and the statement that follows it), and ``write``'s
    statements."""

    begin: tuple[str, ...]
    begun: bool = False  # a transaction is open and its BEGIN not yet sent
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.begun or bool(self.writes)

    def send(self, driver: Any) -> None:
        """Queue what waits on ``driver``, in pipeline mode (results not read here: the
        pipeline's sync raises the first error)."""
        if self.begun:
            for sql in self.begin:
                driver.execute(sql)
            self.begun = False
        for sql, params in self.writes:
            driver.execute(sql, params)
        self.writes.clear()

    def flush(self, conn: Connection, *, commit: bool = False) -> None:
        """Send what waits, and COMMIT after it if ``commit``: one round trip."""
        if commit and not self.writes:
            # A BEGIN never sent opened nothing; one sent is committed by psycopg.
            self.begun = False
            return
        if not self.pending:
            return
        sql, params = self.writes[0] if self.writes else (self.begin[0], {})
        with _raw(conn, sql, params) as cur:
            driver = cur.connection
            try:
                with driver.pipeline():
                    self.send(driver)
                    if commit:
                        driver.execute("COMMIT")
            except BaseException:
                self.writes.clear()
                if driver.info.transaction_status == TransactionStatus.INERROR:
                    with suppress(Exception):
                        driver.rollback()  # the writes' transaction failed: end it
                raise


def _deferred(conn: Connection) -> _Deferred | None:
    state: _Deferred | None = conn.info.get(_DEFERRED)
    return state


def defer_round_trips(engine: Engine, begin: Sequence[str] = ("BEGIN",)) -> None:
    """Each transaction on ``engine`` (PostgreSQL, in autocommit mode: the BEGIN is
    ``begin``'s statements, sent by this module) spends as few round trips as it can:

    - its BEGIN is sent with its first statement, in one round trip (a pipeline, when
      that statement is ``fetch``'s; before it, when it is any other);
    - ``write``'s statements wait for the transaction's next statement, or its COMMIT,
      and go with it in one round trip.

    A transaction that locks rows and then writes them is two round trips, not four.
    Errors are raised where the statements are sent, as SQLAlchemy raises them (a
    write refused by a constraint, at the commit; the transaction is rolled back)."""
    begin = tuple(begin)

    def state_of(conn: Connection) -> _Deferred:
        state: _Deferred | None = conn.info.get(_DEFERRED)
        if state is None:
            state = conn.info[_DEFERRED] = _Deferred(begin)
        return state

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        state = state_of(conn)
        state.writes.clear()
        state.begun = True

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Connection, *_: object) -> None:
        state = _deferred(conn)
        if state is not None and state.pending:
            state.flush(conn)

    @event.listens_for(engine, "commit")
    def _commit(conn: Connection) -> None:
        state = _deferred(conn)
        if state is not None:
            state.flush(conn, commit=True)

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Connection) -> None:
        if conn.invalidated:  # its DBAPI connection, and what waited on it, are gone
            return
        state = _deferred(conn)
        if state is not None:  # nothing unsent is kept; psycopg ends what was begun
            state.writes.clear()
            state.begun = False


def _quote(name: str) -> str:
    return _PG.identifier_preparer.quote(name)


_Shape = tuple[tuple[type[Base], tuple[str, ...]], ...]


def _pg_statement(inserts: Inserts, updates: Updates) -> tuple[str, dict[str, Any]]:
    """One statement: a CTE per table over its rows as one JSON parameter
    (``json_populate_recordset`` of the table's row type: the rows' values are read by
    PostgreSQL's own parsers, not adapted one by one here)."""
    shape = tuple((m, tuple(rows[0])) for m, rows in inserts)
    changes = tuple((m, tuple(rows[0])) for m, rows in updates)
    params = {f"p{n}": orjson.dumps(rows).decode() for n, (_, rows) in enumerate(inserts)}
    for m, (_, rows) in enumerate(updates, start=len(inserts)):
        params[f"p{m}"] = orjson.dumps(rows).decode()
    return _pg_sql(shape, changes), params


@cache
def _pg_sql(inserts: _Shape, updates: _Shape) -> str:
    """The statement's text for tables and their columns (few shapes: made once each)."""
    parts: list[str] = []
    for n, (model, keys) in enumerate(inserts):
        name = _quote(_table(model).name)
        cols = ", ".join(_quote(k) for k in keys)
        # Names from the models' metadata only; every value is a parameter.
        parts.append(
            f"i{n} AS (INSERT INTO {name} ({cols}) SELECT {cols} "  # noqa: S608
            f"FROM json_populate_recordset(NULL::{name}, %(p{n})s::json))"
        )
    for m, (model, keys) in enumerate(updates, start=len(inserts)):
        name = _quote(_table(model).name)
        sets = ", ".join(f"{_quote(k)} = v.{_quote(k)}" for k in keys if k != "id")
        parts.append(
            f"u{m} AS (UPDATE {name} SET {sets} "  # noqa: S608
            f"FROM json_populate_recordset(NULL::{name}, %(p{m})s::json) AS v "
            f"WHERE {name}.id = v.id)"
        )
    return "WITH " + ", ".join(parts) + " SELECT 1"
