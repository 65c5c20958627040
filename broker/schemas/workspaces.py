"""Project workspace files, webhooks and their delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from .common import ReadModel, StrictModel


class WorkspaceFileRead(ReadModel):
    path: str
    size_bytes: int
    sha256: str
    job_id: uuid.UUID | None
    updated_by: str
    updated_at: datetime


class WorkspaceListing(ReadModel):
    project_id: uuid.UUID
    prefix: str
    items: list[WorkspaceFileRead]
    next_cursor: str | None = None  # more files: ask again with cursor=next_cursor
    used_bytes: int
    quota_bytes: int


class WebhookCreate(StrictModel):
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] | None = Field(None, max_length=16)


class WebhookRead(ReadModel):
    id: uuid.UUID
    project_id: uuid.UUID
    url: str
    events: list[str]
    created_by: str
    created_at: datetime
    # The project's signing secret: only in the answer that created it.
    secret: str | None = None


class SecretRead(ReadModel):
    project_id: uuid.UUID
    secret: str


class DeliveryRead(ReadModel):
    id: int
    event_id: int
    job_id: uuid.UUID
    webhook_id: uuid.UUID | None
    url: str
    state: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str
    created_at: datetime
    delivered_at: datetime | None


class JobIORead(ReadModel):
    job_id: uuid.UUID
    inputs: list[str]
    outputs: list[str] | None
    callback_url: str | None
    stage_in: dict[str, Any]
    stage_out: dict[str, Any]
