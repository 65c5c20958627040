"""Operator self-service (POST, CSRF-checked): enterprises, tokens, projects, allocations,
capacity caps, suspension.

Each action calls the service the API and ``brokerctl`` call, with the operator's
``Principal``: the same rules, the same audit rows. A new token is shown once, on the
page that answers the POST (never in a cookie or a redirect URL).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..errors import BrokerError, InvalidInput
from ..models import EnterpriseStatus, PeriodKind, Role
from ..services import ledger, projects, tenants, tokens
from ..units import pfh_to_units
from . import session as ops_session
from .actions import _attempt
from .deps import Db, HtmlErrorRoute, Operator, redirect, render, require_csrf

router = APIRouter(dependencies=[Depends(require_csrf)], route_class=HtmlErrorRoute)
Text = Annotated[str, Form(max_length=5000)]


def _pflops_to_mflops(text: str, field: str) -> int | None:
    """A capacity in PFLOP/s as typed ("" clears it) to MFLOP/s."""
    if not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInput(field, f"is not a number: {text!r}") from None
    if not value.is_finite() or value <= 0 or value > 10**6:
        raise InvalidInput(field, "must be more than 0 and at most 1e6 PFLOP/s")
    return int(value * 10**9)


def _pfh(text: str, field: str) -> int | None:
    if not text.strip():
        return None
    try:
        return pfh_to_units(text.strip())
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from exc


@router.post("/enterprises")
def create_enterprise(
    request: Request,
    db: Db,
    me: Operator,
    name: Annotated[str, Form(max_length=100)],
    capacity_cap_pflops: Text = "",
    period: Annotated[str, Form()] = "month",
    carry_over: Annotated[str, Form()] = "",
    grant_pfh: Text = "",
) -> RedirectResponse:
    """A new enterprise (Slurm account and POSIX user derived from its name), with an
    optional first grant; then its page."""
    sess = ops_session.load(request)
    try:
        if period not in PeriodKind.__members__.values():
            raise InvalidInput("period", "must be 'month' or 'quarter'")
        ent = tenants.create_enterprise(
            db,
            me,
            name=name,
            capacity_cap_mflops=_pflops_to_mflops(capacity_cap_pflops, "capacity_cap_pflops"),
            period=PeriodKind(period),
            carry_over=bool(carry_over),
            rules=tenants.IdentityRules.of(request.app.state.settings),
        )
        grant = _pfh(grant_pfh, "grant_pfh")
        if grant:
            ledger.grant(db, me, ent.id, grant, "initial grant")
        db.commit()
    except BrokerError as exc:
        db.rollback()
        sess.flash("error", exc.detail)
        return redirect(request, "/ops/enterprises#new")
    sess.flash("info", f"Enterprise {ent.name} created (Slurm account {ent.slurm_account}).")
    return redirect(request, f"/ops/enterprises/{ent.id}")


@router.post("/enterprises/{enterprise_id}/tokens", response_model=None)
def create_token(
    request: Request,
    db: Db,
    me: Operator,
    enterprise_id: uuid.UUID,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    role: Annotated[str, Form()] = "member",
    expires_days: Text = "",
) -> HTMLResponse | RedirectResponse:
    """A token for the enterprise, shown once on the page this answers."""
    sess = ops_session.load(request)
    try:
        if role not in ("member", "admin"):
            raise InvalidInput("role", "must be 'member' or 'admin'")
        expires_at = None
        if expires_days.strip():
            if not expires_days.strip().isdigit() or not 0 < int(expires_days) <= 3650:
                raise InvalidInput("expires_days", "must be a whole number of days, 1 to 3650")
            expires_at = datetime.now(UTC) + timedelta(days=int(expires_days))
        ent = tenants.get_enterprise(db, me, enterprise_id)
        row, clear = tokens.create_token(
            db, me, name=name.strip(), role=Role(role), enterprise_id=ent.id, expires_at=expires_at
        )
        db.commit()
    except BrokerError as exc:
        db.rollback()
        sess.flash("error", exc.detail)
        return redirect(request, f"/ops/enterprises/{enterprise_id}#tokens")
    return render(
        request,
        db,
        "token_created.html",
        ent=ent,
        row=row,
        token=clear,
        request_base=str(request.base_url).rstrip("/"),
    )


@router.post("/enterprises/{enterprise_id}/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, db: Db, me: Operator, enterprise_id: uuid.UUID, token_id: uuid.UUID
) -> RedirectResponse:
    def act() -> str:
        return f"Token {tokens.revoke_token(db, me, token_id).name} revoked."

    return _attempt(request, db, f"/ops/enterprises/{enterprise_id}#tokens", act)


@router.post("/enterprises/{enterprise_id}/projects")
def create_project(
    request: Request,
    db: Db,
    me: Operator,
    enterprise_id: uuid.UUID,
    name: Annotated[str, Form(max_length=100)],
    description: Text = "",
    allocation_pfh: Text = "",
    approve: Annotated[str, Form()] = "",
) -> RedirectResponse:
    def act() -> str:
        p = projects.create_project(
            db,
            me,
            enterprise_id=enterprise_id,
            name=name.strip(),
            description=description.strip(),
            allocation_units=_pfh(allocation_pfh, "allocation_pfh"),
        )
        if approve:
            p = projects.approve_project(db, me, p.id)
        return f"Project {p.name} created ({p.status.value}); its id is {p.id}."

    return _attempt(request, db, f"/ops/enterprises/{enterprise_id}#projects", act)


@router.post("/projects/{project_id}/allocation")
def set_allocation(
    request: Request,
    db: Db,
    me: Operator,
    project_id: uuid.UUID,
    allocation_pfh: Text = "",
) -> RedirectResponse:
    project = projects.get_project(db, me, project_id)
    back = f"/ops/enterprises/{project.enterprise_id}#projects"

    def act() -> str:
        p = ledger.allocate(db, me, project, _pfh(allocation_pfh, "allocation_pfh"))
        if p.allocation_units is None:
            return f"Project {p.name} has no allocation limit."
        return f"Project {p.name} allocated {allocation_pfh.strip()} PFlop·h."

    return _attempt(request, db, back, act)


@router.post("/enterprises/{enterprise_id}/capacity")
def set_capacity(
    request: Request,
    db: Db,
    me: Operator,
    enterprise_id: uuid.UUID,
    capacity_cap_pflops: Text = "",
) -> RedirectResponse:
    def act() -> str:
        cap = _pflops_to_mflops(capacity_cap_pflops, "capacity_cap_pflops")
        ent = tenants.set_capacity_cap(db, me, enterprise_id, cap)
        if cap is None:
            return f"{ent.name} has no capacity cap."
        return f"{ent.name} may hold {capacity_cap_pflops.strip()} PFLOP/s at once."

    return _attempt(request, db, f"/ops/enterprises/{enterprise_id}", act)


@router.post("/enterprises/{enterprise_id}/status")
def set_status(
    request: Request,
    db: Db,
    me: Operator,
    enterprise_id: uuid.UUID,
    status: Annotated[str, Form()],
) -> Response:
    def act() -> str:
        if status not in ("active", "suspended"):
            raise InvalidInput("status", "must be 'active' or 'suspended'")
        ent = tenants.set_status(db, me, enterprise_id, EnterpriseStatus(status))
        if ent.status is EnterpriseStatus.SUSPENDED:
            return f"{ent.name} is suspended: it can submit no new jobs (running ones finish)."
        return f"{ent.name} is active."

    return _attempt(request, db, f"/ops/enterprises/{enterprise_id}", act)
