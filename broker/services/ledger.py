"""The quota ledger: the one module that writes ledger entries and balances.

Invariants (checked by ``check_invariants`` and by the property tests):
- an enterprise's available = granted − held − charged never goes below zero
  (also a CHECK constraint on its balance row);
- a project never holds plus spends more than its allocation in a budget period
  (plus what an earlier period carried over), when it has one;
- each balance row equals the sum of its entries;
- a job has at most one HOLD, one RELEASE and one CHARGE (unique partial indexes),
  and once it is settled its hold is released.

Limits (``broker.units``): one amount is at most ``MAX_PFH`` (1e9 PFlop·h) and an
enterprise's running grant total at most ``CEILING_PFH`` (2e9); held + charged never
exceed it (enterprise rows) and project rows are parts of it, so every balance column
and every per-enterprise running total fits a signed 64-bit integer. A request beyond
them is refused (``InvalidInput`` naming ``amount_pfh`` / ``allocation_pfh``: 422).
Sums of units in SQL go through ``sum_units``: exact, and never SQLite's "integer
overflow", whatever the number of rows or enterprises.

Periods: every HOLD carries its budget period, and its RELEASE and CHARGE carry the
same one. A hold still open when its period ends stays reserved from that period's
budget; when it settles later, what it did not charge expires too (unless the
enterprise carries over), so a released hold never brings expired budget back. A
project's counters (``Balance.period_*``) count only its current period's holds and
charges: a hold of a closed period settles outside them.

Concurrency: every writer locks the enterprise's balance row first (``FOR UPDATE`` on
PostgreSQL; SQLite transactions are ``BEGIN IMMEDIATE``, one writer at a time), then
the project's, always in that order.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol

from sqlalchemy import BigInteger, ColumnElement, func, literal_column, select
from sqlalchemy.orm import Session

from ..errors import CapacityExceeded, Conflict, InvalidInput, NotFound, QuotaExceeded
from ..models import (
    LIVE_STATES,
    Balance,
    Enterprise,
    EnterpriseStatus,
    EntryKind,
    Job,
    JobStatus,
    LedgerEntry,
    PeriodKind,
    Project,
    ProjectStatus,
)
from ..units import CEILING_PFH, CEILING_UNITS, MAX_PFH, MAX_UNITS, units_to_pfh
from . import audit, bulk
from .principal import SYSTEM, Principal


@dataclass(frozen=True, slots=True)
class BalanceView:
    granted_units: int
    held_units: int
    charged_units: int

    @property
    def available_units(self) -> int:
        return self.granted_units - self.held_units - self.charged_units


_SPLIT = 1 << 32


def sum_units(expr: Any) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """``SUM(expr)`` as two SQL sums that cannot overflow; ``joined_units`` adds them.

    SQLite's ``sum()`` raises "integer overflow" once a running total leaves 64 bits
    (even if later rows would bring it back), and a center's totals, or an enterprise's
    HOLD entries over the years, can. Each value is split into ``expr / 2^32`` and
    ``expr % 2^32``, which truncate toward zero on SQLite and PostgreSQL alike, so
    ``high · 2^32 + low = expr`` row by row: high parts are below 2^31 and low parts below
    2^32 in magnitude, so both sums stay inside 64 bits for up to 2^31 rows.
    """
    k = literal_column(str(_SPLIT), BigInteger)
    return func.coalesce(func.sum(expr // k), 0), func.coalesce(func.sum(expr % k), 0)


def joined_units(high: Any, low: Any) -> int:
    """The exact sum from the two parts ``sum_units`` selected."""
    return int(high or 0) * _SPLIT + int(low or 0)


_LOCKS_KEY = "ledger.balance_locks"


def _locked(session: Session) -> dict[tuple[uuid.UUID, uuid.UUID | None], Balance]:
    """The balance rows this transaction already holds FOR UPDATE (none in a new one)."""
    txn = session.get_transaction()
    held = session.info.get(_LOCKS_KEY)
    if txn is None or held is None or held[0] is not txn:
        return {}
    rows: dict[tuple[uuid.UUID, uuid.UUID | None], Balance] = held[1]
    return rows


def _remember(session: Session, rows: list[Balance]) -> None:
    held = _locked(session)
    if not held:
        session.info[_LOCKS_KEY] = (session.get_transaction(), held)
    for row in rows:
        held[(row.enterprise_id, row.project_id)] = row


def _lock(
    session: Session, enterprise_id: uuid.UUID, project_id: uuid.UUID | None = None
) -> Balance:
    """The balance row, locked FOR UPDATE until the transaction ends.

    A row this transaction locked already is not asked for again: the lock holds, so
    the row in the session is current (nothing here uses savepoints, which would
    release it).
    """
    row = _locked(session).get((enterprise_id, project_id))
    if row is not None:
        return row
    query = select(Balance).where(Balance.enterprise_id == enterprise_id)
    if project_id is None:
        query = query.where(Balance.project_id.is_(None))
    else:
        query = query.where(Balance.project_id == project_id)
    row = session.scalar(query.with_for_update())
    if row is None:
        raise NotFound("balance not found")
    _remember(session, [row])
    return row


def lock_enterprise(
    session: Session, enterprise_id: uuid.UUID, project_id: uuid.UUID | None = None
) -> None:
    """Take the enterprise's balance lock for this transaction (before reading quota state).

    With ``project_id``, the project's balance row too, in the same round trip and in
    the same order as everywhere else (enterprise first), so no two transactions wait
    on each other crosswise.
    """
    if project_id is None or (enterprise_id, None) in _locked(session):
        _lock(session, enterprise_id)
        if project_id is not None:
            _lock(session, enterprise_id, project_id)
        return
    rows = list(
        session.scalars(
            select(Balance)
            .where(
                Balance.enterprise_id == enterprise_id,
                Balance.project_id.is_(None) | (Balance.project_id == project_id),
            )
            .order_by(Balance.project_id.is_not(None))  # the enterprise's row first
            .with_for_update()
        )
    )
    _remember(session, rows)
    _lock(session, enterprise_id)  # NotFound if a row is missing
    _lock(session, enterprise_id, project_id)


@dataclass(slots=True)
class Counters:
    """A balance row's counters, read under its lock for a batch of holds (``lock_batch``)
    and written back once (``counter_updates``): ``Balance`` without the unit of work."""

    id: int
    enterprise_id: uuid.UUID
    project_id: uuid.UUID | None
    granted_units: int
    held_units: int
    charged_units: int
    period: str
    period_held_units: int
    period_charged_units: int
    carried_units: int
    changed: bool = False
    # A project's row: the project's state, read under the row's lock (``lock_batch``),
    # and the caller's ``also`` columns of it.
    project_status: ProjectStatus | None = None
    allocation_units: int | None = None
    also: tuple[Any, ...] = ()


_COUNTER_COLUMNS = (
    Balance.id,
    Balance.enterprise_id,
    Balance.project_id,
    Balance.granted_units,
    Balance.held_units,
    Balance.charged_units,
    Balance.period,
    Balance.period_held_units,
    Balance.period_charged_units,
    Balance.carried_units,
)


@dataclass(slots=True)
class EnterpriseState:
    """What a batch's holds read of an enterprise (``Enterprise``'s columns), read with
    its locked balance rows; one without a period yet is read as an ``Enterprise``
    (``_open_period`` sets it)."""

    id: uuid.UUID
    status: EnterpriseStatus
    capacity_cap_mflops: int | None
    posix_user: str
    current_period: str
    period_kind: PeriodKind
    carry_over: bool


@cache
def _lock_batch(pg: bool, also: tuple[ColumnElement[Any], ...]) -> bulk.Query:
    """Built once (per dialect): a batch only binds its ids."""
    return (
        select(
            Enterprise.id,
            Enterprise.status,
            Enterprise.capacity_cap_mflops,
            Enterprise.posix_user,
            Enterprise.current_period,
            Enterprise.period_kind,
            Enterprise.carry_over,
            *_COUNTER_COLUMNS,
            Project.status,
            Project.allocation_units,
            *also,
        )
        .join(Enterprise, Enterprise.id == Balance.enterprise_id)
        .outerjoin(Project, Project.id == Balance.project_id)
        .where(
            bulk.in_list(Balance.enterprise_id, "ids", pg=pg),
            Balance.project_id.is_(None) | bulk.in_list(Balance.project_id, "projects", pg=pg),
        )
        .order_by(Balance.enterprise_id, Balance.project_id.is_not(None), Balance.project_id)
        .with_for_update(of=Balance)
    )


def lock_batch(
    session: Session,
    wanted: dict[uuid.UUID, set[uuid.UUID]],
    also: tuple[ColumnElement[Any], ...] = (),
) -> tuple[
    dict[tuple[uuid.UUID, uuid.UUID | None], Counters],
    dict[uuid.UUID, EnterpriseState | Enterprise],
]:
    """Lock, in one round trip, each enterprise's balance row and the rows of its projects
    in ``wanted`` (enterprise id -> project ids): enterprises in id order, each one's own
    row first, then its projects' by id (the order every writer keeps). Their counters,
    by (enterprise id, project id or None), a missing row ``NotFound`` when asked for,
    each project's with its status and allocation as they are under the lock (an
    allocation changes under the same lock: ``allocate``) and the values of ``also``
    (columns of ``Project``, built once); and the enterprises.
    """
    ids = sorted(wanted)
    projects = sorted({p for ps in wanted.values() for p in ps})
    rows: dict[tuple[uuid.UUID, uuid.UUID | None], Counters] = {}
    ents: dict[uuid.UUID, EnterpriseState | Enterprise] = {}
    params = {"ids": ids, "projects": projects}
    query = _lock_batch(bulk.is_pg(session), also)
    for values in bulk.fetch(session, query, params):  # plain rows
        c = Counters(*values[7:17])
        c.project_status, c.allocation_units, c.also = values[17], values[18], values[19:]
        if c.enterprise_id not in ents:
            ents[c.enterprise_id] = EnterpriseState(*values[:7])
        if c.project_id is None or c.project_id in wanted[c.enterprise_id]:
            rows[(c.enterprise_id, c.project_id)] = c
    for ent_id, ent in list(ents.items()):
        if not ent.current_period:  # its first hold opens its period: kept by the ORM
            ents[ent_id] = _enterprise(session, ent_id)
    return rows, ents


def counter_updates(session: Session, rows: Collection[Counters]) -> list[dict[str, object]]:
    """The changed rows of a batch, as one UPDATE's parameters (by id); Balance objects
    of those rows already in the session are expired (read again if used)."""
    changed = [c for c in rows if c.changed]
    for c in changed:
        obj = session.identity_map.get(session.identity_key(Balance, c.id))
        if obj is not None:
            session.expire(obj)
    return [
        {
            "id": c.id,
            "held_units": c.held_units,
            "period": c.period,
            "period_held_units": c.period_held_units,
            "period_charged_units": c.period_charged_units,
            "carried_units": c.carried_units,
        }
        for c in changed
    ]


def _append(session: Session, **fields: object) -> LedgerEntry:
    entry = LedgerEntry(**fields)
    session.add(entry)
    return entry


def grant(
    session: Session, principal: Principal, enterprise_id: uuid.UUID, amount_units: int, memo: str
) -> LedgerEntry:
    principal.require_operator()
    if amount_units <= 0:
        raise InvalidInput("amount_pfh", "must be greater than zero")
    _check_amount(amount_units)
    bal = _lock(session, enterprise_id)
    ent = _enterprise(session, enterprise_id)
    _check_ceiling(bal, amount_units)
    bal.granted_units += amount_units
    entry = _append(
        session,
        enterprise_id=enterprise_id,
        period=ent.current_period or period_of(datetime.now(UTC), ent.period_kind),
        kind=EntryKind.GRANT,
        amount_units=amount_units,
        memo=memo,
        actor=principal.actor,
    )
    session.flush()
    audit.record(
        session,
        principal,
        "ledger.grant",
        "ledger_entry",
        entry.id,
        enterprise_id=enterprise_id,
        amount_pfh=units_to_pfh(amount_units),
        memo=memo,
    )
    return entry


def adjust(
    session: Session, principal: Principal, enterprise_id: uuid.UUID, amount_units: int, memo: str
) -> LedgerEntry:
    """An operator's correction of the budget, up or down (never below what is in use)."""
    principal.require_operator()
    if amount_units == 0:
        raise InvalidInput("amount_pfh", "must not be zero")
    _check_amount(amount_units)
    if not memo.strip():
        raise InvalidInput("memo", "an adjustment needs a memo saying why")
    bal = _lock(session, enterprise_id)
    if bal.granted_units + amount_units - bal.held_units - bal.charged_units < 0:
        raise QuotaExceeded("adjustment would make the available balance negative")
    _check_ceiling(bal, amount_units)
    bal.granted_units += amount_units
    entry = _append(
        session,
        enterprise_id=enterprise_id,
        kind=EntryKind.ADJUST,
        amount_units=amount_units,
        memo=memo,
        actor=principal.actor,
    )
    session.flush()
    audit.record(
        session,
        principal,
        "ledger.adjust",
        "ledger_entry",
        entry.id,
        enterprise_id=enterprise_id,
        amount_pfh=units_to_pfh(amount_units),
        memo=memo,
    )
    return entry


