"""Jobs: list, read, cancel, output."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse

from ...models import JobStatus
from ...schemas.common import NO_NUL
from ...schemas.jobs import JobDetail, JobPage, LostResolution, TaskPage, TaskRead
from ...services import jobs, staging
from .. import ranges, views
from ..deps import CurrentPrincipal, SessionDep

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("")
def list_jobs(
    session: SessionDep,
    me: CurrentPrincipal,
    project_id: uuid.UUID | None = None,
    enterprise_id: uuid.UUID | None = None,
    state: JobStatus | None = None,
    cluster: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
) -> JobPage:
    """The caller's jobs, newest first. Each item is the job as ``GET /jobs/{id}`` shows
    it less ``script``, ``inputs`` and ``outputs`` (up to 64 KiB and 1000 paths a job):
    a page of 500 stays small."""
    rows, nxt = jobs.list_jobs(
        session,
        me,
        project_id=project_id,
        enterprise_id=enterprise_id,
        state=state,
        cluster=cluster,
        limit=limit,
        cursor=cursor,
    )
    return JobPage(items=[views.job(j) for j in rows], next_cursor=nxt)


@router.get("/{job_id}")
def get_job(job_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal) -> JobDetail:
    """The job: its state and charge, and the spec as submitted (script, environment,
    working_directory, inputs, outputs, qos, reservation, constraints)."""
    job = jobs.get_job(session, me, job_id)
    return views.job_detail(job, jobs.io_of(session, job))


@router.post("/{job_id}/cancel", status_code=202)
def cancel_job(job_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal) -> JobDetail:
    job = jobs.cancel(session, me, job_id)
    io = jobs.io_of(session, job)  # read before the commit: after it, a new transaction
    session.commit()
    return views.job_detail(job, io)


@router.post("/{job_id}/resolve")
def resolve_lost(
    job_id: uuid.UUID, body: LostResolution, session: SessionDep, me: CurrentPrincipal
) -> JobDetail:
    """Operators: resolve a ``lost`` job (its hold was released when it was lost):
    charge it ``charge_elapsed_s`` on ``nodes`` from the evidence, or close it uncharged.
    409 unless the job is lost and unresolved."""
    job = jobs.resolve_lost(
        session, me, job_id, elapsed_s=body.charge_elapsed_s, nodes=body.nodes, memo=body.memo
    )
    io = jobs.io_of(session, job)
    session.commit()
    return views.job_detail(job, io)


@router.get("/{job_id}/tasks")
def list_tasks(
    job_id: uuid.UUID,
    session: SessionDep,
    me: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Annotated[int | None, Query(ge=-1)] = None,
) -> TaskPage:
    """A job array's tasks by index: state, exit code, nodes, times and each task's
    charge (they add up to the job's). ``cursor``: a page's ``next_cursor``."""
    rows, nxt = jobs.list_tasks(session, me, job_id, limit=limit, after=cursor)
    return TaskPage(
        items=[views.task(t) for t in rows], next_cursor=None if nxt is None else str(nxt)
    )


@router.post("/{job_id}/tasks/{index}/cancel", status_code=202)
def cancel_task(
    job_id: uuid.UUID,
    index: Annotated[int, Path(ge=0)],
    session: SessionDep,
    me: CurrentPrincipal,
) -> TaskRead:
    """Cancel one task of an array; the others go on."""
    task = jobs.cancel_task(session, me, job_id, index)
    read = views.task(task)
    session.commit()
    return read


@router.get("/{job_id}/output", response_class=PlainTextResponse)
def job_output(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentPrincipal,
    stream: Literal["stdout", "stderr"] = "stdout",
    tail: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    task: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The output's last MiB (or ``tail`` lines); a ``Range`` request gets those bytes (206).

    Each task of an array writes its own: ``task`` names it (required for an array).
    The file is the job's to write: a link, FIFO or device there is a 422 naming
    ``stream`` with the reason, never the bytes behind it.
    """
    if tail is None and "range" in request.headers:
        opened = staging.open_output(session, me, job_id, stream, task=task)
        if opened is not None:
            fd, st = opened
            return ranges.file_response(
                fd, st, request.headers["range"], "text/plain; charset=utf-8", {}
            )
    text = jobs.read_output(session, me, job_id, stream=stream, tail_lines=tail, task=task)
    return PlainTextResponse(text, headers={"Accept-Ranges": "bytes"})
