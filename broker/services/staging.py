"""Job data movement: stage workspace inputs into a job's directory, collect outputs back.

``scheduling.begin_submission`` plans the stage-in (``plan_stage_in``) in its
transaction and the worker copies (``run_stage_in``) after the commit, before the job
reaches the scheduler (a failure rejects the job, releasing its hold, with the reason
"stage-in failed: ...");
``scheduling.apply_info`` calls ``stage_out`` once the job has ended and been settled
(a failure is recorded on the job and never undoes the charge).

How bytes reach a cluster's scratch is a ``Mover``, chosen by the cluster's ``mover``
setting in the clusters file. ``shared-fs`` copies on a filesystem the worker mounts.
An SSH/rsync or Globus-style mover implements the same three methods and is added to
``mover_for``, its kind to ``ClusterConfig.mover`` and to the cluster's synced row.

The job directory belongs to the enterprise's POSIX user, who may also run other jobs
that write in it. Files are therefore opened component by component with
``O_NOFOLLOW`` (``open_beneath``): a symlink planted by a job can neither redirect a
staged input (written as root) nor smuggle a file from outside into the workspace.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
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

from ..errors import InvalidInput, NotFound
from ..models import Cluster, Job, JobIO, Project, Workspace
from ..schemas.jobs import JobCreate
from . import webhooks, workspaces
from .principal import Principal

log = logging.getLogger(__name__)

MAX_OUTPUT_FILES = 1000
_ACTOR = "system:stage-out"
_CHUNK = 1 << 20


class StagingError(Exception):
    """Data could not be moved; the message is shown to the user in the job's reason."""


@dataclass(frozen=True)
class StageFile:
    """A local file to place at ``relpath`` under the job's directory."""

    source: Path
    relpath: str


class Mover(ABC):
    """Moves files between the broker's workspaces and a cluster's job directories."""

    @abstractmethod
    def stage_in(self, work_dir: str, files: Sequence[StageFile], owner: str) -> int:
        """Copy ``files`` under ``work_dir`` owned by POSIX ``owner``; the bytes copied."""

    @abstractmethod
    def match(self, work_dir: str, patterns: Sequence[str]) -> list[str]:
        """Relative paths of the regular files under ``work_dir`` matching ``patterns``."""

    @abstractmethod
    def fetch(self, work_dir: str, relpath: str, sink: workspaces.TempUpload) -> None:
        """Stream one file of ``work_dir`` into ``sink``."""


def open_beneath(
    root: str, relpath: str, flags: int, *, owner: tuple[int, int] | None = None
) -> int:
    """Open ``root/relpath`` without following any symlink below ``root``.

    With ``os.O_CREAT`` in ``flags``, missing directories are created (owned by
    ``owner`` when given) and the file itself must not exist yet.
    """
    parts = relpath.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not flags & os.O_CREAT:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                if owner is not None:
                    os.fchown(nxt, *owner)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, 0o644, dir_fd=fd)
    finally:
        os.close(fd)


def _owner_ids(user: str) -> tuple[int, int] | None:
    """The uid/gid to give staged files: only when running as root and the user exists."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None  # embedded default: no such POSIX user here, the job runs as the broker
    return pw.pw_uid, pw.pw_gid


class SharedFsMover(Mover):
    """The job directory is on a filesystem the worker mounts (same path)."""

    def stage_in(self, work_dir: str, files: Sequence[StageFile], owner: str) -> int:
        ids = _owner_ids(owner)
        total = 0
        for f in files:
            # Replace an existing name (a retried attempt) by unlinking it, never by
            # writing through it: it could be a link a job planted.
            parent, _, name = f.relpath.rpartition("/")
            if parent:
                try:
                    pfd = open_beneath(work_dir, parent, os.O_RDONLY | os.O_DIRECTORY)
                except FileNotFoundError:
                    pfd = -1
            else:
                pfd = os.open(work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            if pfd >= 0:
                try:
                    os.unlink(name, dir_fd=pfd)
                except FileNotFoundError:
                    pass
                finally:
                    os.close(pfd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            fd = open_beneath(work_dir, f.relpath, flags, owner=ids)
            with os.fdopen(fd, "wb") as out, f.source.open("rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                total += out.tell()
                if ids is not None:
                    os.fchown(out.fileno(), *ids)
        return total

    def match(self, work_dir: str, patterns: Sequence[str]) -> list[str]:
        base = Path(work_dir)
        found: dict[str, None] = {}
        for pattern in patterns:
            for path in sorted(base.glob(pattern)):
                rel = path.relative_to(base).as_posix()
                try:
                    mode = path.lstat().st_mode
                except OSError:
                    continue
                if stat.S_ISREG(mode):
                    found[rel] = None
        return list(found)

    def fetch(self, work_dir: str, relpath: str, sink: workspaces.TempUpload) -> None:
        fd = open_beneath(work_dir, relpath, os.O_RDONLY)
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise StagingError(f"{relpath} is not a regular file")
            while chunk := src.read(_CHUNK):
                sink.write(chunk)


def mover_for(cluster: Cluster) -> Mover:
    """The cluster's mover; ``shared-fs`` is the only kind so far (see the module doc)."""
    return SharedFsMover()


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
    if req.inputs is None and req.outputs is None and req.callback_url is None:
        return
    inputs = [workspaces.check_path(p, f"inputs[{i}]") for i, p in enumerate(req.inputs or [])]
    for i, p in enumerate(inputs):
        if p in inputs[:i]:
            raise InvalidInput(f"inputs[{i}]", f"{p!r} is listed twice")
    outputs = None
    if req.outputs is not None:
        outputs = [check_glob(p, f"outputs[{i}]") for i, p in enumerate(req.outputs)]
    if req.callback_url is not None:
        webhooks.check_url(req.callback_url, "callback_url")
        webhooks.require_secret(session, project.id, "callback_url")
    if inputs or outputs is not None:
        if cfg is None:
            raise InvalidInput("inputs", "project workspaces are not configured here")
        workspaces.ensure(session, project, cfg.root, cfg.quota_bytes)
        present = workspaces.existing_paths(session, project.id, inputs)
        for i, p in enumerate(inputs):
            if p not in present:
                raise InvalidInput(f"inputs[{i}]", f"{p!r} is not in the project's workspace")
    session.add(
        JobIO(
            job_id=job.id,
            project_id=project.id,
            inputs=inputs,
            outputs=outputs,
            callback_url=req.callback_url,
        )
    )


