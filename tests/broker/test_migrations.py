"""Migrations reach head on SQLite and PostgreSQL, and head matches the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

import broker.models  # noqa: F401
from broker import migrate
from broker.db import Base, make_engine


def test_upgrade_head_then_autogenerate_finds_no_diff(db_url: str) -> None:
    migrate.upgrade(db_url)  # idempotent on an already migrated database
    assert migrate.current(db_url) == migrate.head()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_from_first_revision_keeps_rows(tmp_path: Path) -> None:
    """SQLite rebuilds tables on ALTER: rows referenced by foreign keys must survive."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO enterprise (id, name, posix_user, slurm_account, status, created_at)"
                " VALUES ('00000000000000000000000000000001', 'Old', 'old', 'e_old', 'active',"
                " '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO balance (enterprise_id, granted_units, held_units, charged_units)"
                " VALUES ('00000000000000000000000000000001', 5, 0, 0)"
            )
        )
    migrate.upgrade(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, period_kind, carry_over FROM enterprise")).one()
        assert tuple(row) == ("Old", "month", 1)
        assert conn.execute(text("SELECT granted_units FROM balance")).scalar() == 5
    engine.dispose()