def _check_amount(amount_units: int, field: str = "amount_pfh") -> None:
    if abs(amount_units) > MAX_UNITS:
        raise InvalidInput(field, f"must be at most {MAX_PFH:,} PFlop·h in magnitude")


def _check_ceiling(bal: Balance, amount_units: int) -> None:
    """Refuse a grant total above ``CEILING_PFH``: beyond it sums could leave 64 bits."""
    if amount_units > 0 and bal.granted_units + amount_units > CEILING_UNITS:
        raise InvalidInput(
            "amount_pfh",
            f"would take the enterprise's granted total to "
            f"{units_to_pfh(bal.granted_units + amount_units):,.0f} PFlop·h, above the "
            f"ledger's ceiling of {CEILING_PFH:,} PFlop·h per enterprise",
        )


class _Periodic(Protocol):
    current_period: str

    @property
    def period_kind(self) -> PeriodKind: ...

    @property
    def carry_over(self) -> bool: ...

    @property
    def capacity_cap_mflops(self) -> int | None: ...


def _open_period(ent: _Periodic) -> str:
    """The enterprise's current budget period (set from today if it has none yet)."""
    if not ent.current_period:
        ent.current_period = period_of(datetime.now(UTC), ent.period_kind)
    return ent.current_period


def _roll_project(row: _Counted, project: _Allocated | None, period: str, carry_over: bool) -> None:
    """Move a project's counters into ``period``, carrying its unused allocation over
    when the enterprise carries over (open holds of the old period count as used)."""
    if row.period == period:
        return
    carried = 0
    if row.period and carry_over and project is not None and project.allocation_units is not None:
        carried = max(0, _project_left(row, project.allocation_units))
    row.period, row.carried_units = period, carried
    row.period_held_units = row.period_charged_units = 0


