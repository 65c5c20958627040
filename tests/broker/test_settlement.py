"""Settlement is exactly once: duplicate polls, worker restarts and racing settlers."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

import scheduler_adapters as sa_
from broker import migrate
from broker.config import default_local_cluster
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import EntryKind, Job, LedgerEntry, Role
from broker.schemas.jobs import JobCreate
from broker.services import clusters, jobs, ledger, projects, scheduling, tenants
from broker.services.clusters import AdapterPool
from broker.services.principal import SYSTEM, Principal
from broker.worker import Worker

from .conftest import Api


def _charges(factory: object, job_id: uuid.UUID) -> int:
    with session_scope(factory) as s:  # type: ignore[arg-type]
        return int(
            s.scalar(
                select(func.count()).where(
                    LedgerEntry.job_id == job_id, LedgerEntry.kind == EntryKind.CHARGE
                )
            )
            or 0
        )


def test_duplicate_poll_and_restart_charge_once(api: Api) -> None:
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="echo x").json()
    done = api.drive_until(job["id"], {"completed"})
    app = api.client.app
    factory = app.state.session_factory  # type: ignore[attr-defined]
    job_id = uuid.UUID(job["id"])
    info = sa_.JobInfo(
        job_id=done["scheduler_job_id"],
        state=sa_.JobState.COMPLETED,
        exit_code=0,
        nodes=("local1",),
        elapsed_s=999,
    )
    # A duplicate poll result arrives after the job was settled.
    with session_scope(factory) as s:
        row = s.get(Job, job_id)
        assert row is not None
        assert scheduling.apply_info(s, row, info, datetime.now(UTC)) is False
        assert ledger.settle(s, row, 10**9) is False
    # A restarted worker (new adapters, new object) passes over it again.
    restarted = Worker(
        app.state.settings, factory, AdapterPool(app.state.adapters.configs.values())
    )  # type: ignore[attr-defined]
    for _ in range(3):
        restarted.run_once()
    assert _charges(factory, job_id) == 1
    again = api.get(f"/jobs/{job['id']}").json()
    assert again["charge_pfh"] == done["charge_pfh"]


@pytest.mark.postgres
def test_racing_settlers_charge_once(pg_url: str, tmp_path: Path) -> None:
    """Eight threads settle one job at once on PostgreSQL: one CHARGE, seven no-ops."""
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        clusters.sync_config(s, [default_local_cluster(tmp_path, 1.0)])
        ent = tenants.create_enterprise(s, SYSTEM, name="racers")
        ledger.grant(s, SYSTEM, ent.id, 10**12, "")
        proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="p")
        projects.approve_project(s, SYSTEM, proj.id)
        member = Principal(None, "m", Role.MEMBER, ent.id)
        req = JobCreate(name="j", script="true", nodes=1, time_limit_minutes=10)
        job_id = jobs.submit(
            s, member, proj.id, req, idempotency_key=None, max_script_bytes=1000
        ).job.id
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def settle() -> None:
        with session_scope(factory) as s:
            row = s.get(Job, job_id)
            assert row is not None
            barrier.wait()
            results.append(ledger.settle(s, row, 1000))

    threads = [threading.Thread(target=settle) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert _charges(factory, job_id) == 1
    with session_scope(factory) as s:
        assert ledger.check_invariants(s, ent.id) == []
    engine.dispose()
