"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(session: SessionDep) -> Any:
    from ...services import clusters

    session.execute(text("SELECT 1"))
    reach = {c.name: c.status.value for c in clusters.list_clusters(session)}
    return JSONResponse({"status": "ok", "database": "ok", "clusters": reach})
