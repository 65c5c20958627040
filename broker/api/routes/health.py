"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(session: SessionDep) -> Any:
    from ...services import clusters

    try:
        session.execute(text("SELECT 1"))
        reach = {c.name: c.status.value for c in clusters.list_clusters(session)}
    except SQLAlchemyError as exc:  # not ready: load balancers stop sending traffic here
        session.rollback()
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
        body = {"status": "unavailable", "database": f"error: {detail}", "clusters": {}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ok", "database": "ok", "clusters": reach})
