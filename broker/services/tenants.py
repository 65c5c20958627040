"""Enterprises: the center's tenants, each mapped to a Slurm account and a POSIX user."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidInput, NotFound
from ..models import Balance, Enterprise, EnterpriseStatus, PeriodKind
from . import audit, ledger
from .principal import Principal

_POSIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return (slug or "ent")[:24]


def create_enterprise(
    session: Session,
    principal: Principal,
    *,
    name: str,
    posix_user: str | None = None,
    slurm_account: str | None = None,
    capacity_cap_mflops: int | None = None,
    period: PeriodKind = PeriodKind.MONTH,
    carry_over: bool = True,
) -> Enterprise:
    principal.require_operator()
    if session.scalar(select(Enterprise.id).where(Enterprise.name == name)) is not None:
        raise Conflict(f"an enterprise named {name!r} already exists")
    slug = _slug(name)
    account = slurm_account or f"e_{slug}"
    user = posix_user or f"hcb_{slug}"[:32]
    for field, value in (("posix_user", user), ("slurm_account", account)):
        if not _POSIX_NAME.match(value):
            raise InvalidInput(field, "must match [a-z_][a-z0-9_-]{0,31}")
    if session.scalar(select(Enterprise.id).where(Enterprise.slurm_account == account)):
        raise Conflict(f"slurm_account {account!r} is taken; give another")
    ent = Enterprise(
        name=name,
        posix_user=user,
        slurm_account=account,
        capacity_cap_mflops=capacity_cap_mflops,
        period_kind=period,
        carry_over=carry_over,
        current_period=ledger.period_of(datetime.now(UTC), period),
    )
    session.add(ent)
    session.flush()
    session.add(Balance(enterprise_id=ent.id, project_id=None))
    audit.record(
        session,
        principal,
        "enterprise.create",
        "enterprise",
        ent.id,
        enterprise_id=ent.id,
        name=name,
    )
    return ent


def get_enterprise(session: Session, principal: Principal, enterprise_id: uuid.UUID) -> Enterprise:
    principal.check_visible(enterprise_id, "enterprise")
    ent = session.get(Enterprise, enterprise_id)
    if ent is None:
        raise NotFound("enterprise not found")
    return ent


def list_enterprises(session: Session, principal: Principal) -> list[Enterprise]:
    query = select(Enterprise).order_by(Enterprise.name)
    if not principal.is_staff:
        query = query.where(Enterprise.id == principal.enterprise_id)
    return list(session.scalars(query))


def set_status(
    session: Session, principal: Principal, enterprise_id: uuid.UUID, status: EnterpriseStatus
) -> Enterprise:
    principal.require_operator()
    ent = get_enterprise(session, principal, enterprise_id)
    if ent.status is not status:
        ent.status = status
        audit.record(
            session,
            principal,
            f"enterprise.{status.value}",
            "enterprise",
            ent.id,
            enterprise_id=ent.id,
        )
    return ent


def set_capacity_cap(
    session: Session, principal: Principal, enterprise_id: uuid.UUID, cap_mflops: int | None
) -> Enterprise:
    principal.require_operator()
    ent = get_enterprise(session, principal, enterprise_id)
    ent.capacity_cap_mflops = cap_mflops
    audit.record(
        session,
        principal,
        "enterprise.capacity_cap",
        "enterprise",
        ent.id,
        enterprise_id=ent.id,
        cap_pflops=None if cap_mflops is None else cap_mflops / 1e9,
    )
    return ent


def roll_periods(session: Session, now: datetime) -> int:
    """Move every enterprise into the current budget period; returns how many expired."""
    expired = 0
    for ent_id in session.scalars(select(Enterprise.id)):
        if ledger.roll_period(session, ent_id, now) is not None:
            expired += 1
    return expired
