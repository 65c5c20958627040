"""Job data movement: stage workspace inputs into a job's directory, collect outputs back.

``scheduling.begin_submission`` plans the stage-in (``plan_stage_in``) in its
transaction and the worker copies (``run_stage_in``) after the commit, before the job
reaches the scheduler (a failure rejects the job, releasing its hold, with the reason
"stage-in failed: ...");
once the job has ended and been settled, the worker collects its outputs
(``services.collection``, outside any transaction; a failure is recorded on the job
and never undoes the charge).

How bytes reach a cluster's scratch is a ``Mover``, chosen by the cluster's ``mover``
setting in the clusters file. ``shared-fs`` copies on a filesystem the worker mounts.
An SSH/rsync or Globus-style mover implements the same three methods and is added to
``mover_for``, its kind to ``ClusterConfig.mover`` and to the cluster's synced row.

The job directory belongs to the enterprise's POSIX user, who may also run other jobs
that write in it: everything there is hostile input. Files are reached only through
``safefs``, from the cluster's scratch root, component by component with
``O_NOFOLLOW`` and non-blocking opens of regular files only: a link or FIFO planted by
a job can neither redirect a staged input (written as root), nor smuggle a file from
outside into the workspace or the API's answers, nor stall the broker.
"""

from __future__ import annotations

import logging
import os
import shutil
import string
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..errors import InvalidInput, NotFound
from ..models import Cluster, Job, JobIO, JobTask, Project, Workspace
from ..schemas.jobs import JobCreate
from . import safefs, webhooks, workspaces
from .principal import Principal

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class StagingError(Exception):
    """Data could not be moved; the message is shown to the user in the job's reason."""


@dataclass(frozen=True)
class StageFile:
    """The workspace file ``relpath`` (of the workspace at ``source_root``), to place at
    the same ``relpath`` under the job's directory."""

    source_root: str
    relpath: str


class Mover(ABC):
    """Moves files between the broker's workspaces and a cluster's job directories.

    A job directory is given as a ``safefs.Trusted``: the cluster's scratch root (the
    broker's) and the path below it (the tenant's, never resolved through a link).
    """

    @abstractmethod
    def stage_in(self, where: safefs.Trusted, files: Sequence[StageFile], owner: str) -> int:
        """Copy ``files`` under the job's directory owned by POSIX ``owner``; the bytes copied."""

    @abstractmethod
    def match(self, where: safefs.Trusted, patterns: Sequence[str]) -> safefs.GlobResult:
        """The regular files under the job's directory matching ``patterns`` (relative
        paths), and what matched but is refused (links, FIFOs...)."""

    @abstractmethod
    def open(self, where: safefs.Trusted, relpath: str) -> tuple[int, os.stat_result]:
        """A descriptor of one regular file of the job's directory, and its ``fstat``."""


def owner_ids(user: str) -> tuple[int, int] | None:
    """The uid/gid to give staged files: only when running as root and the user exists."""
    if os.geteuid() != 0:
        return None
    found = sa_.posix_identity(user)  # remembered for a minute: once per job was 0.1 ms
    if found is None:
        return None  # embedded default: no such POSIX user here, the job runs as the broker
    return found.uid, found.gid


class SharedFsMover(Mover):
    """The job directory is on a filesystem the worker mounts (same path)."""

    def stage_in(self, where: safefs.Trusted, files: Sequence[StageFile], owner: str) -> int:
        ids = owner_ids(owner)
        total = 0
        for f in files:
            # Staged files are 0600 and their directories 0700, the job's user's: no
            # other tenant's job can read them, and a name a job planted (a link) is
            # replaced, never written through.
            src_fd, _ = safefs.open_regular(f.source_root, f.relpath)
            with os.fdopen(src_fd, "rb") as src:
                fd = safefs.create_file(where.root, where.join(f.relpath), owner=ids)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                    total += out.tell()
        return total

    def match(self, where: safefs.Trusted, patterns: Sequence[str]) -> safefs.GlobResult:
        return safefs.glob_files(where.root, where.below, patterns)

    def open(self, where: safefs.Trusted, relpath: str) -> tuple[int, os.stat_result]:
        return where.open_regular(relpath)