def job_io(session: Session, principal: Principal, job_id: uuid.UUID) -> JobIO | None:
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.enterprise_id):
        raise NotFound("job not found")
    return session.get(JobIO, job_id)


def output_file(
    session: Session, principal: Principal, job_id: uuid.UUID, stream: str
) -> Path | None:
    """The job's stdout or stderr file, if it exists (for ranged reads)."""
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.enterprise_id):
        raise NotFound("job not found")
    raw = job.stdout_path if stream == "stdout" else job.stderr_path
    return Path(raw) if raw and Path(raw).is_file() else None


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class StagePlan:
    """What a job's stage-in copies: read in a transaction, carried out after it."""

    job_id: uuid.UUID
    work_dir: str
    files: list[StageFile]
    owner: str
    mover: Mover


def plan_stage_in(
    session: Session, job: Job, cluster: Cluster, posix_user: str
) -> StagePlan | None:
    """The job's inputs to copy (``None``: it has none); ``StagingError`` if one is gone."""
    io = session.get(JobIO, job.id)
    if io is None or not io.inputs:
        return None
    ws = session.get(Workspace, job.project_id)
    if ws is None:
        raise StagingError("the project has no workspace")
    files = []
    for i, rel in enumerate(io.inputs):
        try:
            _, source = workspaces.get_file(session, ws, rel)
        except Exception as exc:
            raise StagingError(f"inputs[{i}] {rel!r} is no longer in the workspace") from exc
        files.append(StageFile(source, rel))
    return StagePlan(job.id, job.work_dir or "", files, posix_user, mover_for(cluster))


def run_stage_in(plan: StagePlan) -> dict[str, Any]:
    """Copy the planned files, outside any transaction (large inputs take a while and
    must not hold the database: on SQLite every writer would wait). Returns the outcome
    to record, or raises ``StagingError`` (``scheduling.fail_stage_in`` cleans up)."""
    try:
        copied = plan.mover.stage_in(plan.work_dir, plan.files, plan.owner)
    except (StagingError, OSError) as exc:
        raise StagingError(str(exc)) from exc
    return {"state": "done", "files": len(plan.files), "bytes": copied, "at": _now()}


def record_stage_in(session: Session, job_id: uuid.UUID, outcome: dict[str, Any]) -> None:
    io = session.get(JobIO, job_id)
    if io is not None:
        io.stage_in = outcome


def failed_stage_in(error: str) -> dict[str, Any]:
    return {"state": "failed", "error": error[:500], "at": _now()}


def stage_out(session: Session, job: Job) -> None:
    """Collect stdout, stderr and the output globs into ``jobs/<job id>/`` of the workspace."""
    io = session.get(JobIO, job.id)
    if io is None or io.outputs is None or not job.work_dir:
        return
    try:
        result = _collect(session, job, io.outputs)
    except Exception as exc:  # never let a copy problem undo the settlement
        log.exception("stage-out of job %s failed", job.id)
        result = {"state": "failed", "files": [], "bytes": 0, "error": str(exc)[:500]}
    result["at"] = _now()
    io.stage_out = result
    if result.get("error"):
        note = f"stage-out {result['state']}: {result['error']}"
        job.reason = (f"{job.reason}; {note}" if job.reason else note)[:1000]


def _collect(session: Session, job: Job, patterns: list[str]) -> dict[str, Any]:
    ws = session.get(Workspace, job.project_id)
    if ws is None:
        raise StagingError("the project has no workspace")
    cluster = session.scalar(select(Cluster).where(Cluster.name == job.cluster))
    mover = SharedFsMover() if cluster is None else mover_for(cluster)
    logs = [
        Path(p).relative_to(job.work_dir).as_posix()
        for p in (job.stdout_path, job.stderr_path)
        if p and Path(p).is_relative_to(job.work_dir)
    ]
    names = list(dict.fromkeys(logs + mover.match(job.work_dir, patterns)))
    files: list[str] = []
    errors: list[str] = []
    total = 0
    for rel in names[:MAX_OUTPUT_FILES]:
        dest = f"jobs/{job.id}/{rel}"
        upload = workspaces.TempUpload(Path(ws.root_dir).parent)
        try:
            mover.fetch(job.work_dir, rel, upload)
            row = workspaces.place(session, ws, dest, upload, actor=_ACTOR, job_id=job.id)
        except FileNotFoundError:
            upload.discard()
            continue  # e.g. a job that wrote no stderr
        except workspaces.StorageQuotaExceeded as exc:
            upload.discard()
            errors.append(f"workspace quota exceeded at {rel}: {exc.detail}")
            break
        except (OSError, StagingError) as exc:
            upload.discard()
            errors.append(f"{rel}: {exc}")
            continue
        files.append(row.path)
        total += row.size_bytes
    if len(names) > MAX_OUTPUT_FILES:
        errors.append(f"only the first {MAX_OUTPUT_FILES} of {len(names)} files were collected")
    state = "done" if not errors else ("partial" if files else "failed")
    return {"state": state, "files": files, "bytes": total, "error": "; ".join(errors)[:500]}
