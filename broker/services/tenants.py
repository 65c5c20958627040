"""Enterprises: the center's tenants, each mapped to a Slurm account and a POSIX user.

An enterprise's POSIX user is its own: unique across enterprises, never ``root``, a
system account (uid below ``BROKER_MIN_TENANT_UID`` on this host) or the broker's own
user. A user this host does not know is allowed (slurmrestd sites submit as users the
broker host never sees); where a cluster's adapter runs commands as that user on this
host, ``require_submit_user`` refuses the job before it is accepted.
"""

from __future__ import annotations

import os
import pwd
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidInput, NotFound
from ..models import Balance, Cluster, Enterprise, EnterpriseStatus, PeriodKind
from . import audit, ledger, names
from .principal import Principal

if TYPE_CHECKING:
    from ..config import Settings

_POSIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

#: Accounts no tenant may run as, wherever they exist: the superuser, the overflow
#: user, and the scheduler's own daemons (SlurmUser reads the key that signs every
#: slurmrestd token).
RESERVED_USERS = frozenset({"root", "nobody", "nfsnobody", "slurm", "slurmrestd", "munge"})
_OVERFLOW_UID = 65534


@dataclass(frozen=True)
class IdentityRules:
    """What an enterprise's POSIX user may be: its uid floor and the broker's own users."""

    min_uid: int = 1000
    reserved: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: Settings) -> IdentityRules:
        """From the settings: ``min_tenant_uid``; the validation user is the broker's."""
        return cls(settings.min_tenant_uid, frozenset({settings.validation_user}))


def _broker_user() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


def check_posix_user(user: str, rules: IdentityRules, field: str = "posix_user") -> None:
    """Refuse root, system accounts, the broker's own users (422 naming ``field``)."""
    if not _POSIX_NAME.match(user):
        raise InvalidInput(field, "must match [a-z_][a-z0-9_-]{0,31}")
    if user in RESERVED_USERS or user in rules.reserved:
        raise InvalidInput(field, f"{user!r} is reserved: tenants' jobs never run as it")
    if user == _broker_user():
        raise InvalidInput(field, f"{user!r} is the broker's own user")
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return  # not on this host: a slurmrestd site may know it (see require_submit_user)
    if pw.pw_uid == os.geteuid():
        raise InvalidInput(field, f"{user!r} has the broker's own uid {pw.pw_uid}")
    if pw.pw_uid < rules.min_uid or pw.pw_uid == _OVERFLOW_UID:
        raise InvalidInput(
            field,
            f"{user!r} is a system account here (uid {pw.pw_uid}; tenants need a uid of"
            f" at least {rules.min_uid}, BROKER_MIN_TENANT_UID)",
        )


def _require_unused(session: Session, user: str, enterprise_id: uuid.UUID | None) -> None:
    query = select(Enterprise.name).where(Enterprise.posix_user == user)
    if enterprise_id is not None:
        query = query.where(Enterprise.id != enterprise_id)
    if session.scalar(query) is not None:
        raise Conflict(f"posix_user {user!r} is another enterprise's; give another")


def _runs_as_user_here(cluster: Cluster) -> bool:
    """Whether the cluster's adapter runs commands as the job's POSIX user on this host."""
    if cluster.adapter == "slurm-cli":
        return True  # sbatch as the user
    if cluster.adapter == "local" and os.geteuid() == 0:
        # Run as root, the local adapter falls back to an unprivileged user unless the
        # cluster turned that off (``fallback_user = ""``).
        return not (cluster.options or {}).get("fallback_user", "nobody")
    return False  # slurmrestd, pyslurm: the scheduler knows the user, not this host


class _User(Protocol):
    @property
    def posix_user(self) -> str: ...


def require_submit_user(ent: _User, cluster: Cluster) -> None:
    """409 before a job is accepted, not a rejection later, when the chosen cluster runs
    the job as the enterprise's POSIX user on this host and that user does not exist."""
    if not _runs_as_user_here(cluster):
        return
    try:
        pwd.getpwnam(ent.posix_user)
    except KeyError:
        raise Conflict(
            f"posix_user {ent.posix_user!r} does not exist on the broker host, and cluster"
            f" {cluster.name!r} ({cluster.adapter}) runs jobs as that user here; create it"
            " (useradd) or use a slurmrestd cluster"
        ) from None


def _slug(name: str) -> str:
    """ASCII for Slurm and POSIX from a name in any script ("Société" -> "societe")."""
    return names.slug(name, 24, "ent")


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
    rules: IdentityRules | None = None,
) -> Enterprise:
    """Create an enterprise; its POSIX user must pass ``check_posix_user`` under
    ``rules`` (default: uid floor 1000) and be no other enterprise's."""
    principal.require_operator()
    name = names.display_name(name)
    if session.scalar(select(Enterprise.id).where(Enterprise.name == name)) is not None:
        raise Conflict(f"an enterprise named {name!r} already exists")
    slug = _slug(name)
    account = slurm_account or f"e_{slug}"
    user = posix_user or f"hcb_{slug}"[:32]
    if not _POSIX_NAME.match(account):
        raise InvalidInput("slurm_account", "must match [a-z_][a-z0-9_-]{0,31}")
    check_posix_user(user, rules or IdentityRules())
    if session.scalar(select(Enterprise.id).where(Enterprise.slurm_account == account)):
        raise Conflict(f"slurm_account {account!r} is taken; give another")
    _require_unused(session, user, None)
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
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create took the name, account or user
        raise Conflict(
            "another enterprise took this name, slurm_account or posix_user meanwhile; give another"
        ) from exc
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