def _project_left(row: _Counted, allocation_units: int) -> int:
    """What the project may still hold in its current period."""
    return allocation_units + row.carried_units - row.period_held_units - row.period_charged_units


def hold(
    session: Session,
    job: Job,
    project: Project,
    *,
    capacity_in_use_mflops: int | None = None,
) -> LedgerEntry:
    """Reserve ``job.hold_units`` for a job, or raise ``QuotaExceeded`` (or
    ``CapacityExceeded``) before writing anything (``reserve``'s rules).

    ``capacity_in_use_mflops``: what the enterprise holds of its capacity cap (None:
    read it from the jobs).
    """
    ent = _lock(session, job.enterprise_id)
    proj = _lock(session, job.enterprise_id, job.project_id)
    ent_row = _enterprise(session, job.enterprise_id)
    in_use = capacity_in_use_mflops
    if ent_row.capacity_cap_mflops is not None and in_use is None:
        in_use = _in_use_without(session, job)
    wanted = job.nodes * (job.array_width or 1) * job.rate_mflops
    period = reserve(ent, proj, ent_row, project, job.hold_units, wanted, in_use)
    entry = hold_entry(
        job.enterprise_id, job.project_id, job.id, job.hold_units, period, job.submitted_by
    )
    return _append(session, **entry)


