"""Dashboard routes under /ops: login, pages, actions, and the dashboard's own static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from . import actions, admin, auth, job_page, pages

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"ops.css": "text/css", "ops.js": "text/javascript"}
router = APIRouter(include_in_schema=False)
for sub in (auth.router, pages.router, job_page.router, actions.router, admin.router):
    router.include_router(sub, prefix="/ops")


@router.get("/ops/static/{name}")
def static(name: str) -> FileResponse:
    """The dashboard's own CSS and JS (charts are inline SVG and need no asset)."""
    media = STATIC_FILES.get(name)
    if media is None:
        raise HTTPException(404, "no such file")
    return FileResponse(
        STATIC_DIR / name, media_type=media, headers={"Cache-Control": "public, max-age=3600"}
    )
