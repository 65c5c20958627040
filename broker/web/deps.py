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


def fmt_dt_s(value: datetime | str | None) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


#: Display units of an amount, each 1000 times the next (1 GFlop·h = 1e-6 PFlop·h).
_AMOUNT_UNITS = [(1.0, "PFlop·h"), (1e-3, "TFlop·h"), (1e-6, "GFlop·h")]


def fmt_amount(pfh: float | int | None) -> str:
    """An amount in the unit that suits its size, three significant digits: ``15.5
    PFlop·h``, ``1.24 GFlop·h``, ``1,250 PFlop·h`` (never ``1.24e-06``)."""
    if pfh is None:
        return "—"
    value = float(pfh)
    if value == 0:
        return "0 PFlop·h"
    scale, unit = next(((s, u) for s, u in _AMOUNT_UNITS if abs(value) >= s), _AMOUNT_UNITS[-1])
    shown = value / scale
    if abs(shown) >= 100:
        text = f"{shown:,.0f}"
    elif abs(shown) >= 10:
        text = f"{shown:.1f}"
    elif abs(shown) >= 0.01:
        text = f"{shown:.2f}"
    else:
        text = f"{shown:.2g}"
    return f"{text} {unit}"


def fmt_units(units: int | None) -> str:
    """Ledger units as ``fmt_amount`` shows PFlop·h."""
    return fmt_amount(None if units is None else units / UNITS_PER_PFH)


def fmt_rate(mflops: int | None) -> str:
    """A capacity (PFLOP/s, TFLOP/s) by its size, three significant digits."""
    if mflops is None:
        return "—"
    tflops = mflops / 1e6
    if abs(tflops) >= 1000:
        return f"{tflops / 1000:.3g} PFLOP/s"
    return f"{tflops:.3g} TFLOP/s"


def fmt_field(value: Any, name: str = "") -> str:
    """Any field of a job as the page shows it (None, lists, dicts, times, amounts)."""
    if value is None or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return fmt_dt_s(value)
    if name.endswith("_pfh") and isinstance(value, int | float):
        return fmt_amount(value)
    if name.endswith("_s") and isinstance(value, int) and name != "elapsed_s":
        return fmt_duration(value)
    if name == "elapsed_s" and isinstance(value, int):
        return fmt_duration(value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt_field(v, str(k))}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(fmt_field(v, name) for v in value)
    return str(value)


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
    tpl.env.globals["units_per_pfh"] = UNITS_PER_PFH
    tpl.env.filters.update(
        pfh=fmt_pfh,
        amount=fmt_amount,
        units=fmt_units,
        rate=fmt_rate,
        field=fmt_field,
        dt_s=fmt_dt_s,
        duration_s=lambda s: "—" if s is None else fmt_duration(round(float(s))),
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