class _Allocated(Protocol):
    @property
    def allocation_units(self) -> int | None: ...


class _Counted(Protocol):
    granted_units: int
    held_units: int
    charged_units: int
    period: str
    period_held_units: int
    period_charged_units: int
    carried_units: int


def reserve(
    ent: _Counted,
    proj: _Counted,
    ent_row: _Periodic,
    project: _Allocated,
    units: int,
    wanted_mflops: int,
    in_use_mflops: int | None,
) -> str:
    """The rules of a hold of ``units`` for a job taking ``wanted_mflops`` of capacity,
    against the enterprise's and the project's locked balance rows (``Balance`` or
    ``Counters``): its period, with the hold added to both rows' counters; or
    ``QuotaExceeded`` (the enterprise's available budget, then the project's allocation
    for the period) or ``CapacityExceeded`` (``in_use_mflops``: what the enterprise holds
    of its cap, the holds of the transaction before this one included), nothing changed.

    Holds of one transaction add up in the locked rows, which are written once: a batch
    of submissions checks each against what the ones before it left.
    """
    period = _open_period(ent_row)
    _roll_project(proj, project, period, ent_row.carry_over)
    available = ent.granted_units - ent.held_units - ent.charged_units
    if units > available:
        raise QuotaExceeded(
            f"hold of {units_to_pfh(units)} PFlop·h exceeds the enterprise's available "
            f"{units_to_pfh(available)} PFlop·h"
        )
    if project.allocation_units is not None:
        left = _project_left(proj, project.allocation_units)
        if units > left:
            raise QuotaExceeded(
                f"hold of {units_to_pfh(units)} PFlop·h exceeds the project's remaining "
                f"allocation of {units_to_pfh(max(left, 0))} PFlop·h for {period}"
            )
    cap = ent_row.capacity_cap_mflops
    if cap is not None and (in_use_mflops or 0) + wanted_mflops > cap:
        raise CapacityExceeded(
            f"job needs {wanted_mflops / 1e9:g} PFLOP/s; the enterprise holds "
            f"{(in_use_mflops or 0) / 1e9:g} of its capacity cap of {cap / 1e9:g} PFLOP/s"
        )
    ent.held_units += units
    proj.held_units += units
    proj.period_held_units += units
    return period


