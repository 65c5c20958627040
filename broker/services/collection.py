"""Stage-out: collect a finished job's stdout, stderr and output globs into its workspace.

Three steps, so that no copy ever runs inside a database transaction:

1. ``plan`` (short transaction): what to collect and how much room the project's
   storage quota leaves; the job is queued by ``mark_due`` when it is settled.
2. ``fetch`` (no transaction, a time limit): each file is opened through ``safefs``
   (no link followed, regular files only, non-blocking), sized by ``fstat`` *before*
   a byte is copied (a sparse file counts at its apparent size) and copied into a
   temporary file beside the workspaces, never more than was measured.
3. ``finish`` (short transaction): the copies are placed under the project's lock,
   the quota checked again, and the outcome recorded on the job (``/jobs/{id}/io``,
   and its reason when something was left behind).

A name that the upload API would refuse (control characters, backslashes...) is
refused here too, so nothing is stored that cannot be downloaded or deleted.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import BrokerError
from ..models import Job, JobIO, JobTask, Workspace
from . import safefs, staging, workspaces

log = logging.getLogger(__name__)

MAX_OUTPUT_FILES = 1000
_ACTOR = "system:stage-out"


@dataclass(frozen=True)
class Plan:
    job_id: uuid.UUID
    where: safefs.Trusted
    logs: list[str]
    patterns: list[str]
    tmp_root: Path
    room_bytes: int
    mover: staging.Mover


@dataclass
class Fetched:
    """What step 2 copied (``files``: workspace path → temporary copy) and what it refused."""

    files: dict[str, workspaces.TempUpload] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    quota_hit: bool = False

    def discard(self) -> None:
        for upload in self.files.values():
            upload.discard()


def mark_due(session: Session, job: Job) -> None:
    """Queue a settled job's stage-out (if it declared outputs)."""
    io = session.get(JobIO, job.id)
    if io is not None and io.outputs is not None and job.work_dir and not io.stage_out:
        io.collect_due = True


def due(session: Session, limit: int) -> list[uuid.UUID]:
    query = select(JobIO.job_id).where(JobIO.collect_due).order_by(JobIO.job_id).limit(limit)
    return list(session.scalars(query))


def plan(session: Session, job_id: uuid.UUID) -> Plan | None:
    """Step 1; None (and the job taken off the queue) when there is nothing to do."""
    io = session.get(JobIO, job_id)
    job = session.get(Job, job_id)
    ws = session.get(Workspace, io.project_id) if io is not None else None
    if io is None or job is None or io.outputs is None or not job.work_dir or ws is None:
        if io is not None:
            io.collect_due = False
            if io.outputs is not None and not io.stage_out:
                io.stage_out = _outcome([], 0, ["the project has no workspace"])
        return None
    scratch = staging.scratch_of(session, job)
    where = staging.job_dir(job, scratch)
    logs = []
    raws = [job.stdout_path, job.stderr_path]
    if job.array:  # each task's own logs
        indices = session.scalars(select(JobTask.index).where(JobTask.job_id == job.id))
        raws = [staging.output_path(job, r, i) for i in indices for r in raws]
    for raw in raws:
        try:
            logs.append(safefs.beneath(job.work_dir, raw).below if raw else "")
        except ValueError:
            continue  # written outside the job's directory: not the broker's to collect
    io.stage_out = {"state": "collecting", "at": staging.now_iso()}
    return Plan(
        job_id=job.id,
        where=where,
        logs=[rel for rel in logs if rel],
        patterns=list(io.outputs),
        tmp_root=Path(ws.root_dir).parent,
        room_bytes=workspaces.room_for(session, ws, f"jobs/{job.id}/"),
        mover=staging.mover_for_name(session, job.cluster),
    )


