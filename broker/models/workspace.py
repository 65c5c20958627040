"""Project workspaces: the files of a project, and each job's stage-in/stage-out record."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, utcnow


class Workspace(Base):
    """Where a project's workspace lives and how much it may hold.

    Written by the API from its settings whenever a workspace is used, read by the
    worker when it stages data, so the worker needs no API settings.
    """

    __tablename__ = "workspace"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("project.id"), primary_key=True)
    root_dir: Mapped[str] = mapped_column(String(500))  # <data_dir>/workspaces/<project id>
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkspaceFile(Base):
    """One file of a project's workspace; the bytes live under ``<data_dir>/workspaces``.

    Sizes and checksums are computed while the bytes stream in, so listings never read
    the files back. The sum of ``size_bytes`` per project is what the storage quota limits.
    """

    __tablename__ = "workspace_file"
    __table_args__ = (UniqueConstraint("project_id", "path"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("project.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # The job whose stage-out wrote it; None for uploads.
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    updated_by: Mapped[str] = mapped_column(String(120), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class JobIO(Base):
    """A job's data movement: what to stage in and collect back, and what happened.

    ``stage_in`` and ``stage_out`` record outcomes (``{"state", "files", "bytes",
    "error"}``); a stage-out failure is kept here and in the job's reason, never lost.
    """

    __tablename__ = "job_io"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id"), primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("project.id"), index=True)
    inputs: Mapped[list[str]] = mapped_column(JSON, default=list)
    # None: collect nothing; a list (even empty): collect stdout/stderr plus these globs.
    outputs: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    callback_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    stage_in: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    stage_out: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set when the job is settled, cleared once its outputs are collected (or given up):
    # the worker's queue of stage-outs, so a crash between the two loses none.
    collect_due: Mapped[bool] = mapped_column(default=False, index=True)
