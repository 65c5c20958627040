"""Log in with an operator token, log out; both audited."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from ..errors import Unauthenticated
from ..models import Role
from ..services import audit, tokens
from . import session as ops_session
from .deps import (
    Db,
    HtmlErrorRoute,
    current_operator,
    redirect,
    render,
    require_csrf,
    safe_next,
)

log = logging.getLogger(__name__)
router = APIRouter(route_class=HtmlErrorRoute)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    ops_session.load(request)  # an anonymous session carries the login form's CSRF token
    return render(request, None, "login.html", next=safe_next(next), error=None)


@router.post("/login", dependencies=[Depends(require_csrf)], response_model=None)
def login(
    request: Request,
    db: Db,
    token: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form()] = "/ops",
) -> HTMLResponse | RedirectResponse:
    limiter: Any = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:  # slows guessing; a RateLimited error answers 429
        limiter.check(f"ops-login:{request.client.host if request.client else '?'}")
    try:
        principal = tokens.authenticate(db, token.strip())
    except Unauthenticated:
        db.rollback()  # nothing written: end the transaction before the response
        return render(
            request,
            None,
            "login.html",
            401,
            next=safe_next(next),
            error="Unknown or revoked token (or expired).",
        )
    if principal.role is not Role.OPERATOR:
        log.info("refused dashboard login by %s", principal.actor)
        db.rollback()  # nothing written: end the transaction before the response
        return render(
            request,
            None,
            "login.html",
            403,
            next=safe_next(next),
            error="Only operator tokens may log in to the dashboard.",
        )
    ops_session.load(request).log_in(str(principal.token_id))
    audit.record(db, principal, "ops.login", "token", principal.token_id)
    db.commit()  # in the handler's thread, before the response (see deps.get_db)
    return redirect(request, safe_next(next))


@router.post("/logout", dependencies=[Depends(require_csrf)])
def logout(request: Request, db: Db) -> RedirectResponse:
    try:
        principal = current_operator(request, db)
    except HTTPException:  # already logged out or expired: just clear the cookie
        principal = None
    if principal is not None:
        audit.record(db, principal, "ops.logout", "token", principal.token_id)
    db.commit()
    fresh = ops_session.OpsSession(dirty=True)
    fresh.flash("info", "Logged out.")
    request.state.ops_session = fresh
    return redirect(request, "/ops/login")
