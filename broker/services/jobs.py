"""Jobs as tenants see them: submit (hold quota, route), list, read, cancel, output."""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import InvalidInput, NotFound
from ..models import Job, JobIO, JobStatus, JobTask
from ..schemas.jobs import JobCreate
from . import audit, brokering, intake, ledger, scheduling, staging, workspaces
from .principal import Principal
from .scheduling import utcnow

MAX_OUTPUT_BYTES = 1 << 20


@dataclass(frozen=True)
class SubmitResult:
    job: Job
    created: bool


# The rules of a submission live in ``intake`` (one path for one job and for a batch).
directive_warnings = intake.directive_warnings
MAX_WARNINGS = intake.MAX_WARNINGS


def submit(
    session: Session,
    principal: Principal,
    project_id: uuid.UUID,
    req: JobCreate,
    *,
    idempotency_key: str | None,
    max_script_bytes: int,
    weights: brokering.Weights = brokering.Weights(),
    workspace: workspaces.WorkspaceConfig | None = None,
) -> SubmitResult:
    """Validate, route, hold quota and store one job as ACCEPTED (the caller commits):
    ``intake.accept`` with a batch of one."""
    prepared = intake.prepare(req, idempotency_key, max_script_bytes=max_script_bytes)
    item = intake.Submission(principal, project_id, req, idempotency_key, prepared)
    [out] = intake.accept(session, [item], weights=weights, workspace=workspace)
    if out.error is not None:
        raise out.error
    assert out.job is not None
    # intake inserts set-based (``bulk``): its Job stays out of the session. Callers of
    # this one-job path get the stored row, in the session, as the unit of work gave it.
    job = session.get(Job, out.job.id)
    assert job is not None
    return SubmitResult(job, out.created)


def get_job(session: Session, principal: Principal, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.enterprise_id):
        raise NotFound("job not found")
    return job


def io_of(session: Session, job: Job) -> JobIO | None:
    """The job's inputs, outputs and their movement (None: it asked for none)."""
    return session.get(JobIO, job.id)


