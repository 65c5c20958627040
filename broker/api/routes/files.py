"""Project workspace files: streamed upload and download, listing, delete."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from ...db import session_scope
from ...errors import NotFound
from ...models import Workspace
from ...schemas.common import NO_NUL
from ...schemas.workspaces import WorkspaceFileRead, WorkspaceListing
from ...services import workspaces
from ...services.principal import Principal
from ...services.workspaces import WorkspaceConfig
from .. import ranges
from ..deps import CurrentPrincipal, SessionDep, SettingsDep
from ..limits import BodySizeLimit

router = APIRouter(prefix="/projects", tags=["files"])

T = TypeVar("T")
_UPLOAD = re.compile(r"^/api/v1/projects/[^/]+/files/.")
_FLUSH_BYTES = 1 << 20


class BodySizeLimitExceptUploads(BodySizeLimit):
    """The request body limit, except for workspace uploads: those stream to disk,
    bounded by the project's storage quota instead of being buffered in memory."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "PUT" and _UPLOAD.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _run(fn: Callable[..., T], *args: object) -> T:
    return await anyio.to_thread.run_sync(fn, *args)


def _too_large(exc: workspaces.StorageQuotaExceeded) -> HTTPException:
    return HTTPException(status_code=413, detail=f"StorageQuotaExceeded: {exc.detail}")


def _room(
    factory: sessionmaker[Session],
    me: Principal,
    project_id: uuid.UUID,
    rel: str,
    cfg: WorkspaceConfig,
) -> int:
    with session_scope(factory) as s:
        project = workspaces.writable_project(s, me, project_id)
        return workspaces.room_for(s, workspaces.ensure(s, project, cfg.root, cfg.quota_bytes), rel)


def _commit(
    factory: sessionmaker[Session],
    me: Principal,
    project_id: uuid.UUID,
    rel: str,
    cfg: WorkspaceConfig,
    upload: workspaces.TempUpload,
) -> tuple[WorkspaceFileRead, bool]:
    with session_scope(factory) as s:
        project = workspaces.writable_project(s, me, project_id)
        ws = workspaces.ensure(s, project, cfg.root, cfg.quota_bytes)
        created = not workspaces.existing_paths(s, project.id, [rel])
        row = workspaces.place(s, ws, rel, upload, actor=me.actor)
        workspaces.record_upload(s, me, ws, row)
        return WorkspaceFileRead.model_validate(row), created


@router.put(
    "/{project_id}/files/{path:path}",
    status_code=201,
    responses={200: {"model": WorkspaceFileRead, "description": "An existing file replaced."}},
)
async def put_file(
    project_id: uuid.UUID,
    path: str,
    request: Request,
    response: Response,
    me: CurrentPrincipal,
    settings: SettingsDep,
) -> WorkspaceFileRead:
    """Store the request body at ``path`` (201 new, 200 replaced); streamed to disk.

    The body is the file's bytes: a ``multipart/form-data`` (browser form) body is
    refused with 415 rather than stored with its boundaries as the file.
    """
    rel = workspaces.check_path(path)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype.startswith("multipart/") or ctype == "application/x-www-form-urlencoded":
        raise HTTPException(
            415,
            f"content-type {ctype!r}: send the file's bytes as the "
            "body (e.g. application/octet-stream, curl --data-binary @file or -T file)",
        )
    cfg = WorkspaceConfig.of(settings.data_dir, settings.workspace_quota_bytes)
    factory = request.app.state.session_factory
    room = await _run(_room, factory, me, project_id, rel, cfg)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > room:
        raise HTTPException(
            413,
            f"StorageQuotaExceeded: {rel}: {declared} bytes exceed the "
            f"{room} bytes left of the project's storage quota",
        )
    upload = await _run(workspaces.TempUpload, cfg.root)
    try:
        pending: list[bytes] = []
        held = 0
        async for chunk in request.stream():
            if upload.size_bytes + held + len(chunk) > room:
                raise HTTPException(
                    413,
                    f"StorageQuotaExceeded: {rel}: the upload exceeds the "
                    f"{room} bytes left of the project's storage quota",
                )
            pending.append(chunk)
            held += len(chunk)
            if held >= _FLUSH_BYTES:
                await _run(upload.write, b"".join(pending))
                pending, held = [], 0
        if pending:
            await _run(upload.write, b"".join(pending))
        try:
            row, created = await _run(_commit, factory, me, project_id, rel, cfg, upload)
        except workspaces.StorageQuotaExceeded as exc:  # a concurrent upload took the room
            raise _too_large(exc) from exc
    finally:
        await _run(upload.discard)  # a no-op once the file was moved into place
    response.status_code = 201 if created else 200
    return row


def _workspace(session: Session, me: Principal, project_id: uuid.UUID) -> Workspace:
    project = workspaces.readable_project(session, me, project_id)
    ws = session.get(Workspace, project.id)
    if ws is None:
        raise NotFound("the project's workspace is empty")
    return ws


@router.get(
    "/{project_id}/files/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 416: {}},
)
def get_file(
    project_id: uuid.UUID, path: str, request: Request, session: SessionDep, me: CurrentPrincipal
) -> Response:
    """The file's bytes, streamed; ``Range`` requests get 206. ETag is its sha256."""
    rel = workspaces.check_path(path)
    row, fd, st = workspaces.open_file(session, _workspace(session, me, project_id), rel)
    etag = f'"{row.sha256}"'
    rng = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != etag:
        rng = None  # the client's copy is of another version: send it all
    return ranges.file_response(
        fd,
        st,
        rng,
        "application/octet-stream",
        {"ETag": etag, "X-Checksum-Sha256": row.sha256},
    )


@router.delete("/{project_id}/files/{path:path}", status_code=204)
def delete_file(
    project_id: uuid.UUID, path: str, session: SessionDep, me: CurrentPrincipal
) -> Response:
    rel = workspaces.check_path(path)
    workspaces.writable_project(session, me, project_id)
    workspaces.delete_file(session, me, _workspace(session, me, project_id), rel)
    session.commit()
    return Response(status_code=204)


@router.get("/{project_id}/files")
def list_files(
    project_id: uuid.UUID,
    session: SessionDep,
    me: CurrentPrincipal,
    settings: SettingsDep,
    prefix: Annotated[str, Query(max_length=1024, pattern=NO_NUL)] = "",
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=1024, pattern=NO_NUL)] = None,
) -> WorkspaceListing:
    """One page (``limit``, then ``cursor=next_cursor``) of the files under ``prefix``
    with sizes and sha256, and the workspace's use of its quota."""
    project = workspaces.readable_project(session, me, project_id)
    ws = session.get(Workspace, project.id)
    rows, nxt = (
        ([], None)
        if ws is None
        else workspaces.list_files(session, ws, prefix, limit=limit, after=cursor)
    )
    return WorkspaceListing(
        project_id=project.id,
        prefix=prefix,
        items=[WorkspaceFileRead.model_validate(r) for r in rows],
        next_cursor=nxt,
        used_bytes=workspaces.used_bytes(session, project.id),
        quota_bytes=settings.workspace_quota_bytes if ws is None else ws.quota_bytes,
    )
