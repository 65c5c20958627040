"""Quota reports: enterprises' balances, burn-down with projection, top projects, ledger sums."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from ...errors import InvalidInput, NotFound
from ...models import Balance, Enterprise, EntryKind, Job, LedgerEntry, Project, ProjectStatus
from ..ledger import CAPACITY_STATES, BalanceView, joined_units, period_of, sum_units
from ._sql import day_bucket

#: How far back the burn rate behind a projection looks.
BURN_WINDOW = timedelta(days=7)
DAY = timedelta(days=1)
#: Projections further out than this are shown as "not at this rate".
HORIZON_DAYS = 3650
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Projection:
    """Where an enterprise's available budget is heading at its recent burn rate."""

    available_units: int
    rate_units_per_day: int
    exhaustion_at: datetime | None  # None: not burning


@dataclass(frozen=True, slots=True)
class EnterpriseRow:
    id: uuid.UUID
    name: str
    status: str
    balance: BalanceView
    capacity_in_use_mflops: int
    capacity_cap_mflops: int | None
    projection: Projection

    @property
    def used_fraction(self) -> float:
        b = self.balance
        return (b.held_units + b.charged_units) / b.granted_units if b.granted_units > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    rows: list[T]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True, slots=True)
class BurnPoint:
    at: datetime
    remaining_units: int  # granted − charged
    available_units: int  # granted − charged − held


@dataclass(frozen=True, slots=True)
class BurnDown:
    period: str
    start: datetime
    end: datetime
    points: list[BurnPoint]
    projection: Projection


@dataclass(frozen=True, slots=True)
class ProjectUsage:
    id: uuid.UUID
    name: str
    status: ProjectStatus
    allocation_units: int | None
    held_units: int
    charged_units: int


_SORTS: dict[str, Any] = {
    "name": Enterprise.name,
    "available": (Balance.granted_units - Balance.held_units - Balance.charged_units).desc(),
    "used": (
        (Balance.held_units + Balance.charged_units) * 1.0 / func.nullif(Balance.granted_units, 0)
    )
    .desc()
    .nulls_last(),
}


def enterprise_page(
    session: Session, *, page: int = 1, per_page: int = 50, sort: str = "name", now: datetime
) -> Page[EnterpriseRow]:
    if sort not in _SORTS:
        raise InvalidInput("sort", f"must be one of {', '.join(_SORTS)}")
    total = int(session.scalar(select(func.count()).select_from(Enterprise)) or 0)
    rows = session.execute(
        select(Enterprise, Balance)
        .join(Balance, (Balance.enterprise_id == Enterprise.id) & Balance.project_id.is_(None))
        .order_by(_SORTS[sort], Enterprise.id)
        .limit(per_page)
        .offset((max(page, 1) - 1) * per_page)
    )
    pairs = list(rows)
    ids = [e.id for e, _ in pairs]
    in_use = _capacity_in_use(session, ids)
    burned = _burned_since(session, ids, now - BURN_WINDOW)
    out = []
    for ent, bal in pairs:
        view = BalanceView(bal.granted_units, bal.held_units, bal.charged_units)
        out.append(
            EnterpriseRow(
                id=ent.id,
                name=ent.name,
                status=ent.status.value,
                balance=view,
                capacity_in_use_mflops=in_use.get(ent.id, 0),
                capacity_cap_mflops=ent.capacity_cap_mflops,
                projection=_project(view.available_units, burned.get(ent.id, 0), now),
            )
        )
    return Page(out, total, max(page, 1), per_page)


