"""Enterprises, their tokens, grants, balance and ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from ...models import EntryKind, PeriodKind, Role
from ...schemas.ledger import (
    AdjustCreate,
    AuditEventRead,
    BalanceRead,
    GrantCreate,
    LedgerEntryRead,
)
from ...schemas.tenants import (
    CapacitySet,
    EnterpriseCreate,
    EnterpriseRead,
    TokenCreate,
    TokenCreated,
    TokenRead,
)
from ...services import audit, ledger, slurm_sync, statements, tenants, tokens
from ...units import pfh_to_units
from .. import views
from ..deps import ClusterConfigsDep, CurrentPrincipal, SessionDep, SettingsDep

router = APIRouter(prefix="/enterprises", tags=["enterprises"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_enterprise(
    body: EnterpriseCreate, session: SessionDep, me: CurrentPrincipal, settings: SettingsDep
) -> EnterpriseRead:
    """Its ``posix_user`` (default ``hcb_<name>``) is its own: never root, a system account
    or the broker's user (422), nor another enterprise's (409)."""
    cap = None if body.capacity_cap_pflops is None else round(body.capacity_cap_pflops * 1e9)
    ent = tenants.create_enterprise(
        session,
        me,
        name=body.name,
        posix_user=body.posix_user,
        slurm_account=body.slurm_account,
        capacity_cap_mflops=cap,
        period=PeriodKind(body.period),
        carry_over=body.carry_over,
        rules=tenants.IdentityRules.of(settings),
    )
    session.commit()
    return views.enterprise(ent)


@router.get("")
def list_enterprises(session: SessionDep, me: CurrentPrincipal) -> list[EnterpriseRead]:
    return [views.enterprise(e) for e in tenants.list_enterprises(session, me)]


@router.put("/{enterprise_id}/capacity")
def set_capacity(
    enterprise_id: uuid.UUID, body: CapacitySet, session: SessionDep, me: CurrentPrincipal
) -> EnterpriseRead:
    cap = None if body.capacity_cap_pflops is None else round(body.capacity_cap_pflops * 1e9)
    ent = tenants.set_capacity_cap(session, me, enterprise_id, cap)
    session.commit()
    return views.enterprise(ent)


@router.get("/{enterprise_id}/audit")
def enterprise_audit(
    enterprise_id: uuid.UUID,
    session: SessionDep,
    me: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventRead]:
    rows = audit.list_events(session, me, enterprise_id=enterprise_id, limit=limit)
    return [views.audit_event(a) for a in rows]


@router.get(
    "/{enterprise_id}/usage",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
    response_model=None,
)
def usage_statement(
    enterprise_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentPrincipal,
    month: Annotated[
        str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"])
    ] = None,
) -> Response:
    """The month's statement (``month`` omitted: the current month in UTC, so far);
    ``Accept: text/csv`` for CSV (one row per charge line)."""
    doc = statements.statement(session, me, enterprise_id, month)
    if "text/csv" in request.headers.get("accept", ""):
        return Response(statements.as_csv(doc), media_type="text/csv")
    return JSONResponse(doc)


@router.get("/{enterprise_id}")
def get_enterprise(
    enterprise_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal
) -> EnterpriseRead:
    return views.enterprise(tenants.get_enterprise(session, me, enterprise_id))


@router.post("/{enterprise_id}/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    enterprise_id: uuid.UUID, body: TokenCreate, session: SessionDep, me: CurrentPrincipal
) -> TokenCreated:
    """A token for the enterprise; ``expires_at`` (optional) must be in the future."""
    row, clear = tokens.create_token(
        session,
        me,
        name=body.name,
        role=Role(body.role),
        enterprise_id=enterprise_id,
        expires_at=body.expires_at,
    )
    session.commit()
    return TokenCreated(
        id=row.id,
        name=row.name,
        role=row.role.value,
        enterprise_id=row.enterprise_id,
        expires_at=row.expires_at,
        token=clear,
    )


@router.get("/{enterprise_id}/tokens")
def list_tokens(
    enterprise_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal
) -> list[TokenRead]:
    return [views.token(t) for t in tokens.list_tokens(session, me, enterprise_id)]


@router.post("/{enterprise_id}/grants", status_code=status.HTTP_201_CREATED)
def grant(
    enterprise_id: uuid.UUID,
    body: GrantCreate,
    session: SessionDep,
    me: CurrentPrincipal,
    configs: ClusterConfigsDep,
) -> LedgerEntryRead:
    """Grant budget; the Slurm limits follow at once (``GrpTRESMins``)."""
    tenants.get_enterprise(session, me, enterprise_id)
    entry = ledger.grant(session, me, enterprise_id, pfh_to_units(body.amount_pfh), body.memo)
    session.commit()
    read = views.entry(entry)
    slurm_sync.push_enterprise(session, configs, enterprise_id)
    session.commit()
    return read


@router.post("/{enterprise_id}/adjustments", status_code=status.HTTP_201_CREATED)
def adjust(
    enterprise_id: uuid.UUID,
    body: AdjustCreate,
    session: SessionDep,
    me: CurrentPrincipal,
    configs: ClusterConfigsDep,
) -> LedgerEntryRead:
    tenants.get_enterprise(session, me, enterprise_id)
    entry = ledger.adjust(session, me, enterprise_id, pfh_to_units(body.amount_pfh), body.memo)
    session.commit()
    read = views.entry(entry)
    slurm_sync.push_enterprise(session, configs, enterprise_id)
    session.commit()
    return read


@router.get("/{enterprise_id}/balance")
def get_balance(enterprise_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal) -> BalanceRead:
    return views.balance(enterprise_id, ledger.balance(session, me, enterprise_id))


@router.get("/{enterprise_id}/ledger")
def get_ledger(
    enterprise_id: uuid.UUID,
    session: SessionDep,
    me: CurrentPrincipal,
    kind: EntryKind | None = None,
    project_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[LedgerEntryRead]:
    rows = ledger.list_entries(
        session,
        me,
        enterprise_id,
        kind=kind,
        project_id=project_id,
        job_id=job_id,
        limit=limit,
        before_id=before_id,
        since=since,
        until=until,
    )
    return [views.entry(e) for e in rows]
