"""Enterprises: the center's tenants, each mapped to a Slurm account and a POSIX user."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidInput, NotFound
from ..models import Balance, Enterprise, EnterpriseStatus
from . import audit
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
        name=name, posix_user=user, slurm_account=account, capacity_cap_mflops=capacity_cap_mflops
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
