"""Jobs as tenants see them: submit (hold quota, route), list, read, cancel, output."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..errors import Conflict, IdempotencyMismatch, InvalidInput, NotFound
from ..models import Enterprise, EnterpriseStatus, Job, JobIO, JobStatus, JobTask
from ..schemas.jobs import JobCreate
from . import (
    audit,
    brokering,
    dependencies,
    job_spec,
    ledger,
    projects,
    scheduling,
    staging,
    tenants,
    webhooks,
    workspaces,
)
from .principal import Principal
from .scheduling import utcnow

MAX_OUTPUT_BYTES = 1 << 20
#: Warnings stored per job; a script with more neutralised lines gets a last one saying so.
MAX_WARNINGS = 50


@dataclass(frozen=True)
class SubmitResult:
    job: Job
    created: bool


def _request_hash(req: JobCreate) -> str:
    # Unset optional fields do not count: a field added to the spec later leaves the
    # hash of older requests, and so their Idempotency-Key replays, unchanged.
    body = req.model_dump(mode="json", exclude_none=True)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    """Validate, route, hold quota and store the job as ACCEPTED (the caller commits)."""
    project = projects.get_project(session, principal, project_id)
    principal.require_member_of(project.enterprise_id, "project")
    if len(req.script.encode()) > max_script_bytes:
        raise InvalidInput("script", f"is larger than {max_script_bytes} bytes")
    if "\x00" in req.script:
        raise InvalidInput("script", "must not contain NUL bytes")
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise InvalidInput("Idempotency-Key", "must be 1 to 200 characters")
    environment = job_spec.check_environment(req.environment)
    working_directory = job_spec.check_working_directory(req.working_directory, req.inputs or ())
    array = brokering.array_of(req)  # 422 naming `array`; each partition's size limit in routing
    if req.callback_url is not None:  # a name lookup (up to seconds): before the lock
        webhooks.check_url(req.callback_url, "callback_url")
    ledger.lock_enterprise(session, project.enterprise_id, project.id)  # this tenant's submits wait
    digest = _request_hash(req)
    if idempotency_key is not None:
        prior = session.scalar(
            select(Job).where(Job.project_id == project_id, Job.idempotency_key == idempotency_key)
        )
        if prior is not None:
            if prior.request_hash != digest:
                raise IdempotencyMismatch(
                    "Idempotency-Key was already used with a different request body"
                )
            return SubmitResult(prior, created=False)
    projects.require_active(project)
    depends_on = dependencies.check_request(session, project.enterprise_id, req.depends_on)
    ent = session.get(Enterprise, project.enterprise_id)
    if ent is None or ent.status is not EnterpriseStatus.ACTIVE:
        raise Conflict("the enterprise is suspended")
    cap = ent.capacity_cap_mflops
    left = None if cap is None else cap - ledger.capacity_in_use_mflops(session, ent.id)
    decision = brokering.choose(session, req, weights, capacity_left_mflops=left)
    tenants.require_submit_user(ent, decision.chosen.cluster)  # 409 now, not a rejection later
    part = decision.chosen.partition
    job = Job(
        id=uuid.uuid4(),
        enterprise_id=project.enterprise_id,
        project_id=project.id,
        submitted_by=principal.actor,
        idempotency_key=idempotency_key,
        request_hash=digest,
        name=req.name,
        script=_with_shebang(req.script),
        warnings=directive_warnings(req.script),
        nodes=req.nodes,
        ntasks=req.ntasks,
        cpus_per_task=req.cpus_per_task,
        memory_mb=req.memory_mb,
        gpus_per_node=req.gpus_per_node,
        time_limit_minutes=req.time_limit_minutes,
        environment=environment,
        working_directory=working_directory,
        qos=req.qos,
        reservation=req.reservation,
        cluster=decision.chosen.cluster.name,
        partition=part.name,
        routing={
            **decision.as_json(),
            "explicit": req.cluster is not None or req.partition is not None,
            "constraints": req.constraints or [],
        },
        state=JobStatus.ACCEPTED,
        rate_mflops=decision.chosen.rate_mflops,
        hold_units=brokering.hold_units(req, decision.chosen.rate_mflops),
        array=req.array,
        array_tasks=None if array is None else len(array.indices),
        array_width=1 if array is None else array.width,
        depends_on=depends_on,
    )
    session.add(job)
    session.flush()
    if array is not None:
        session.execute(
            insert(JobTask),
            [
                {
                    "job_id": job.id,
                    "index": i,
                    "state": JobStatus.ACCEPTED,
                    "native_state": "",
                    "reason": "",
                    "node_list": [],
                    "cancel_requested": False,
                }
                for i in array.indices
            ],
        )
    dependencies.record(session, job)
    staging.attach(session, job, project, req, workspace)  # inputs must exist: 422 naming one
    ledger.hold(session, job, project)
    audit.record(
        session,
        principal,
        "job.submit",
        "job",
        job.id,
        enterprise_id=job.enterprise_id,
        cluster=job.cluster,
        partition=job.partition,
    )
    return SubmitResult(job, created=True)


def _with_shebang(script: str) -> str:
    return script if script.startswith("#!") else "#!/bin/bash\n" + script


def directive_warnings(script: str) -> list[str]:
    """One sentence per directive line of ``script`` that the scheduler will not see.

    The adapters neutralise the same lines when they submit (resources, placement,
    priority and identity come from the spec, which is what is held and billed).
    """
    _, removed = sa_.neutralise_directives(script)
    warnings = [d.warning for d in removed[:MAX_WARNINGS]]
    if len(removed) > MAX_WARNINGS:
        warnings.append(f"... and {len(removed) - MAX_WARNINGS} more neutralised lines")
    return warnings


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
