"""A hypothesis state machine over the ledger: no sequence of operations breaks it.

Operations: grant, allocate, submit (hold), settle (charge), settle again, reject
(release), cancel, adjust, credit, and a budget-period roll with expiry. After every
step: each balance equals the sum of its entries, available ≥ 0, no project exceeds
its allocation, each job has at most one HOLD/RELEASE/CHARGE, and no finished job
keeps an open hold.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)
from sqlalchemy import func, select

from broker import migrate
from broker.config import default_local_cluster
from broker.db import make_engine, make_session_factory, session_scope
from broker.errors import BrokerError
from broker.models import (
    Balance,
    EntryKind,
    Job,
    JobStatus,
    LedgerEntry,
    Project,
    Role,
)
from broker.schemas.jobs import JobCreate
from broker.services import clusters, jobs, ledger, projects, scheduling, tenants
from broker.services.principal import SYSTEM, Principal
from broker.units import CEILING_UNITS, MAX_UNITS

# Amounts in ledger units (1 GFLOP): a job here holds up to 2 nodes × 1 TFLOP/s × 2 h
# = 1.44e7 units, so budgets of up to 1e8 run out; now and then an amount at the
# per-amount limit, just past it, or at the ceiling (refused past the ceiling).
AMOUNT = st.integers(1, 10**8) | st.sampled_from([MAX_UNITS, MAX_UNITS + 1, CEILING_UNITS])

_TEMPLATE: Path | None = None


def _template() -> Path:
    global _TEMPLATE
    if _TEMPLATE is None:
        path = Path(tempfile.mkdtemp()) / "ledger.db"
        migrate.upgrade(f"sqlite:///{path}")
        _TEMPLATE = path
    return _TEMPLATE


class LedgerMachine(RuleBasedStateMachine):
    projects = Bundle("projects")
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        shutil.copy(_template(), self.dir / "db.sqlite")
        self.engine = make_engine(f"sqlite:///{self.dir / 'db.sqlite'}")
        self.factory = make_session_factory(self.engine)
        self.now = datetime(2026, 1, 15, tzinfo=UTC)

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _try(self, fn: object) -> object:
        try:
            with session_scope(self.factory) as s:
                return fn(s)  # type: ignore[operator]
        except BrokerError:
            return None

    @initialize(carry_over=st.booleans())
    def setup(self, carry_over: bool) -> None:
        with session_scope(self.factory) as s:
            clusters.sync_config(s, [default_local_cluster(self.dir, 1.0)])
            ent = tenants.create_enterprise(s, SYSTEM, name="acme", carry_over=carry_over)
            ent.current_period = ledger.period_of(self.now, ent.period_kind)
            self.ent_id = ent.id
        self.member = Principal(uuid.uuid4(), "m", Role.MEMBER, self.ent_id)

    @rule(amount=AMOUNT)
    def grant(self, amount: int) -> None:
        self._try(lambda s: ledger.grant(s, SYSTEM, self.ent_id, amount, "g"))

    @rule(amount=AMOUNT | AMOUNT.map(lambda a: -a))
    def adjust(self, amount: int) -> None:
        self._try(lambda s: ledger.adjust(s, SYSTEM, self.ent_id, amount, "fix"))

    @rule(target=projects, allocation=st.none() | st.integers(0, 10**8))
    def create_project(self, allocation: int | None) -> uuid.UUID:
        with session_scope(self.factory) as s:
            p = projects.create_project(
                s,
                SYSTEM,
                enterprise_id=self.ent_id,
                name=uuid.uuid4().hex,
                allocation_units=allocation,
            )
            projects.approve_project(s, SYSTEM, p.id)
            return p.id

    @rule(project=projects, allocation=st.none() | st.integers(0, 10**8))
    def allocate(self, project: uuid.UUID, allocation: int | None) -> None:
        def go(s: object) -> None:
            ledger.allocate(s, SYSTEM, s.get(Project, project), allocation)  # type: ignore[attr-defined]

        self._try(go)

    @rule(target=jobs, project=projects, nodes=st.integers(1, 2), minutes=st.integers(1, 120))
    def submit(self, project: uuid.UUID, nodes: int, minutes: int) -> uuid.UUID | None:
        req = JobCreate(name="j", script="true", nodes=nodes, time_limit_minutes=minutes)

        def go(s: object) -> uuid.UUID:
            res = jobs.submit(
                s,
                self.member,
                project,
                req,
                idempotency_key=None,  # type: ignore[arg-type]
                max_script_bytes=1000,
            )
            return res.job.id

        return self._try(go)  # type: ignore[return-value]

    @rule(job=jobs, fraction=st.floats(0, 1.5))
    def settle(self, job: uuid.UUID | None, fraction: float) -> None:
        if job is None:
            return

        def go(s: object) -> None:
            row = s.get(Job, job)  # type: ignore[attr-defined]
            if row.state is JobStatus.ACCEPTED:
                row.state = JobStatus.COMPLETED
            ledger.settle(s, row, int(row.hold_units * fraction))  # type: ignore[arg-type]

        self._try(go)

    @rule(job=consumes(jobs))
    def reject(self, job: uuid.UUID | None) -> None:
        if job is None:
            return

        def go(s: object) -> None:
            row = s.get(Job, job)  # type: ignore[attr-defined]
            if row.state is JobStatus.ACCEPTED:
                scheduling.reject(s, row, "no", self.now)  # type: ignore[arg-type]

        self._try(go)

    @rule(job=jobs)
    def cancel(self, job: uuid.UUID | None) -> None:
        if job is not None:
            self._try(lambda s: jobs.cancel(s, self.member, job))

    @rule(job=jobs, units=st.integers(1, 10**7))
    def credit(self, job: uuid.UUID | None, units: int) -> None:
        if job is None:
            return
        self._try(lambda s: ledger.credit(s, SYSTEM, s.get(Job, job), units, "degraded node"))

    @rule(days=st.integers(1, 100))
    def time_passes(self, days: int) -> None:
        self.now += timedelta(days=days)
        with session_scope(self.factory) as s:
            tenants.roll_periods(s, self.now)

    @invariant()
    def ledger_holds(self) -> None:
        if not hasattr(self, "ent_id"):
            return
        with session_scope(self.factory) as s:
            assert ledger.check_invariants(s, self.ent_id) == []
            bal = ledger.balance(s, SYSTEM, self.ent_id)
            assert bal.available_units >= 0
            assert bal.granted_units <= CEILING_UNITS
            for p in s.scalars(select(Project)):
                row = s.scalar(select(Balance).where(Balance.project_id == p.id))
                assert row is not None
                if p.allocation_units is not None:  # per period, with what carried over
                    used = row.period_held_units + row.period_charged_units
                    assert used <= p.allocation_units + row.carried_units
            for job in s.scalars(select(Job)):
                counts = dict(
                    s.execute(
                        select(LedgerEntry.kind, func.count())
                        .where(LedgerEntry.job_id == job.id, LedgerEntry.kind != EntryKind.ADJUST)
                        .group_by(LedgerEntry.kind)
                    ).all()
                )
                assert all(n == 1 for n in counts.values()), counts
                if job.state.terminal:
                    assert counts.get(EntryKind.HOLD, 0) == counts.get(EntryKind.RELEASE, 0)
                    assert counts.get(EntryKind.CHARGE) == 1
                    assert (job.charge_units or 0) <= job.hold_units


LedgerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedger = LedgerMachine.TestCase