def hold_entry(
    enterprise_id: uuid.UUID,
    project_id: uuid.UUID,
    job_id: uuid.UUID,
    units: int,
    period: str,
    actor: str,
) -> dict[str, object]:
    """A job's HOLD entry (the fields of its ``LedgerEntry``)."""
    return {
        "enterprise_id": enterprise_id,
        "project_id": project_id,
        "job_id": job_id,
        "kind": EntryKind.HOLD,
        "amount_units": units,
        "period": period,
        "actor": actor,
    }


#: Jobs that count against the capacity cap: held (accepted) or in the scheduler.
CAPACITY_STATES = frozenset({JobStatus.ACCEPTED, *LIVE_STATES})


def capacity_in_use_mflops(
    session: Session, enterprise_id: uuid.UUID, exclude: uuid.UUID | None = None
) -> int:
    """Σ nodes × rate of the enterprise's held and running jobs, in MFLOP/s (an array
    counts the tasks that may run at once: nodes × width × rate)."""
    width = Job.nodes * Job.array_width * Job.rate_mflops
    query = select(func.coalesce(func.sum(width), 0)).where(
        Job.enterprise_id == enterprise_id, Job.state.in_(CAPACITY_STATES)
    )
    if exclude is not None:
        query = query.where(Job.id != exclude)
    return int(session.scalar(query) or 0)


@cache
def _in_use(pg: bool) -> bulk.Query:
    width = Job.nodes * Job.array_width * Job.rate_mflops
    return (
        select(Job.enterprise_id, func.coalesce(func.sum(width), 0))
        .where(bulk.in_list(Job.enterprise_id, "ids", pg=pg), Job.state.in_(CAPACITY_STATES))
        .group_by(Job.enterprise_id)
    )


