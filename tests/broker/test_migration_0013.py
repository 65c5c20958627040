"""0013: jobs that ended before it get the reason their end gets now; native_state added;
down again, the new end states fold into ``failed``."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from broker import migrate
from broker.db import make_engine

from .test_migrations import T0, Old, Tenant, _downgrade


def test_0013_backfills_reasons_and_folds_new_states_on_downgrade(empty_url: str) -> None:
    url = empty_url
    migrate.upgrade(url, "0012")
    engine = make_engine(url)
    rows = {
        # state, exit_code, cancel_requested, reason before -> reason after
        "done": ("completed", 0, False, "", "exit code 0"),
        "bad": ("failed", 3, False, "", "exit code 3"),
        "lost": ("failed", None, False, "", "failed"),
        "slow": ("timeout", None, False, "", "time limit of 45 minutes reached"),
        "mine": ("cancelled", None, True, "", "cancelled by the user"),
        "theirs": ("cancelled", None, False, "", "cancelled by the scheduler or an administrator"),
        "said": ("failed", 1, False, "runner error: x", "runner error: x"),
        "live": ("running", None, False, "", ""),
    }
    try:
        with engine.begin() as conn:
            old = Old(conn)
            ent = Tenant(old, "m13")
            project = ent.project(None)
            for name, (state, code, cancel, reason, _) in rows.items():
                old.insert(
                    "job",
                    id=uuid.uuid5(uuid.NAMESPACE_DNS, name),
                    enterprise_id=ent.id,
                    project_id=project,
                    name=name,
                    state=state,
                    exit_code=code,
                    cancel_requested=cancel,
                    reason=reason,
                    time_limit_minutes=45,
                    node_list=[],
                    routing={},
                    warnings=[],
                    created_at=T0,
                    updated_at=T0,
                )
        migrate.upgrade(url, "0013")
        with engine.connect() as conn:
            got = dict(conn.execute(text("SELECT name, reason FROM job")).all())
            natives = set(conn.execute(text("SELECT native_state FROM job")).scalars())
        assert got == {name: row[4] for name, row in rows.items()}
        assert natives == {""}
        with engine.begin() as conn:
            conn.execute(text("UPDATE job SET state = 'node_fail' WHERE name = 'lost'"))
        _downgrade(url, "0012")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT state FROM job WHERE name = 'lost'")).scalar() == (
                "failed"
            )
    finally:
        engine.dispose()
