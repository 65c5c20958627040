"""Project workspaces: confined paths, streamed files with checksums, a storage quota.

Bytes live under ``<data_dir>/workspaces/<project id>/``; each file has a row
(``WorkspaceFile``) with its size and sha256, computed while it streams in. Uploads go
to a temporary file beside the workspaces (same filesystem) and are renamed into place
under the project's lock, after the quota is checked again, so a refused or broken
upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidInput, NotFound
from ..models import Project, Workspace, WorkspaceFile
from . import audit, projects, safefs
from .principal import Principal

MAX_PATH_CHARS = 1024
TMP_DIR = ".tmp"


@dataclass(frozen=True)
class WorkspaceConfig:
    """Where workspaces live and the per-project quota, from the API's settings."""

    root: Path
    quota_bytes: int

    @classmethod
    def of(cls, data_dir: Path, quota_bytes: int) -> WorkspaceConfig:
        return cls(root_of(data_dir), quota_bytes)


class StorageQuotaExceeded(Conflict):
    """The project's workspace would hold more than its quota (the API answers 413)."""


def root_of(data_dir: Path) -> Path:
    return data_dir.resolve() / "workspaces"


def check_path(value: str, field: str = "path") -> str:
    """A normalized relative POSIX path inside a workspace, or InvalidInput naming ``field``."""
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_PATH_CHARS:
        raise InvalidInput(field, f"must be at most {MAX_PATH_CHARS} characters")
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL bytes")
    if "\\" in value:
        raise InvalidInput(field, "must use '/' as the separator")
    if value.startswith("/"):
        raise InvalidInput(field, "must be relative to the workspace, not absolute")
    parts = value.split("/")
    if any(p in ("..", ".") for p in parts):
        raise InvalidInput(field, "must not contain '.' or '..' components")
    if any(not p for p in parts):
        raise InvalidInput(field, "must not contain empty components ('//' or a trailing '/')")
    if any(c < " " for c in value):
        raise InvalidInput(field, "must not contain control characters")
    if not value.isprintable():  # DEL, C1 controls, bytes that are not UTF-8, U+2028...
        raise InvalidInput(field, "must contain printable characters only")
    return str(PurePosixPath(value))


def ensure(session: Session, project: Project, root: Path, quota_bytes: int) -> Workspace:
    """The project's workspace row, kept in step with the API's settings."""
    ws = session.get(Workspace, project.id)
    pdir = str(root / str(project.id))
    if ws is None:
        ws = Workspace(project_id=project.id, root_dir=pdir, quota_bytes=quota_bytes)
        session.add(ws)
    elif ws.root_dir != pdir or ws.quota_bytes != quota_bytes:
        ws.root_dir, ws.quota_bytes = pdir, quota_bytes
    return ws


def resolve(ws: Workspace, rel: str, field: str = "path") -> Path:
    """The absolute path of ``rel``, refusing one that a symlink leads out of the workspace."""
    base = Path(ws.root_dir).resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base) or target == base:
        raise InvalidInput(field, "resolves outside the workspace (through a symlink)")
    return target


def readable_project(session: Session, principal: Principal, project_id: uuid.UUID) -> Project:
    return projects.get_project(session, principal, project_id)


def writable_project(session: Session, principal: Principal, project_id: uuid.UUID) -> Project:
    project = projects.get_project(session, principal, project_id)
    principal.require_member_of(project.enterprise_id, "project")
    return project


def used_bytes(session: Session, project_id: uuid.UUID, *, excluding: str | None = None) -> int:
    query = select(func.coalesce(func.sum(WorkspaceFile.size_bytes), 0)).where(
        WorkspaceFile.project_id == project_id
    )
    if excluding is not None:
        query = query.where(WorkspaceFile.path != excluding)
    return int(session.scalar(query) or 0)


def usage(session: Session, project_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int]]:
    """(files, bytes) stored in each project's workspace (absent: nothing stored)."""
    rows = session.execute(
        select(WorkspaceFile.project_id, func.count(), func.sum(WorkspaceFile.size_bytes))
        .where(WorkspaceFile.project_id.in_(project_ids))
        .group_by(WorkspaceFile.project_id)
    )
    return {pid: (int(n), int(size or 0)) for pid, n, size in rows}


def room_for(session: Session, ws: Workspace, rel: str) -> int:
    """Bytes that ``rel`` may hold now (its current size counts as free: it is replaced)."""
    return max(0, ws.quota_bytes - used_bytes(session, ws.project_id, excluding=rel))


def quota_error(ws: Workspace, rel: str, size_bytes: int, room: int) -> StorageQuotaExceeded:
    return StorageQuotaExceeded(
        f"{rel}: {size_bytes} bytes do not fit the project's storage quota of "
        f"{ws.quota_bytes} bytes ({room} bytes free)"
    )