def capacity_in_use_many(
    session: Session, enterprise_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """``capacity_in_use_mflops`` of several enterprises in one query."""
    if not enterprise_ids:
        return {}
    query = _in_use(bulk.is_pg(session))
    rows = bulk.fetch(session, query, {"ids": sorted(enterprise_ids)})
    found = {ent: int(total or 0) for ent, total in rows}
    return {ent: found.get(ent, 0) for ent in enterprise_ids}


def _in_use_without(session: Session, job: Job) -> int:
    return capacity_in_use_mflops(session, job.enterprise_id, exclude=job.id)


def _enterprise(session: Session, enterprise_id: uuid.UUID) -> Enterprise:
    ent = session.get(Enterprise, enterprise_id)
    if ent is None:
        raise NotFound("enterprise not found")
    return ent


def period_of(at: datetime, kind: PeriodKind) -> str:
    """The budget period containing ``at``: ``2026-11`` (month) or ``2026-Q4`` (quarter)."""
    if kind is PeriodKind.QUARTER:
        return f"{at.year}-Q{(at.month - 1) // 3 + 1}"
    return f"{at.year}-{at.month:02d}"


def roll_period(session: Session, enterprise_id: uuid.UUID, now: datetime) -> LedgerEntry | None:
    """Enter the period containing ``now``; without carry-over, expire what was unused.

    The expiry is an ADJUST of −available, so the ledger shows it; holds of running
    jobs stay reserved from the old period and what they do not charge expires when
    they settle (``settle``). Projects enter the new period too.
    """
    bal = _lock(session, enterprise_id)
    ent = _enterprise(session, enterprise_id)
    period = period_of(now, ent.period_kind)
    if ent.current_period == period:
        return None
    previous, ent.current_period = ent.current_period, period
    rows = session.execute(
        select(Balance, Project)
        .join(Project, Project.id == Balance.project_id)
        .where(Balance.enterprise_id == enterprise_id)
        .order_by(Balance.id)
        .with_for_update(of=Balance)
    ).all()
    _remember(session, [row for row, _ in rows])
    for row, project in rows:
        _roll_project(row, project, period, ent.carry_over)
    unused = bal.granted_units - bal.held_units - bal.charged_units
    if not previous or ent.carry_over or unused <= 0:
        return None
    bal.granted_units -= unused
    return _append(
        session,
        enterprise_id=enterprise_id,
        kind=EntryKind.ADJUST,
        amount_units=-unused,
        period=previous,
        memo=f"unused budget of {previous} expired",
    )


def allocate(
    session: Session, principal: Principal, project: Project, allocation_units: int | None
) -> Project:
    """Set (or clear, with None) a project's sub-allocation of the enterprise budget."""
    principal.require_enterprise_admin(project.enterprise_id, "project")
    if allocation_units is not None:
        if allocation_units < 0:
            raise InvalidInput("allocation_pfh", "must not be negative")
        _check_amount(allocation_units, "allocation_pfh")
    _lock(session, project.enterprise_id)
    proj = _lock(session, project.enterprise_id, project.id)
    ent = _enterprise(session, project.enterprise_id)
    _roll_project(proj, project, _open_period(ent), ent.carry_over)
    used = proj.period_held_units + proj.period_charged_units - proj.carried_units
    if allocation_units is not None and allocation_units < used:
        raise InvalidInput(
            "allocation_pfh",
            f"is below what the project already holds and spent in {proj.period} "
            f"({units_to_pfh(used)} PFlop·h)",
        )
    project.allocation_units = allocation_units
    audit.record(
        session,
        principal,
        "project.allocate",
        "project",
        project.id,
        enterprise_id=project.enterprise_id,
        allocation_pfh=None if allocation_units is None else units_to_pfh(allocation_units),
    )
    return project


def project_balance(session: Session, project: Project) -> BalanceView:
    """The project's current period: allocation plus carry-over, held, charged."""
    row = session.scalar(select(Balance).where(Balance.project_id == project.id))
    if row is None:
        raise NotFound("project not found")
    ent = _enterprise(session, project.enterprise_id)
    if row.period and row.period != ent.current_period:  # not rolled yet: a fresh period
        carried = 0
        if ent.carry_over and project.allocation_units is not None:
            carried = max(0, _project_left(row, project.allocation_units))
        return BalanceView((project.allocation_units or 0) + carried, 0, 0)
    return BalanceView(
        (project.allocation_units or 0) + row.carried_units,
        row.period_held_units,
        row.period_charged_units,
    )


def settle(session: Session, job: Job, charge_units: int, memo: str = "") -> bool:
    """Release the job's hold and charge it, exactly once; False if already settled.

    The charge is capped at the hold: the hold is the upper bound promised at
    submission (nodes × time limit × highest rate), so a job can never spend more.
    A hold released earlier (``release_hold``: a lost job) is not released again.
    """
    ent = _lock(session, job.enterprise_id)  # serializes every settlement of this job
    if _entry(session, job.id, EntryKind.CHARGE) is not None:
        return False
    proj = _lock(session, job.enterprise_id, job.project_id)
    ent_row = _enterprise(session, job.enterprise_id)
    held, period, in_counters, released = _release(session, job, ent, proj, ent_row, memo)
    cap = held.amount_units if held is not None else 0
    units = max(0, min(charge_units, cap))
    ent.charged_units += units
    proj.charged_units += units
    if in_counters:
        proj.period_charged_units += units
    _append(
        session,
        enterprise_id=job.enterprise_id,
        project_id=job.project_id,
        job_id=job.id,
        kind=EntryKind.CHARGE,
        amount_units=units,
        period=period,
        memo=memo,
    )
    job.charge_units = units
    _expire_unused_hold(session, ent, ent_row, job, period, released - units)
    return True


def release_hold(session: Session, job: Job, memo: str) -> int:
    """Release a job's hold without charging it (a lost job: what it used is not known
    yet); ``settle`` charges it later, once, without releasing again. The units released."""
    ent = _lock(session, job.enterprise_id)
    if _entry(session, job.id, EntryKind.CHARGE) is not None:
        return 0
    proj = _lock(session, job.enterprise_id, job.project_id)
    ent_row = _enterprise(session, job.enterprise_id)
    _, period, _, released = _release(session, job, ent, proj, ent_row, memo)
    _expire_unused_hold(session, ent, ent_row, job, period, released)
    return released


def _release(
    session: Session, job: Job, ent: Balance, proj: Balance, ent_row: Enterprise, memo: str
) -> tuple[LedgerEntry | None, str, bool, int]:
    """Release the job's hold if not done yet: (its HOLD, its period, whether the project's
    period counters hold it, the units released now)."""
    held = _entry(session, job.id, EntryKind.HOLD)
    # A hold from before periods were recorded (migration 0015) keeps its empty period.
    period = held.period if held is not None else _open_period(ent_row)
    in_counters = held is not None and bool(held.period) and held.period == proj.period
    released = 0
    if held is not None and _entry(session, job.id, EntryKind.RELEASE) is None:
        released = held.amount_units
        ent.held_units -= released
        proj.held_units -= released
        if in_counters:
            proj.period_held_units -= released
        _append(
            session,
            enterprise_id=job.enterprise_id,
            project_id=job.project_id,
            job_id=job.id,
            kind=EntryKind.RELEASE,
            amount_units=released,
            reverses_id=held.id,
            period=period,
            memo=memo,
        )
    return held, period, in_counters, released


def _expire_unused_hold(
    session: Session, bal: Balance, ent: Enterprise, job: Job, period: str, unused: int
) -> None:
    """A hold of a closed period gave back ``unused``: that period's budget, which expired
    with it (unless the enterprise carries over), so it must not become available now."""
    if unused <= 0 or not period or period == ent.current_period or ent.carry_over:
        return
    bal.granted_units -= unused
    _append(
        session,
        enterprise_id=job.enterprise_id,
        job_id=job.id,
        kind=EntryKind.ADJUST,
        amount_units=-unused,
        period=period,
        memo=f"unused hold of {period} expired at settlement",
    )


def creditable(session: Session, job: Job) -> int:
    """What of the job's charge is not credited back yet (0 before it is charged)."""
    charge = _entry(session, job.id, EntryKind.CHARGE)
    if charge is None:
        return 0
    return charge.amount_units - _credited(session, charge)


def _credited(session: Session, charge: LedgerEntry) -> int:
    return -int(
        session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_units), 0)).where(
                LedgerEntry.reverses_id == charge.id, LedgerEntry.kind == EntryKind.ADJUST
            )
        )
        or 0
    )


