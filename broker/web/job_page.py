"""The job page (``/ops/jobs/<id or unique prefix>``) and its output tail's refresh."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from ..errors import BrokerError, NotFound
from ..services import job_refs, jobs
from ..services.reports import job_detail
from .deps import Db, HtmlErrorRoute, Operator, redirect, render, secure

router = APIRouter(route_class=HtmlErrorRoute)
#: Lines of output the page shows (and each refresh fetches).
TAIL_LINES = 200
#: Fields shown in their own sections rather than in the spec table.
_OWN_SECTION = {"script", "routing", "environment", "warnings", "inputs", "outputs"}


def _tail(db: Db, me: Operator, job_id: uuid.UUID, stream: str, task: int | None) -> str:
    """The last lines, or "" (none yet; an array's tasks each have their own, in the
    tasks table's links; a file the job made unreadable is the API's to explain)."""
    try:
        return jobs.read_output(db, me, job_id, stream=stream, tail_lines=TAIL_LINES, task=task)
    except BrokerError:
        return ""


@router.get("/jobs/{job_id}", response_class=HTMLResponse, response_model=None)
def job(request: Request, db: Db, me: Operator, job_id: str, task: int | None = None) -> Response:
    """A job by id, or by the unique prefix the tables show (redirected to its full id).

    An array's output is per task: ``?task=N`` (default: its first task)."""
    found = job_refs.resolve(db, me, job_id)
    if job_id != str(found):
        return redirect(request, f"/ops/jobs/{found}")
    data = job_detail.job_page(db, found)
    if data is None:
        raise NotFound("job not found")
    if data.tasks is None:
        task = None
    elif task is None and data.tasks:
        task = data.tasks[0]["index"]
    return render(
        request,
        db,
        "job.html",
        d=data,
        j=data.job,
        spec={k: v for k, v in data.fields.items() if k not in _OWN_SECTION},
        stdout=_tail(db, me, found, "stdout", task),
        stderr=_tail(db, me, found, "stderr", task),
        tail_lines=TAIL_LINES,
        task=task,
    )


@router.get("/jobs/{job_id}/output", response_class=PlainTextResponse)
def job_output(
    db: Db,
    me: Operator,
    job_id: uuid.UUID,
    stream: Annotated[Literal["stdout", "stderr"], Query()] = "stdout",
    task: int | None = None,
) -> Response:
    """The output's last lines, for the page's refresh."""
    return secure(PlainTextResponse(_tail(db, me, job_id, stream, task)))
