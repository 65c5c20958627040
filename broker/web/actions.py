"""The operator's actions (POST, CSRF-checked): approve, grant/adjust, drain/resume, cancel.

Each goes through the service that owns the rule, with the operator's ``Principal``,
so it is checked and audited as the same call over the API would be. A refused action
rolls back whatever the service began and comes back as a flash message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..errors import BrokerError, InvalidInput
from ..services import jobs, ledger, projects, slurm_sync, validation
from ..units import pfh_to_units
from . import session as ops_session
from .deps import Db, HtmlErrorRoute, Operator, redirect, require_csrf, safe_next

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_csrf)], route_class=HtmlErrorRoute)
Back = Annotated[str, Form()]


def _attempt(
    request: Request, db: Session, back: str, action: Callable[[], str]
) -> RedirectResponse:
    """Run ``action`` (which returns the success message); a refusal becomes an error flash.

    Either way the transaction ends here, in the handler's thread: committed, or rolled
    back. No lock outlives the handler (see ``deps.get_db``).
    """
    sess = ops_session.load(request)
    try:
        done = action()
        db.commit()
    except BrokerError as exc:
        db.rollback()
        sess.flash("error", exc.detail)
    except sa_.SchedulerError as exc:
        db.rollback()
        sess.flash("error", f"the scheduler refused: {exc}")
    else:
        sess.flash("info", done)
    return redirect(request, safe_next(back))


@router.post("/projects/{project_id}/approve")
def approve(
    request: Request, db: Db, me: Operator, project_id: uuid.UUID, back: Back = "/ops/projects"
) -> RedirectResponse:
    def act() -> str:
        project = projects.approve_project(db, me, project_id)
        configs = list(request.app.state.adapters.configs.values())
        pushed = slurm_sync.push_enterprise(db, configs, project.enterprise_id)
        failed = [f"{r.cluster}: {r.error}" for r in pushed if r.error]
        note = f" Slurm accounts not created on {'; '.join(failed)}." if failed else ""
        return f"Project {project.name} approved.{note}"

    return _attempt(request, db, back, act)


@router.post("/enterprises/{enterprise_id}/quota")
def change_quota(
    request: Request,
    db: Db,
    me: Operator,
    enterprise_id: uuid.UUID,
    action: Annotated[str, Form()],
    amount_pfh: Annotated[str, Form()],
    memo: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    back = f"/ops/enterprises/{enterprise_id}"

    def act() -> str:
        try:
            units = pfh_to_units(amount_pfh)
        except ValueError as exc:
            raise InvalidInput("amount_pfh", str(exc)) from exc
        if action == "grant":
            ledger.grant(db, me, enterprise_id, units, memo.strip())
        elif action == "adjust":
            ledger.adjust(db, me, enterprise_id, units, memo.strip())
        else:
            raise InvalidInput("action", "must be 'grant' or 'adjust'")
        verb = "Granted" if action == "grant" else "Adjusted the budget by"
        return f"{verb} {amount_pfh} PFlop·h."

    return _attempt(request, db, back, act)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    request: Request, db: Db, me: Operator, job_id: uuid.UUID, back: Back = "/ops/jobs"
) -> RedirectResponse:
    def act() -> str:
        job = jobs.cancel(db, me, job_id)
        if job.state.terminal:
            return f"Job {job.name} is {job.state.value}."
        return f"Cancel of {job.name} requested: the worker stops it on {job.cluster}."

    return _attempt(request, db, back, act)


@router.post("/clusters/{cluster}/nodes/{name}/drain")
def drain_node(
    request: Request,
    db: Db,
    me: Operator,
    cluster: str,
    name: str,
    reason: Annotated[str, Form(min_length=1, max_length=200)],
) -> RedirectResponse:
    def act() -> str:
        text = f"{reason.strip()} [ops:{me.name}]"
        validation.drain_node(db, request.app.state.adapters, me, cluster, name, text)
        return f"Node {name} drained."

    return _attempt(request, db, f"/ops/clusters/{cluster}", act)


@router.post("/clusters/{cluster}/nodes/{name}/resume")
def resume_node(
    request: Request,
    db: Db,
    me: Operator,
    cluster: str,
    name: str,
    reason: Annotated[str, Form(max_length=200)] = "",
) -> RedirectResponse:
    """Resume a node; a degraded one only with a stated reason (a forced, audited resume)."""

    def act() -> str:
        why = reason.strip()
        validation.resume_node(
            db, request.app.state.adapters, me, cluster, name, force=bool(why), reason=why
        )
        return f"Node {name} resumed" + (f" by force: {why}." if why else ".")

    return _attempt(request, db, f"/ops/clusters/{cluster}", act)
