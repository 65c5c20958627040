"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(request: Request, session: SessionDep) -> Any:
    """Database and clusters; ``local_jobs_run_as`` says who local jobs run as."""
    from ...config import local_jobs_run_as
    from ...services import clusters

    try:
        session.execute(text("SELECT 1"))
        reach = {c.name: c.status.value for c in clusters.list_clusters(session)}
    except SQLAlchemyError as exc:  # not ready: load balancers stop sending traffic here
        session.rollback()
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
        body = {"status": "unavailable", "database": f"error: {detail}", "clusters": {}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    run_as = local_jobs_run_as(request.app.state.adapters.configs.values())
    ready: dict[str, Any] = {"status": "ok", "database": "ok", "clusters": reach}
    ready["local_jobs_run_as"] = run_as
    return JSONResponse(ready)
