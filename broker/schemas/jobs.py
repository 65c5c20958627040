"""Job submission and job views (PSI/J-shaped resource spec)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from .common import ReadModel, StrictModel


class JobCreate(StrictModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    script: str = Field(min_length=1)
    nodes: int = Field(1, ge=1, le=100_000)
    ntasks: int | None = Field(None, ge=1, le=10_000_000)
    cpus_per_task: int | None = Field(None, ge=1, le=4096)
    memory_mb: int | None = Field(None, ge=1, le=1 << 31)
    gpus_per_node: int | None = Field(None, ge=0, le=64)
    time_limit_minutes: int = Field(ge=1, le=60 * 24 * 31)
    cluster: str | None = Field(None, max_length=40)
    partition: str | None = Field(None, max_length=64)
    constraints: list[str] | None = Field(None, max_length=16)
    # Workspace paths copied into the job's directory before it is submitted.
    inputs: list[str] | None = Field(None, max_length=1000)
    # Globs (relative to the job's directory) collected into the workspace, with
    # stdout and stderr, under jobs/<job id>/ when the job ends; [] = just the logs.
    outputs: list[str] | None = Field(None, max_length=100)
    # POSTed the job on every state change, signed with the project's webhook secret.
    callback_url: str | None = Field(None, max_length=2000)


class JobRead(ReadModel):
    id: uuid.UUID
    project_id: uuid.UUID
    enterprise_id: uuid.UUID
    name: str
    state: str
    reason: str
    # The scheduler's own word(s) for the state (Slurm's NODE_FAIL, PENDING+REQUEUED...).
    native_state: str
    cluster: str
    partition: str
    scheduler_job_id: str | None
    exit_code: int | None
    nodes: int
    ntasks: int | None
    cpus_per_task: int | None
    memory_mb: int | None
    gpus_per_node: int | None
    time_limit_minutes: int
    node_list: list[str]
    elapsed_s: int | None
    hold_pfh: float
    charge_pfh: float | None
    routing: dict[str, Any]
    warnings: list[str]
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    settled_at: datetime | None


class JobPage(ReadModel):
    items: list[JobRead]
    next_cursor: str | None