def list_jobs(
    session: Session,
    principal: Principal,
    *,
    project_id: uuid.UUID | None = None,
    enterprise_id: uuid.UUID | None = None,
    state: JobStatus | None = None,
    cluster: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated by (created_at, id); tenants see only their own."""
    query = select(Job)
    if not principal.is_staff:
        query = query.where(Job.enterprise_id == principal.enterprise_id)
    if enterprise_id is not None:
        query = query.where(Job.enterprise_id == enterprise_id)
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    if state is not None:
        query = query.where(Job.state == state)
    if cluster is not None:
        query = query.where(Job.cluster == cluster)
    if cursor:
        at, last_id = _decode_cursor(cursor)
        query = query.where((Job.created_at < at) | ((Job.created_at == at) & (Job.id < last_id)))
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, _encode_cursor(rows[-1]) if more and rows else None


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(at).astimezone(UTC), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor", "is not a cursor this API returned") from exc


def cancel(session: Session, principal: Principal, job_id: uuid.UUID) -> Job:
    """Cancel a job: at once if it never reached a scheduler, else via the worker."""
    job = get_job(session, principal, job_id)
    if not principal.is_staff:
        principal.require_member_of(job.enterprise_id, "job")
    ledger.lock_enterprise(session, job.enterprise_id)  # the worker's submit takes it too
    session.refresh(job)
    if job.state.terminal:
        return job
    job.cancel_requested = True
    if scheduling.awaiting_submission(job) and job.submit_attempts == 0:
        scheduling.cancel_unsubmitted(session, job, "cancelled before submission", utcnow())
    audit.record(session, principal, "job.cancel", "job", job.id, enterprise_id=job.enterprise_id)
    return job


def resolve_lost(
    session: Session,
    principal: Principal,
    job_id: uuid.UUID,
    *,
    elapsed_s: int | None,
    nodes: list[str],
    memo: str,
) -> Job:
    """An operator resolves a lost job: charged ``elapsed_s`` on ``nodes`` from the
    evidence they have (accounting restored, a node's logs), or closed uncharged (None)."""
    principal.require_operator()
    job = get_job(session, principal, job_id)
    if not memo.strip():
        raise InvalidInput("memo", "a resolution needs a memo saying what the evidence is")
    ledger.lock_enterprise(session, job.enterprise_id)
    session.refresh(job)
    scheduling.resolve_lost(session, job, elapsed_s=elapsed_s, nodes=nodes, memo=memo, now=utcnow())
    audit.record(
        session, principal, "job.resolve_lost", "job", job.id,
        enterprise_id=job.enterprise_id, elapsed_s=elapsed_s, memo=memo,
    )  # fmt: skip
    return job


def tasks_of(session: Session, job: Job) -> list[JobTask]:
    """An array's tasks by index ([] for a plain job)."""
    if not job.array:
        return []
    return list(
        session.scalars(select(JobTask).where(JobTask.job_id == job.id).order_by(JobTask.index))
    )


def list_tasks(
    session: Session,
    principal: Principal,
    job_id: uuid.UUID,
    *,
    limit: int = 1000,
    after: int | None = None,
) -> tuple[list[JobTask], int | None]:
    """A job array's tasks by index, ``limit`` at a time after index ``after``."""
    job = get_job(session, principal, job_id)
    if not job.array:
        raise NotFound("the job is not an array: it has no tasks")
    query = select(JobTask).where(JobTask.job_id == job.id)
    if after is not None:
        query = query.where(JobTask.index > after)
    rows = list(session.scalars(query.order_by(JobTask.index).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].index if more and rows else None


def cancel_task(session: Session, principal: Principal, job_id: uuid.UUID, index: int) -> JobTask:
    """Cancel one task of an array; the others go on. Before the array reaches a
    scheduler the task is simply left out of it (the array ends cancelled, its whole hold
    released, when no task is left)."""
    job = get_job(session, principal, job_id)
    if not principal.is_staff:
        principal.require_member_of(job.enterprise_id, "job")
    ledger.lock_enterprise(session, job.enterprise_id)
    session.refresh(job)
    task = session.get(JobTask, (job.id, index)) if job.array else None
    if task is None:
        raise NotFound(f"job {job.id} has no task {index}")
    if task.state.terminal or job.state.terminal:
        return task
    task.cancel_requested = True
    if scheduling.awaiting_submission(job) and job.submit_attempts == 0:
        task.state, task.reason = JobStatus.CANCELLED, "cancelled by the user before submission"
        task.ended_at, task.charge_units = utcnow(), 0
        session.flush()
        if all(t.state.terminal for t in tasks_of(session, job)):
            job.cancel_requested = True
            scheduling.cancel_unsubmitted(
                session, job, "every task cancelled before submission", utcnow()
            )
    audit.record(
        session,
        principal,
        "job.cancel_task",
        "job",
        job.id,
        enterprise_id=job.enterprise_id,
        task=index,
    )
    return task


def read_output(
    session: Session,
    principal: Principal,
    job_id: uuid.UUID,
    *,
    stream: str = "stdout",
    tail_lines: int | None = None,
    task: int | None = None,
) -> str:
    """The last MiB of the job's stdout or stderr (or its last ``tail_lines`` lines).

    Read through ``staging.open_output``: never through a link, never from a FIFO.
    """
    opened = staging.open_output(session, principal, job_id, stream, task=task)
    if opened is None:
        return ""
    fd, st = opened
    with os.fdopen(fd, "rb") as fh:
        fh.seek(max(0, st.st_size - MAX_OUTPUT_BYTES))
        data = fh.read(MAX_OUTPUT_BYTES).decode(errors="replace")
    if tail_lines is not None:
        data = "".join(data.splitlines(keepends=True)[-tail_lines:])
    return data
