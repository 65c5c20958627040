"""Job submission and job views (PSI/J-shaped resource spec)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from ..models.job import DependencyCondition
from .common import DisplayName, ReadModel, StrictModel

#: A QOS or reservation name (each must also be on the partition's allow-list).
SLURM_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
#: A node feature (each must be one of the partition's ``features``).
FEATURE = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$"
#: Taken exactly as sent: a variable's value keeps its spaces and newlines.
_Raw = Annotated[str, StringConstraints(strip_whitespace=False)]


#: Parents one job may wait for.
MAX_DEPENDENCIES = 50


class Dependency(StrictModel):
    job_id: uuid.UUID
    condition: DependencyCondition = DependencyCondition.AFTEROK


class JobCreate(StrictModel):
    name: DisplayName = Field(min_length=1, max_length=200)
    script: str = Field(min_length=1)
    nodes: int = Field(1, ge=1, le=100_000)
    ntasks: int | None = Field(None, ge=1, le=10_000_000)
    cpus_per_task: int | None = Field(None, ge=1, le=4096)
    memory_mb: int | None = Field(None, ge=1, le=1 << 31)
    gpus_per_node: int | None = Field(None, ge=0, le=64)
    time_limit_minutes: int = Field(ge=1, le=60 * 24 * 31)
    cluster: str | None = Field(None, max_length=40)
    partition: str | None = Field(None, max_length=64)
    # Node features, all required (Slurm's --constraint=a&b).
    constraints: list[Annotated[str, Field(pattern=FEATURE)]] | None = Field(None, max_length=16)
    # The job's own variables, name -> value (services.job_spec says which names and
    # sizes); BROKER_JOB_ID and the scheduler's variables are set for it.
    environment: dict[_Raw, _Raw] | None = None
    # Where the job starts: a relative path inside its directory, made by the broker
    # (default: the directory itself, where stdout.txt and stderr.txt always go).
    working_directory: str | None = Field(None, min_length=1, max_length=255)
    # Only values on the partition's allow-list (clusters file: allowed_qos,
    # allowed_reservations); routing picks a partition that allows them.
    qos: str | None = Field(None, pattern=SLURM_NAME)
    reservation: str | None = Field(None, pattern=SLURM_NAME)
    # Workspace paths copied into the job's directory before it is submitted.
    inputs: list[str] | None = Field(None, max_length=1000)
    # Globs (relative to the job's directory) collected into the workspace, with
    # stdout and stderr, under jobs/<job id>/ when the job ends; [] = just the logs. A
    # directory named without a wildcard ("results") is collected whole.
    outputs: list[str] | None = Field(None, max_length=100)
    # POSTed the job on every state change, signed with the project's webhook secret.
    callback_url: str | None = Field(None, max_length=2000)
    # A job array in Slurm's syntax: "0-99", "1,3,5-7", "0-15:4", with "%N" to run at
    # most N tasks at once. Each task runs the script with SLURM_ARRAY_TASK_ID and
    # BROKER_ARRAY_TASK_ID set; the hold covers every task.
    array: str | None = Field(None, min_length=1, max_length=200)
    # Jobs of the same enterprise this one waits for (it starts when every condition
    # holds, and is cancelled, its hold released, when one no longer can).
    depends_on: list[Dependency] | None = Field(None, max_length=MAX_DEPENDENCIES)


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
    # The spec as submitted (the script and the data movement: JobDetail).
    environment: dict[str, str]
    working_directory: str | None
    qos: str | None
    reservation: str | None
    constraints: list[str]
    # A job array: the spec as submitted and its number of tasks (null: one job); its
    # tasks are at GET /jobs/{id}/tasks.
    array: str | None
    array_tasks: int | None
    depends_on: list[Dependency]


class JobDetail(JobRead):
    """One job (``GET /jobs/{id}``): a list's item plus the script and its data movement.

    ``script`` is what the scheduler runs: as submitted (trimmed of leading and
    trailing whitespace, like every string of a request), with ``#!/bin/bash`` put first
    if it had no ``#!`` line (sbatch needs one). ``inputs`` and ``outputs`` are as
    submitted (``outputs`` null: none asked for).
    """

    script: str
    inputs: list[str]
    outputs: list[str] | None


class JobPage(ReadModel):
    items: list[JobRead]
    next_cursor: str | None


class LostResolution(StrictModel):
    """How an operator resolves a lost job: ``charge_elapsed_s`` seconds on ``nodes`` (its
    recorded nodes when empty) from the evidence, or null to close it uncharged."""

    charge_elapsed_s: int | None = Field(None, ge=0, le=60 * 60 * 24 * 366)
    nodes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=100_000
    )
    memo: str = Field(min_length=1, max_length=500)


class TaskRead(ReadModel):
    """One task of a job array (``GET /jobs/{id}/tasks``)."""

    index: int
    state: str
    reason: str
    exit_code: int | None
    node_list: list[str]
    started_at: datetime | None
    ended_at: datetime | None
    elapsed_s: int | None
    # The task's share of the array's charge (the tasks' add up to the job's).
    charge_pfh: float | None


class TaskPage(ReadModel):
    items: list[TaskRead]
    next_cursor: str | None
