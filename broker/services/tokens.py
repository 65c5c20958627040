"""API tokens: issued once in clear, stored as SHA-256, revocable, optionally expiring.

Tokens are 256-bit random secrets, so a fast hash is the right tool (as for GitHub or
Stripe keys): a slow password KDF buys nothing against brute force of a 2^256 space
and would cost every request tens of milliseconds. Lookup is by the hash's unique index.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import InvalidInput, NotFound, Unauthenticated
from ..models import ApiToken, Enterprise, Project, Role
from . import audit
from .principal import Principal

TOKEN_PREFIX = "hcb_"  # noqa: S105 - a public prefix, not a secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session,
    principal: Principal,
    *,
    name: str,
    role: Role,
    enterprise_id: uuid.UUID | None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Issue a token; returns the row and the clear token (shown once, never stored).

    ``expires_at`` (naive means UTC; None: never) must be in the future.
    """
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            raise InvalidInput("expires_at", "is in the past: give a future instant")
    if enterprise_id is None:
        if role not in (Role.OPERATOR, Role.CLUSTER_ADMIN):
            raise InvalidInput("role", "tenant roles need an enterprise")
        principal.require_operator()
    else:
        if role not in (Role.MEMBER, Role.ADMIN):
            raise InvalidInput("role", "must be 'member' or 'admin'")
        principal.require_enterprise_admin(enterprise_id, "enterprise")
        if session.get(Enterprise, enterprise_id) is None:
            raise NotFound("enterprise not found")
    clear = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role,
        enterprise_id=enterprise_id,
        token_hash=hash_token(clear),
        prefix=clear[:10],
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        principal,
        "token.create",
        "token",
        row.id,
        enterprise_id=enterprise_id,
        name=name,
        role=role.value,
        expires_at=None if expires_at is None else expires_at.isoformat(),
    )
    return row, clear


def usable(row: ApiToken, now: datetime | None = None) -> bool:
    """Neither revoked nor expired (at ``now``, default: this instant)."""
    if row.revoked_at is not None:
        return False
    return row.expires_at is None or row.expires_at > (now or datetime.now(UTC))


def authenticate(session: Session, token: str) -> Principal:
    """The token's principal; unknown, revoked and expired tokens alike are refused."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or not usable(row):
        raise Unauthenticated("invalid, revoked or expired token")
    return Principal(token_id=row.id, name=row.name, role=row.role, enterprise_id=row.enterprise_id)


def list_tokens(
    session: Session, principal: Principal, enterprise_id: uuid.UUID | None
) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at)
    if enterprise_id is None:
        principal.require_operator()
        query = query.where(ApiToken.enterprise_id.is_(None))
    else:
        principal.require_enterprise_admin(enterprise_id, "enterprise")
        query = query.where(ApiToken.enterprise_id == enterprise_id)
    return list(session.scalars(query))


def revoke_token(session: Session, principal: Principal, token_id: uuid.UUID) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound("token not found")
    if row.enterprise_id is None:
        principal.require_operator()
    else:
        principal.require_enterprise_admin(row.enterprise_id, "token")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        audit.record(
            session, principal, "token.revoke", "token", row.id, enterprise_id=row.enterprise_id
        )
    return row


@dataclass(frozen=True)
class WhoAmI:
    """The calling token: its principal, expiry, enterprise and that enterprise's projects."""

    principal: Principal
    expires_at: datetime | None
    enterprise: Enterprise | None
    projects: list[Project]


def whoami(session: Session, principal: Principal) -> WhoAmI:
    """Who ``principal`` is. Staff tokens belong to no enterprise and list no projects
    (they reach every one); a tenant's token lists its enterprise's projects, all states."""
    row = None if principal.token_id is None else session.get(ApiToken, principal.token_id)
    ent = None
    projects: list[Project] = []
    if principal.enterprise_id is not None:
        ent = session.get(Enterprise, principal.enterprise_id)
        query = select(Project).where(Project.enterprise_id == principal.enterprise_id)
        projects = list(session.scalars(query.order_by(Project.created_at, Project.id)))
    return WhoAmI(principal, None if row is None else row.expires_at, ent, projects)