def mover_for(cluster: Cluster) -> Mover:
    """The cluster's mover; ``shared-fs`` is the only kind so far (see the module doc)."""
    return SharedFsMover()


def job_dir(job: Job, scratch_dir: str | None) -> safefs.Trusted:
    """The job's directory below the trusted scratch root of its cluster.

    Jobs live at ``<scratch>/<enterprise>/<job>``; when the cluster is gone from the
    configuration the scratch root is taken as the directory two levels up.
    """
    work = Path(job.work_dir)
    try:
        return safefs.beneath(scratch_dir or work.parent.parent, work)
    except ValueError:
        return safefs.beneath(work.parent.parent, work)


def scratch_of(session: Session, job: Job) -> str | None:
    return session.scalar(select(Cluster.scratch_dir).where(Cluster.name == job.cluster))


def mover_for_name(session: Session, cluster_name: str) -> Mover:
    cluster = session.scalar(select(Cluster).where(Cluster.name == cluster_name))
    return SharedFsMover() if cluster is None else mover_for(cluster)


_GLOB_CHARS = frozenset(string.ascii_letters + string.digits + "._-+*?[]!/=,@")


def check_glob(value: str, field: str) -> str:
    """An output glob relative to the job's directory (no '..', no absolute path)."""
    if not value or len(value) > 256:
        raise InvalidInput(field, "must be 1 to 256 characters")
    if value.startswith("/"):
        raise InvalidInput(field, "must be relative to the job's directory")
    if not set(value) <= _GLOB_CHARS:
        raise InvalidInput(field, "may use letters, digits, '._-+=,@/' and the wildcards '*?[]!'")
    if any(p in ("", ".", "..") for p in value.split("/")):
        raise InvalidInput(field, "must not contain '.', '..' or empty components")
    return value


def attach(
    session: Session,
    job: Job,
    project: Project,
    req: JobCreate,
    cfg: workspaces.WorkspaceConfig | None,
) -> None:
    """Validate the spec's inputs, outputs and callback_url and record them on the job."""
    io = io_for(session, job, project, req, cfg)
    if io is not None:
        session.add(io)


def io_for(
    session: Session,
    job: Job,
    project: Project,
    req: JobCreate,
    cfg: workspaces.WorkspaceConfig | None,
) -> JobIO | None:
    """The job's ``JobIO`` row (not added to the session), once its inputs, outputs and
    callback_url pass (``InvalidInput`` naming the field otherwise); None: it has none."""
    if req.inputs is None and req.outputs is None and req.callback_url is None:
        return None
    inputs = [workspaces.check_path(p, f"inputs[{i}]") for i, p in enumerate(req.inputs or [])]
    for i, p in enumerate(inputs):
        if p in inputs[:i]:
            raise InvalidInput(f"inputs[{i}]", f"{p!r} is listed twice")
    outputs = None
    if req.outputs is not None:
        outputs = [check_glob(p, f"outputs[{i}]") for i, p in enumerate(req.outputs)]
    if req.callback_url is not None:
        webhooks.check_syntax(req.callback_url, "callback_url")  # resolved before the lock
        webhooks.require_secret(session, project.id, "callback_url")
    if inputs or outputs is not None:
        if cfg is None:
            raise InvalidInput("inputs", "project workspaces are not configured here")
        workspaces.ensure(session, project, cfg.root, cfg.quota_bytes)
        present = workspaces.existing_paths(session, project.id, inputs)
        for i, p in enumerate(inputs):
            if p not in present:
                raise InvalidInput(f"inputs[{i}]", f"{p!r} is not in the project's workspace")
    return JobIO(
        job_id=job.id,
        project_id=project.id,
        inputs=inputs,
        outputs=outputs,
        callback_url=req.callback_url,
    )


