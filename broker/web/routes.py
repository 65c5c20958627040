"""Dashboard routes under /ops."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(prefix="/ops", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def index() -> str:
    return "<!doctype html><title>HPC Compute Broker</title><h1>HPC Compute Broker</h1>"