def creditable_many(session: Session, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """``creditable`` of many jobs in two queries per thousand (charged jobs only)."""
    out: dict[uuid.UUID, int] = {}
    for i in range(0, len(job_ids), 1000):
        chunk = list(job_ids[i : i + 1000])
        charges = session.execute(
            select(LedgerEntry.id, LedgerEntry.job_id, LedgerEntry.amount_units).where(
                LedgerEntry.job_id.in_(chunk), LedgerEntry.kind == EntryKind.CHARGE
            )
        ).all()
        credited = dict(
            session.execute(
                select(LedgerEntry.reverses_id, func.sum(LedgerEntry.amount_units))
                .where(
                    LedgerEntry.reverses_id.in_([c.id for c in charges]),
                    LedgerEntry.kind == EntryKind.ADJUST,
                )
                .group_by(LedgerEntry.reverses_id)
            ).all()
        )
        for c in charges:
            out[c.job_id] = c.amount_units + int(credited.get(c.id) or 0)
    return out


def credit(
    session: Session, principal: Principal, job: Job, units: int, memo: str
) -> LedgerEntry | None:
    """Give back part of a job's charge (a reversing ADJUST linked to its CHARGE)."""
    ent = _lock(session, job.enterprise_id)
    charge = _entry(session, job.id, EntryKind.CHARGE)
    if charge is None:
        raise Conflict("the job has not been charged")
    units = min(units, charge.amount_units - _credited(session, charge))
    if units <= 0:
        return None
    proj = _lock(session, job.enterprise_id, job.project_id)
    ent_row = _enterprise(session, job.enterprise_id)
    period = _open_period(ent_row)  # a credit is booked in the period it is given
    _roll_project(proj, session.get(Project, job.project_id), period, ent_row.carry_over)
    ent.charged_units -= units
    proj.charged_units -= units
    proj.period_charged_units -= units
    entry = _append(
        session,
        enterprise_id=job.enterprise_id,
        project_id=job.project_id,
        job_id=job.id,
        kind=EntryKind.ADJUST,
        amount_units=-units,
        reverses_id=charge.id,
        period=period,
        memo=memo,
        actor=principal.actor,
    )
    job.charge_units = (job.charge_units or 0) - units
    return entry


def charge_entry(session: Session, job_id: uuid.UUID) -> LedgerEntry | None:
    """The job's CHARGE entry, once it is settled."""
    return _entry(session, job_id, EntryKind.CHARGE)


def _entry(session: Session, job_id: uuid.UUID, kind: EntryKind) -> LedgerEntry | None:
    return session.scalar(
        select(LedgerEntry).where(LedgerEntry.job_id == job_id, LedgerEntry.kind == kind)
    )


def available_units(session: Session, enterprise_id: uuid.UUID) -> int:
    """What the enterprise has left to hold or charge now (granted - held - charged)."""
    row = session.scalar(
        select(Balance).where(Balance.enterprise_id == enterprise_id, Balance.project_id.is_(None))
    )
    return 0 if row is None else row.granted_units - row.held_units - row.charged_units


def balance(session: Session, principal: Principal, enterprise_id: uuid.UUID) -> BalanceView:
    principal.check_visible(enterprise_id, "enterprise")
    row = session.scalar(
        select(Balance).where(Balance.enterprise_id == enterprise_id, Balance.project_id.is_(None))
    )
    if row is None:
        raise NotFound("enterprise not found")
    return BalanceView(row.granted_units, row.held_units, row.charged_units)


def list_entries(
    session: Session,
    principal: Principal,
    enterprise_id: uuid.UUID,
    *,
    kind: EntryKind | None = None,
    project_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    limit: int = 100,
    before_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[LedgerEntry]:
    principal.check_visible(enterprise_id, "enterprise")
    query = select(LedgerEntry).where(LedgerEntry.enterprise_id == enterprise_id)
    if kind is not None:
        query = query.where(LedgerEntry.kind == kind)
    if project_id is not None:
        query = query.where(LedgerEntry.project_id == project_id)
    if job_id is not None:
        query = query.where(LedgerEntry.job_id == job_id)
    if before_id is not None:
        query = query.where(LedgerEntry.id < before_id)
    if since is not None:
        query = query.where(LedgerEntry.created_at >= since)
    if until is not None:
        query = query.where(LedgerEntry.created_at < until)
    return list(session.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit)))