def _capacity_in_use(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not ids:
        return {}
    query = (
        select(Job.enterprise_id, func.sum(Job.nodes * Job.rate_mflops))
        .where(Job.state.in_(CAPACITY_STATES), Job.enterprise_id.in_(ids))
        .group_by(Job.enterprise_id)
    )
    return {eid: int(v or 0) for eid, v in session.execute(query)}


def _net_charge() -> ColumnElement[bool]:
    """Charges, and the credits that reverse them (negative ADJUSTs linked to a CHARGE)."""
    return or_(
        LedgerEntry.kind == EntryKind.CHARGE,
        (LedgerEntry.kind == EntryKind.ADJUST) & LedgerEntry.reverses_id.is_not(None),
    )


def _burned_since(session: Session, ids: list[uuid.UUID], since: datetime) -> dict[uuid.UUID, int]:
    if not ids:
        return {}
    query = (
        select(LedgerEntry.enterprise_id, *sum_units(LedgerEntry.amount_units))
        .where(LedgerEntry.enterprise_id.in_(ids), LedgerEntry.created_at >= since, _net_charge())
        .group_by(LedgerEntry.enterprise_id)
    )
    return {eid: joined_units(high, low) for eid, high, low in session.execute(query)}


def _project(available_units: int, burned_units: int, now: datetime) -> Projection:
    rate = int(max(0, burned_units) * (DAY / BURN_WINDOW))
    if rate <= 0:
        return Projection(available_units, 0, None)
    days = max(0, available_units) / rate
    if days > HORIZON_DAYS:
        return Projection(available_units, rate, None)
    return Projection(available_units, rate, now + timedelta(days=days))


def get_enterprise(session: Session, enterprise_id: uuid.UUID) -> Enterprise:
    ent = session.get(Enterprise, enterprise_id)
    if ent is None:
        raise NotFound("enterprise not found")
    return ent


def enterprise_balance(session: Session, enterprise_id: uuid.UUID) -> BalanceView:
    row = session.scalar(
        select(Balance).where(Balance.enterprise_id == enterprise_id, Balance.project_id.is_(None))
    )
    if row is None:
        raise NotFound("enterprise not found")
    return BalanceView(row.granted_units, row.held_units, row.charged_units)


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """``2026-11`` or ``2026-Q4`` as [start, end) in UTC."""
    year_s, part = period.split("-", 1)
    year = int(year_s)
    if part.startswith("Q"):
        first, months = (int(part[1:]) - 1) * 3 + 1, 3
    else:
        first, months = int(part), 1
    start = datetime(year, first, 1, tzinfo=UTC)
    after = first + months
    end = datetime(year + (after - 1) // 12, (after - 1) % 12 + 1, 1, tzinfo=UTC)
    return start, end


def burn_down(session: Session, ent: Enterprise, now: datetime) -> BurnDown:
    """Daily remaining and available budget since the period began, and the projection.

    The balance at the period's start is today's balance minus the effects of the
    entries made since, so carry-over and mid-period grants show as they happened.
    """
    period = ent.current_period or period_of(now, ent.period_kind)
    start, end = period_bounds(period)
    bal = enterprise_balance(session, ent.id)
    day = day_bucket(session, LedgerEntry.created_at)
    reverses = LedgerEntry.reverses_id.is_not(None)
    rows = session.execute(
        select(day, LedgerEntry.kind, reverses, *sum_units(LedgerEntry.amount_units))
        .where(LedgerEntry.enterprise_id == ent.id, LedgerEntry.created_at >= start)
        .group_by(day, LedgerEntry.kind, reverses)
    )
    deltas: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # granted, held, charged
    for bucket, kind, reverses, high, low in rows:
        d, amount = deltas[str(bucket)], joined_units(high, low)
        if kind is EntryKind.GRANT or (kind is EntryKind.ADJUST and not reverses):
            d[0] += amount
        elif kind is EntryKind.ADJUST or kind is EntryKind.CHARGE:
            d[2] += amount
        elif kind is EntryKind.HOLD:
            d[1] += amount
        elif kind is EntryKind.RELEASE:
            d[1] -= amount
    g, h, c = bal.granted_units, bal.held_units, bal.charged_units
    for d in deltas.values():
        g, h, c = g - d[0], h - d[1], c - d[2]
    points = [BurnPoint(start, g - c, g - h - c)]
    cursor = start
    while cursor < min(now, end):
        d = deltas.get(cursor.strftime("%Y-%m-%d"), [0, 0, 0])
        g, h, c = g + d[0], h + d[1], c + d[2]
        cursor = min(cursor + DAY, now)
        points.append(BurnPoint(cursor, g - c, g - h - c))
    burned = _burned_since(session, [ent.id], now - BURN_WINDOW).get(ent.id, 0)
    return BurnDown(period, start, end, points, _project(bal.available_units, burned, now))


def top_projects(session: Session, enterprise_id: uuid.UUID, limit: int = 10) -> list[ProjectUsage]:
    rows = session.execute(
        select(Project, Balance.held_units, Balance.charged_units)
        .join(Balance, Balance.project_id == Project.id)
        .where(Project.enterprise_id == enterprise_id)
        .order_by((Balance.charged_units + Balance.held_units).desc(), Project.name)
        .limit(limit)
    )
    return [
        ProjectUsage(p.id, p.name, p.status, p.allocation_units, int(h), int(c)) for p, h, c in rows
    ]


def ledger_summary(
    session: Session, enterprise_id: uuid.UUID, since: datetime, until: datetime
) -> dict[str, int]:
    """Sums of an enterprise's entries in [since, until) by kind (credits apart)."""
    reverses = LedgerEntry.reverses_id.is_not(None)
    out = {"GRANT": 0, "ADJUST": 0, "CREDIT": 0, "HOLD": 0, "RELEASE": 0, "CHARGE": 0}
    for kind, is_rev, high, low in session.execute(
        select(LedgerEntry.kind, reverses, *sum_units(LedgerEntry.amount_units))
        .where(
            LedgerEntry.enterprise_id == enterprise_id,
            LedgerEntry.created_at >= since,
            LedgerEntry.created_at < until,
        )
        .group_by(LedgerEntry.kind, reverses)
    ):
        key = "CREDIT" if kind is EntryKind.ADJUST and is_rev else kind.value
        out[key] += joined_units(high, low)
    return out
