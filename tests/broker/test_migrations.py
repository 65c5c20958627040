"""Migrations reach head on SQLite and PostgreSQL, and head matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

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