def fetch(plan: Plan, *, timeout_s: float) -> Fetched:
    """Step 2: copy the job's files into temporary files, within the room and the time."""
    out = Fetched()
    deadline = time.monotonic() + timeout_s
    found: list[str] = []
    if plan.patterns:
        try:
            matched = plan.mover.match(plan.where, plan.patterns)
            found = matched.files
            out.errors += matched.refused[:20]
            out.errors += [f"outputs {p!r} matched no file" for p in matched.unmatched[:20]]
        except (safefs.UnsafeFile, safefs.WalkLimit, OSError) as exc:
            out.errors.append(f"outputs: {exc}")
    names = list(dict.fromkeys(plan.logs + found))
    if len(names) > MAX_OUTPUT_FILES:
        out.errors.append(f"only the first {MAX_OUTPUT_FILES} of {len(names)} files were collected")
    room = plan.room_bytes
    for rel in names[:MAX_OUTPUT_FILES]:
        dest = f"jobs/{plan.job_id}/{rel}"
        try:
            workspaces.check_path(dest, "outputs")
        except BrokerError as exc:
            out.errors.append(f"{rel!a}: name refused ({exc.detail})")
            continue
        try:
            fd, st = plan.mover.open(plan.where, rel)
        except FileNotFoundError:
            continue  # e.g. a job that wrote no stderr
        except (safefs.UnsafeFile, OSError) as exc:
            out.errors.append(f"{rel}: {exc}")
            continue
        with os.fdopen(fd, "rb") as src:
            if st.st_size > room:
                out.errors.append(
                    f"workspace quota exceeded at {rel}: {st.st_size} bytes, "
                    f"{room} bytes of the project's storage quota free"
                )
                out.quota_hit = True
                break
            upload = workspaces.TempUpload(plan.tmp_root)
            try:
                _copy(src, upload, st.st_size, deadline)
            except (OSError, TimeoutError) as exc:
                upload.discard()
                out.errors.append(f"{rel}: {exc}")
                if isinstance(exc, TimeoutError):
                    break
                continue
            out.files[dest] = upload
            room -= upload.size_bytes
    return out


def _copy(src: Any, upload: workspaces.TempUpload, size: int, deadline: float) -> None:
    """At most ``size`` bytes (what was measured: a file that grows is cut there)."""
    left = size
    while left > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("stage-out time limit reached")
        chunk = src.read(min(safefs.CHUNK_BYTES, left))
        if not chunk:
            break
        upload.write(chunk)
        left -= len(chunk)


def finish(session: Session, plan: Plan, fetched: Fetched) -> None:
    """Step 3: place the copies (quota re-checked under the project's lock), record it."""
    io = session.get(JobIO, plan.job_id)
    job = session.get(Job, plan.job_id)
    ws = session.get(Workspace, io.project_id) if io is not None else None
    if io is None or job is None or ws is None:
        fetched.discard()
        return
    files: list[str] = []
    total = 0
    errors = list(fetched.errors)
    for dest, upload in fetched.files.items():
        try:
            row = workspaces.place(session, ws, dest, upload, actor=_ACTOR, job_id=job.id)
        except workspaces.StorageQuotaExceeded as exc:
            errors.append(f"workspace quota exceeded at {dest}: {exc.detail}")
            break
        except (BrokerError, OSError) as exc:
            errors.append(f"{dest}: {exc}")
            continue
        files.append(row.path)
        total += row.size_bytes
    fetched.discard()
    record(session, io, job, _outcome(files, total, errors))


def record(session: Session, io: JobIO, job: Job, result: dict[str, Any]) -> None:
    io.stage_out, io.collect_due = result, False
    if result.get("error"):
        note = f"stage-out {result['state']}: {result['error']}"
        job.reason = (f"{job.reason}; {note}" if job.reason else note)[:1000]


def failed(session: Session, job_id: uuid.UUID, error: str) -> None:
    """Give up on a job's stage-out (an unexpected error), so it leaves the queue."""
    io = session.get(JobIO, job_id)
    job = session.get(Job, job_id)
    if io is not None and job is not None:
        record(session, io, job, _outcome([], 0, [error]))


def _outcome(files: list[str], total: int, errors: list[str]) -> dict[str, Any]:
    state = "done" if not errors else ("partial" if files else "failed")
    return {
        "state": state,
        "files": files,
        "bytes": total,
        "error": "; ".join(errors)[:500],
        "at": staging.now_iso(),
    }
