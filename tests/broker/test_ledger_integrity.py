"""The database keeps charge lines tied to ledger entries, and the ledger append-only.

The check is a statement trigger on PostgreSQL (bulk loads of a month's lines pay one
anti-join, not a lookup per row) and row triggers on SQLite (migration 0006).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError

from broker.db import make_engine, make_session_factory, session_scope
from broker.models import ChargeLine, LedgerEntry
from broker.services import ledger, tenants
from broker.services.principal import SYSTEM


def _entry(url: str) -> tuple[int, uuid.UUID]:
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as s:
        ent = tenants.create_enterprise(s, SYSTEM, name=f"e{uuid.uuid4().hex[:6]}")
        entry = ledger.grant(s, SYSTEM, ent.id, 10, "t")
        s.flush()
        out = (entry.id, ent.id)
    engine.dispose()
    return out


def _line(entry_id: int, enterprise_id: uuid.UUID) -> ChargeLine:
    return ChargeLine(
        entry_id=entry_id,
        enterprise_id=enterprise_id,
        project_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        period="2026-11",
        cluster="alpha",
        partition="cpu",
        node="n1",
        node_seconds=1,
        rate_mflops=1,
        units=1,
    )


def test_lines_of_a_real_entry_are_stored(db_url: str) -> None:
    entry_id, ent_id = _entry(db_url)
    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as s:
        s.add_all([_line(entry_id, ent_id) for _ in range(3)])
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM charge_line")) == 3
    engine.dispose()


def test_one_line_naming_no_entry_fails_the_whole_statement(db_url: str) -> None:
    entry_id, ent_id = _entry(db_url)
    engine = make_engine(db_url)
    rows = [
        {c: getattr(ln, c) for c in ("entry_id", "enterprise_id", "project_id", "job_id")}
        | {"period": "2026-11", "cluster": "a", "partition": "p", "node": "n"}
        | {"node_seconds": 1, "rate_mflops": 1, "units": 1, "memo": ""}
        for ln in [_line(entry_id, ent_id), _line(entry_id + 999, ent_id)]
    ]
    with pytest.raises(DBAPIError, match="not a ledger entry"), engine.begin() as conn:
        conn.execute(ChargeLine.__table__.insert(), rows)
    factory = make_session_factory(engine)
    with pytest.raises(DBAPIError, match="not a ledger entry"), session_scope(factory) as s:
        s.add(_line(entry_id, ent_id))
        s.flush()
        s.execute(update(ChargeLine).values(entry_id=entry_id + 999))
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM charge_line")) == 0
    engine.dispose()


def test_ledger_entries_cannot_be_deleted_or_renumbered(db_url: str) -> None:
    entry_id, _ = _entry(db_url)
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    for stmt in (
        delete(LedgerEntry).where(LedgerEntry.id == entry_id),
        update(LedgerEntry).where(LedgerEntry.id == entry_id).values(id=entry_id + 1000),
    ):
        with pytest.raises(DBAPIError, match="append-only"), session_scope(factory) as s:
            s.execute(stmt)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM ledger_entry WHERE id = :i"), {"i": entry_id})
    engine.dispose()
