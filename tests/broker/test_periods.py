"""Budget periods over time: expired budget stays expired whatever settles later, and
project allocations are per period, with carry-over as the enterprise is configured.

Run on SQLite and PostgreSQL (``db_url``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.config import default_local_cluster
from broker.db import make_engine, make_session_factory, session_scope
from broker.errors import QuotaExceeded
from broker.models import EntryKind, Job, JobStatus, LedgerEntry, Project, Role
from broker.schemas.jobs import JobCreate
from broker.services import jobs, ledger, projects, tenants
from broker.services.principal import SYSTEM, Principal

GRANT = 10**8  # ledger units
NEXT_MONTH = timedelta(days=32)


@pytest.fixture
def factory(db_url: str, tmp_path: Path) -> Iterator[Any]:
    engine = make_engine(db_url)
    f = make_session_factory(engine)
    with session_scope(f) as s:
        from broker.services import clusters

        clusters.sync_config(s, [default_local_cluster(tmp_path, 1.0)])
    yield f
    engine.dispose()


def _tenant(
    factory: Any, *, carry_over: bool, allocation: int | None = None
) -> tuple[uuid.UUID, uuid.UUID, Principal]:
    with session_scope(factory) as s:
        ent = tenants.create_enterprise(
            s, SYSTEM, name=f"e{uuid.uuid4().hex[:6]}", carry_over=carry_over
        )
        ledger.grant(s, SYSTEM, ent.id, GRANT, "this month")
        proj = projects.create_project(
            s, SYSTEM, enterprise_id=ent.id, name="p", allocation_units=allocation
        )
        projects.approve_project(s, SYSTEM, proj.id)
        return ent.id, proj.id, Principal(None, "m", Role.MEMBER, ent.id)


def _submit(factory: Any, member: Principal, project_id: uuid.UUID, minutes: int = 10) -> Job:
    req = JobCreate(name="j", script="true", nodes=1, time_limit_minutes=minutes)
    with session_scope(factory) as s:
        job = jobs.submit(
            s, member, project_id, req, idempotency_key=None, max_script_bytes=1000
        ).job
        s.expunge(job)
        return job


def _settle(factory: Any, job_id: uuid.UUID, units: int) -> None:
    with session_scope(factory) as s:
        row = s.get(Job, job_id)
        assert row is not None
        row.state = JobStatus.COMPLETED
        assert ledger.settle(s, row, units)


def _balance(factory: Any, ent_id: uuid.UUID) -> ledger.BalanceView:
    with session_scope(factory) as s:
        assert ledger.check_invariants(s, ent_id) == []
        return ledger.balance(s, SYSTEM, ent_id)


def test_period_roll_with_a_running_job_leaves_the_expired_amount_expired(factory: Any) -> None:
    ent_id, proj_id, member = _tenant(factory, carry_over=False)
    job = _submit(factory, member, proj_id)
    hold = job.hold_units
    assert _balance(factory, ent_id).available_units == GRANT - hold
    with session_scope(factory) as s:
        tenants.roll_periods(s, datetime.now(UTC) + NEXT_MONTH)
    rolled = _balance(factory, ent_id)
    assert rolled.available_units == 0  # last month's unused budget expired
    assert rolled.held_units == hold  # the running job keeps its hold

    charge = hold // 4
    _settle(factory, job.id, charge)
    after = _balance(factory, ent_id)
    assert after.available_units == 0  # the released hold did not bring it back
    assert after.charged_units == charge and after.held_units == 0
    assert after.granted_units == charge  # GRANT - expired at roll - expired at settlement
    with session_scope(factory) as s:
        expiries = s.scalars(
            select(LedgerEntry).where(
                LedgerEntry.enterprise_id == ent_id,
                LedgerEntry.kind == EntryKind.ADJUST,
            )
        ).all()
        assert sorted(e.amount_units for e in expiries) == sorted(
            [-(GRANT - hold), -(hold - charge)]
        )
        last_month = {e.period for e in expiries}
        assert len(last_month) == 1  # both expire last month's budget
        charge_entry = ledger.charge_entry(s, job.id)
        assert charge_entry is not None and charge_entry.period == last_month.pop()
        # This month's grant is this month's to spend, all of it.
        ledger.grant(s, SYSTEM, ent_id, 5000, "next month")
    assert _balance(factory, ent_id).available_units == 5000


def test_with_carry_over_the_released_hold_carries(factory: Any) -> None:
    ent_id, proj_id, member = _tenant(factory, carry_over=True)
    job = _submit(factory, member, proj_id)
    with session_scope(factory) as s:
        tenants.roll_periods(s, datetime.now(UTC) + NEXT_MONTH)
    _settle(factory, job.id, 1000)
    assert _balance(factory, ent_id).available_units == GRANT - 1000


def test_project_allocation_is_per_period(factory: Any) -> None:
    ent_id, proj_id, member = _tenant(factory, carry_over=False)
    first = _submit(factory, member, proj_id)
    allocation = first.hold_units * 2
    with session_scope(factory) as s:
        project = s.get(Project, proj_id)
        assert project is not None
        ledger.allocate(s, SYSTEM, project, allocation)
    _settle(factory, first.id, first.hold_units)  # spent half this month
    running = _submit(factory, member, proj_id)  # and holds the other half
    with pytest.raises(QuotaExceeded, match="remaining allocation"):
        _submit(factory, member, proj_id)
    with session_scope(factory) as s:
        tenants.roll_periods(s, datetime.now(UTC) + NEXT_MONTH)
        ledger.grant(s, SYSTEM, ent_id, GRANT, "next month")
        project = s.get(Project, proj_id)
        assert project is not None
        view = ledger.project_balance(s, project)
        assert (view.granted_units, view.held_units, view.charged_units) == (allocation, 0, 0)
    # A new month: the whole allocation again, whatever last month's job still holds...
    a = _submit(factory, member, proj_id)
    b = _submit(factory, member, proj_id)
    with pytest.raises(QuotaExceeded):
        _submit(factory, member, proj_id)
    # ...and last month's job settling later does not count against this month.
    _settle(factory, running.id, running.hold_units)
    with session_scope(factory) as s:
        project = s.get(Project, proj_id)
        assert project is not None
        view = ledger.project_balance(s, project)
        assert view.held_units == a.hold_units + b.hold_units and view.charged_units == 0
    _balance(factory, ent_id)  # invariants, per-period counters included


def test_project_allocation_carries_over_when_configured(factory: Any) -> None:
    ent_id, proj_id, member = _tenant(factory, carry_over=True)
    job = _submit(factory, member, proj_id)
    allocation = job.hold_units * 2
    with session_scope(factory) as s:
        project = s.get(Project, proj_id)
        assert project is not None
        ledger.allocate(s, SYSTEM, project, allocation)
    _settle(factory, job.id, job.hold_units // 2)  # used a quarter of the allocation
    with session_scope(factory) as s:
        tenants.roll_periods(s, datetime.now(UTC) + NEXT_MONTH)
        project = s.get(Project, proj_id)
        assert project is not None
        view = ledger.project_balance(s, project)
    assert view.granted_units == allocation + allocation - job.hold_units // 2
    for _ in range(3):  # 3 holds fit in 2 allocations less a quarter; a 4th does not
        _submit(factory, member, proj_id)
    with pytest.raises(QuotaExceeded):
        _submit(factory, member, proj_id)
    _balance(factory, ent_id)


def test_a_hold_from_before_periods_settles_outside_the_period_counters(factory: Any) -> None:
    """Migration 0015 leaves old holds without a period and project rows without one."""
    from sqlalchemy import update

    from broker.models import Balance

    ent_id, proj_id, member = _tenant(factory, carry_over=False, allocation=10**9)
    job = _submit(factory, member, proj_id)
    with session_scope(factory) as s:
        s.execute(update(LedgerEntry).where(LedgerEntry.job_id == job.id).values(period=""))
        s.execute(
            update(Balance)
            .where(Balance.project_id == proj_id)
            .values(period="", period_held_units=0, period_charged_units=0)
        )
    _settle(factory, job.id, job.hold_units // 2)
    _balance(factory, ent_id)  # invariants hold
    later = _submit(factory, member, proj_id)  # the project opens its period at zero use
    with session_scope(factory) as s:
        project = s.get(Project, proj_id)
        assert project is not None
        assert ledger.project_balance(s, project).held_units == later.hold_units
    _balance(factory, ent_id)