class TempUpload:
    """A file being received: written in chunks, hashed and counted as it goes."""

    def __init__(self, root: Path) -> None:
        tmp = root / TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp, prefix="upload-")
        self.path = Path(name)
        self._fh = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size_bytes = 0
        self.placed = False

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self._hash.update(data)
        self.size_bytes += len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if not self.placed:
            self.path.unlink(missing_ok=True)


def place(
    session: Session,
    ws: Workspace,
    rel: str,
    upload: TempUpload,
    *,
    actor: str,
    job_id: uuid.UUID | None = None,
) -> WorkspaceFile:
    """Move a finished upload to ``rel`` under the project's lock, within the quota."""
    session.scalar(select(Project.id).where(Project.id == ws.project_id).with_for_update())
    room = room_for(session, ws, rel)
    if upload.size_bytes > room:
        raise quota_error(ws, rel, upload.size_bytes, room)
    target = resolve(ws, rel)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise Conflict(f"path: a parent of {rel!r} is a file") from exc
    if target.is_dir():
        raise Conflict(f"path: {rel!r} is a directory of the workspace")
    upload.finish()
    row = session.scalar(
        select(WorkspaceFile).where(
            WorkspaceFile.project_id == ws.project_id, WorkspaceFile.path == rel
        )
    )
    if row is None:
        row = WorkspaceFile(project_id=ws.project_id, path=rel)
        session.add(row)
    row.size_bytes, row.sha256 = upload.size_bytes, upload.sha256
    row.job_id, row.updated_by = job_id, actor
    session.flush()
    os.replace(upload.path, target)  # last: a failure above leaves the old file as it was
    upload.placed = True
    return row


def record_upload(
    session: Session, principal: Principal, ws: Workspace, row: WorkspaceFile
) -> None:
    project = session.get(Project, ws.project_id)
    audit.record(
        session,
        principal,
        "workspace.put",
        "project",
        ws.project_id,
        enterprise_id=None if project is None else project.enterprise_id,
        path=row.path,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
    )


def get_file(session: Session, ws: Workspace, rel: str) -> WorkspaceFile:
    row = session.scalar(
        select(WorkspaceFile).where(
            WorkspaceFile.project_id == ws.project_id, WorkspaceFile.path == rel
        )
    )
    if row is None:
        raise NotFound(f"path: {rel!r} is not in the workspace")
    return row


def open_file(
    session: Session, ws: Workspace, rel: str
) -> tuple[WorkspaceFile, int, os.stat_result]:
    """The file's row and a descriptor of its bytes, opened beneath the workspace's root
    without following any link (``NotFound`` if it is not a regular file there)."""
    row = get_file(session, ws, rel)
    try:
        fd, st = safefs.open_regular(ws.root_dir, rel)
    except safefs.UnsafeFile as exc:
        raise InvalidInput("path", str(exc)) from exc
    except OSError as exc:
        raise NotFound(f"path: {rel!r} is not in the workspace") from exc
    return row, fd, st


def delete_file(session: Session, principal: Principal, ws: Workspace, rel: str) -> None:
    row = get_file(session, ws, rel)
    target = Path(ws.root_dir) / rel
    session.delete(row)
    project = session.get(Project, ws.project_id)
    audit.record(
        session,
        principal,
        "workspace.delete",
        "project",
        ws.project_id,
        enterprise_id=None if project is None else project.enterprise_id,
        path=rel,
    )
    session.flush()
    parent_rel, _, name = rel.rpartition("/")
    try:
        dfd = safefs.open_dir(ws.root_dir, parent_rel)
    except (OSError, safefs.UnsafeFile):
        return
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dfd)
    base = Path(ws.root_dir).resolve()
    parent = target.parent
    while parent != base and parent.is_relative_to(base):
        try:
            parent.rmdir()  # only empty directories go
        except OSError:
            break
        parent = parent.parent


def list_files(
    session: Session, ws: Workspace, prefix: str | None, *, limit: int, after: str | None = None
) -> tuple[list[WorkspaceFile], str | None]:
    """One page of files under ``prefix`` in path order, and the cursor of the next."""
    query = select(WorkspaceFile).where(WorkspaceFile.project_id == ws.project_id)
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(WorkspaceFile.path.like(f"{escaped}%", escape="\\"))
    if after:
        query = query.where(WorkspaceFile.path > after)
    rows = list(session.scalars(query.order_by(WorkspaceFile.path).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].path if more and rows else None


def existing_paths(session: Session, project_id: uuid.UUID, paths: list[str]) -> set[str]:
    query = select(WorkspaceFile.path).where(
        WorkspaceFile.project_id == project_id, WorkspaceFile.path.in_(paths)
    )
    return set(session.scalars(query))
