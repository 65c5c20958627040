"""Writes the audit trail; every state-changing service call records one event."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AuditEvent
from .principal import Principal


def record(
    session: Session,
    principal: Principal,
    action: str,
    target_type: str,
    target_id: object,
    *,
    enterprise_id: uuid.UUID | None = None,
    **detail: Any,
) -> None:
    session.add(
        AuditEvent(
            **row(principal, action, target_type, target_id, enterprise_id=enterprise_id, **detail)
        )
    )


def row(
    principal: Principal,
    action: str,
    target_type: str,
    target_id: object,
    *,
    enterprise_id: uuid.UUID | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """The event's fields (``record`` adds it; a set-based writer inserts it)."""
    return {
        "actor": principal.actor,
        "action": action,
        "target_type": target_type,
        "target_id": str(target_id),
        "enterprise_id": enterprise_id,
        "detail": {k: _jsonable(v) for k, v in detail.items()},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def list_events(
    session: Session, principal: Principal, *, enterprise_id: uuid.UUID | None, limit: int = 100
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if enterprise_id is not None:
        principal.check_visible(enterprise_id, "enterprise")
        query = query.where(AuditEvent.enterprise_id == enterprise_id)
    else:
        principal.require_staff()
    return list(session.scalars(query))
