"""What every dashboard route needs: the unit of work, the operator, CSRF, templates, responses."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session

from .. import errors
from ..models import ApiToken, Role
from ..request_db import get_db
from ..services import reports, tokens
from ..services.principal import Principal
from ..units import UNITS_PER_PFH
from . import session as ops_session

log = logging.getLogger(__name__)
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


Db = Annotated[Session, Depends(get_db)]


def safe_next(target: str | None) -> str:
    """Only paths inside the dashboard: no open redirect through ``?next=``."""
    if target and target.startswith("/ops") and not target.startswith("//"):
        return target
    return "/ops"


def _to_login(request: Request) -> HTTPException:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(
        status_code=303,
        detail="log in with an operator token",
        headers={"Location": f"/ops/login?next={quote(here)}", "Cache-Control": "no-store"},
    )


def current_operator(request: Request, db: Db) -> Principal:
    """The logged-in operator, re-checked against the token row on every request."""
    sess = ops_session.load(request)
    if not sess.logged_in(time.time()) or sess.token_id is None:
        raise _to_login(request)
    try:
        row = db.get(ApiToken, uuid.UUID(sess.token_id))
    except ValueError:
        row = None
    if row is None or not tokens.usable(row) or row.role is not Role.OPERATOR:
        raise _to_login(request)
    principal = Principal(token_id=row.id, name=row.name, role=row.role, enterprise_id=None)
    request.state.ops_principal = principal
    return principal


Operator = Annotated[Principal, Depends(current_operator)]


async def require_csrf(request: Request) -> None:
    """Every POST carries the session's CSRF token in its form (``csrf``)."""
    form = await request.form()
    token = form.get("csrf")
    if not isinstance(token, str) or not ops_session.load(request).check_csrf(token):
        raise HTTPException(403, "the form's CSRF token is missing or stale; reload the page")


def fmt_pfh(units: int | None) -> str:
    if units is None:
        return "—"
    value = units / UNITS_PER_PFH
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    if abs(value) >= 0.01:
        return f"{value:,.3f}"
    return f"{value:.3g}"


def fmt_dt(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def fmt_duration(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


@cache
def templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a missing variable is a bug, not an empty string
    )
    tpl = Jinja2Templates(env=env)
    tpl.env.filters.update(
        pfh=fmt_pfh,
        dt=fmt_dt,
        duration=fmt_duration,
        tflops=lambda m: "—" if m is None else f"{m / 1e6:,.2f}",
        pflops=lambda m: "—" if m is None else f"{m / 1e9:,.3f}",
        pct=lambda f: f"{100 * f:.1f} %",
        num=lambda v: "—" if v is None else f"{v:,.1f}",
    )
    return tpl


def secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def render(
    request: Request, db: Session | None, name: str, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    """A page with the layout's context: CSRF token, flashes, operator, pending count."""
    sess = ops_session.load(request)
    principal: Principal | None = getattr(request.state, "ops_principal", None)
    base = {
        "csrf": sess.csrf,
        "flashes": sess.pop_flashes(),
        "operator": principal,
        "pending": reports.pending_count(db) if db is not None and principal else 0,
        "path": request.url.path,
    }
    response = templates().TemplateResponse(request, name, {**base, **ctx}, status_code=status_code)
    ops_session.save(request, response, refresh=principal is not None)
    return secure(response)  # type: ignore[return-value]


def redirect(request: Request, url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    ops_session.save(request, response)
    secure(response)
    return response


_STATUS: list[tuple[type[errors.BrokerError], int, str]] = [
    (errors.NotFound, 404, "Not found"),
    (errors.PermissionDenied, 403, "Not allowed"),
    (errors.InvalidInput, 422, "Invalid request"),
    (errors.Conflict, 409, "Conflict"),
]


class HtmlErrorRoute(APIRoute):
    """Domain errors on a page answer an HTML page, not the API's JSON error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except errors.RateLimited:
                raise
            except errors.BrokerError as exc:
                status, title = next(
                    ((code, t) for cls, code, t in _STATUS if isinstance(exc, cls)),
                    (400, "Bad request"),
                )
                return render(request, None, "error.html", status, title=title, message=exc.detail)

        return route