def job_io(session: Session, principal: Principal, job_id: uuid.UUID) -> JobIO | None:
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.enterprise_id):
        raise NotFound("job not found")
    return session.get(JobIO, job_id)


def output_path(job: Job, raw: str, task: int | None) -> str:
    """An output file's path; an array's (``stdout_%a.txt``) for task ``task``."""
    if task is None:
        return raw
    return raw.replace("%A", job.scheduler_job_id or "").replace("%a", str(task))


def open_output(
    session: Session,
    principal: Principal,
    job_id: uuid.UUID,
    stream: str,
    *,
    task: int | None = None,
) -> tuple[int, os.stat_result] | None:
    """The job's stdout or stderr, opened safely: ``(fd, fstat)``, or None if it has none.

    An array's tasks each write their own: ``task`` names one (required for an array).
    The file is the job's to write: a link, a FIFO or a device there answers
    ``InvalidInput`` naming ``stream`` with the reason, never the bytes behind it.
    """
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.enterprise_id):
        raise NotFound("job not found")
    if stream not in ("stdout", "stderr"):
        raise InvalidInput("stream", "must be 'stdout' or 'stderr'")
    if job.array and task is None:
        raise InvalidInput("task", f"the job is an array of {job.array_tasks} tasks: name one")
    if not job.array and task is not None:
        raise InvalidInput("task", "the job is not an array")
    if task is not None and session.get(JobTask, (job.id, task)) is None:
        raise NotFound(f"job {job.id} has no task {task}")
    raw = job.stdout_path if stream == "stdout" else job.stderr_path
    raw = output_path(job, raw, task)
    if not raw or not job.work_dir:
        return None
    where = job_dir(job, scratch_of(session, job))
    try:
        rel = safefs.beneath(job.work_dir, raw).below
        return where.open_regular(rel)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return None  # an output path outside the job's directory: not the broker's to serve
    except safefs.UnsafeFile as exc:
        raise InvalidInput("stream", str(exc)) from exc


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class StagePlan:
    """What a job's stage-in copies: read in a transaction, carried out after it."""

    job_id: uuid.UUID
    where: safefs.Trusted
    files: list[StageFile]
    owner: str
    mover: Mover


def plan_stage_in(
    session: Session, job: Job, cluster: Cluster, posix_user: str, *, io: JobIO | None
) -> StagePlan | None:
    """The job's inputs to copy (``None``: it has none); ``StagingError`` if one is gone.
    ``io``: the job's JobIO row (None: it has none)."""
    if io is None or not io.inputs:
        return None
    ws = session.get(Workspace, job.project_id)
    if ws is None:
        raise StagingError("the project has no workspace")
    files = []
    for i, rel in enumerate(io.inputs):
        try:
            workspaces.get_file(session, ws, rel)
        except NotFound as exc:
            raise StagingError(f"inputs[{i}] {rel!r} is no longer in the workspace") from exc
        files.append(StageFile(ws.root_dir, rel))
    where = job_dir(job, cluster.scratch_dir)
    return StagePlan(job.id, where, files, posix_user, mover_for(cluster))


def run_stage_in(plan: StagePlan) -> dict[str, Any]:
    """Copy the planned files, outside any transaction (large inputs take a while and
    must not hold the database: on SQLite every writer would wait). Returns the outcome
    to record, or raises ``StagingError`` (``scheduling.fail_stage_in`` cleans up)."""
    try:
        copied = plan.mover.stage_in(plan.where, plan.files, plan.owner)
    except (StagingError, OSError, safefs.UnsafeFile) as exc:
        raise StagingError(str(exc)) from exc
    return {"state": "done", "files": len(plan.files), "bytes": copied, "at": now_iso()}


def record_stage_in(session: Session, job_id: uuid.UUID, outcome: dict[str, Any]) -> None:
    io = session.get(JobIO, job_id)
    if io is not None:
        io.stage_in = outcome


def failed_stage_in(error: str) -> dict[str, Any]:
    return {"state": "failed", "error": error[:500], "at": now_iso()}