def check_invariants(session: Session, enterprise_id: uuid.UUID) -> list[str]:
    """Recompute every balance of an enterprise from its entries; list what disagrees."""
    problems: list[str] = []
    rows = session.scalars(select(Balance).where(Balance.enterprise_id == enterprise_id))
    for row in rows:
        sums = _sums(session, enterprise_id, row.project_id)
        got = (row.granted_units, row.held_units, row.charged_units)
        if row.project_id is not None:
            sums = (0, sums[1], sums[2])
            got = (0, got[1], got[2])
        if got != sums:
            problems.append(
                f"balance {row.project_id or 'enterprise'}: row {got} != entries {sums}"
            )
        if row.project_id is not None and row.period:
            _, p_held, p_charged = _sums(session, enterprise_id, row.project_id, row.period)
            if (row.period_held_units, row.period_charged_units) != (p_held, p_charged):
                problems.append(
                    f"balance {row.project_id} in {row.period}: held/charged "
                    f"({row.period_held_units}, {row.period_charged_units}) != entries "
                    f"({p_held}, {p_charged})"
                )
        if row.project_id is None and row.granted_units - row.held_units - row.charged_units < 0:
            problems.append("enterprise available below zero")
    dup = session.execute(
        select(LedgerEntry.job_id, LedgerEntry.kind, func.count())
        .where(
            LedgerEntry.enterprise_id == enterprise_id,
            LedgerEntry.job_id.is_not(None),
            LedgerEntry.kind != EntryKind.ADJUST,
        )
        .group_by(LedgerEntry.job_id, LedgerEntry.kind)
        .having(func.count() > 1)
    ).all()
    problems += [f"job {j} has {n} {k} entries" for j, k, n in dup]
    return problems


def _sums(
    session: Session,
    enterprise_id: uuid.UUID,
    project_id: uuid.UUID | None,
    period: str | None = None,
) -> tuple[int, int, int]:
    # Every HOLD an enterprise ever made, say, can add up past 64 bits: exact sums.
    query = select(
        LedgerEntry.kind, LedgerEntry.reverses_id.is_not(None), *sum_units(LedgerEntry.amount_units)
    ).where(LedgerEntry.enterprise_id == enterprise_id)
    if project_id is not None:
        query = query.where(LedgerEntry.project_id == project_id)
    if period is not None:
        query = query.where(LedgerEntry.period == period)
    granted = held = charged = 0
    for kind, reverses, high, low in session.execute(
        query.group_by(LedgerEntry.kind, LedgerEntry.reverses_id.is_not(None))
    ):
        total = joined_units(high, low)
        if kind is EntryKind.GRANT or (kind is EntryKind.ADJUST and not reverses):
            granted += total
        elif kind is EntryKind.ADJUST:
            charged += total  # credits are negative adjustments of a charge
        elif kind is EntryKind.HOLD:
            held += total
        elif kind is EntryKind.RELEASE:
            held -= total
        elif kind is EntryKind.CHARGE:
            charged += total
    return granted, held, charged


__all__ = [
    "SYSTEM",
    "BalanceView",
    "adjust",
    "allocate",
    "balance",
    "capacity_in_use_mflops",
    "charge_entry",
    "check_invariants",
    "credit",
    "creditable",
    "creditable_many",
    "grant",
    "hold",
    "joined_units",
    "list_entries",
    "lock_enterprise",
    "period_of",
    "project_balance",
    "roll_period",
    "settle",
    "sum_units",
]
