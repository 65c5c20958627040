"""What the client sends and reads: the job spec and the broker's answers, typed.

Answers keep fields this version does not know (``extra="allow"``): a newer broker
adds fields without breaking an older client. The spec refuses unknown fields, as
the broker does, so a typo fails here rather than as a 422.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "Balance",
    "Dependency",
    "Job",
    "JobEvent",
    "JobPage",
    "JobSpec",
    "Me",
    "ProjectBalance",
    "Task",
    "WorkspaceFile",
    "WorkspaceListing",
]

#: States after which a job (or an array task) never changes again.
TERMINAL_STATES = frozenset(
    {
        "rejected",
        "completed",
        "failed",
        "cancelled",
        "timeout",
        "node_fail",
        "boot_fail",
        "preempted",
        "out_of_memory",
        "lost",
    }
)
#: States of a job that has not ended. One in neither set (a newer broker's) counts as
#: an end once the job has an ``ended_at``.
LIVE_STATES = frozenset({"accepted", "pending", "running", "suspended", "unknown"})


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Dependency(BaseModel):
    """Run after another job of the same enterprise has ended so."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: uuid.UUID
    condition: Literal["afterok", "afterany", "afternotok"] = "afterok"


class JobSpec(BaseModel):
    """A job as ``POST /projects/{id}/jobs`` takes it (PSI/J-shaped; see the README).

    ``array`` is Slurm's syntax (``"0-7"``, ``"1,3,5-7"``, ``"0-99%10"``); each task
    sees ``BROKER_ARRAY_TASK_ID``. ``inputs`` are workspace paths staged into the
    job's directory; ``outputs`` globs collected back under ``jobs/<job id>/``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    script: str
    time_limit_minutes: int
    nodes: int = 1
    ntasks: int | None = None
    cpus_per_task: int | None = None
    memory_mb: int | None = None
    gpus_per_node: int | None = None
    cluster: str | None = None
    partition: str | None = None
    constraints: list[str] | None = None
    environment: dict[str, str] | None = None
    working_directory: str | None = None
    qos: str | None = None
    reservation: str | None = None
    inputs: list[str] | None = None
    outputs: list[str] | None = None
    callback_url: str | None = None
    array: str | None = None
    depends_on: list[Dependency] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body: fields left unset are left out (the broker's defaults apply)."""
        return self.model_dump(mode="json", exclude_none=True)


class Job(_Answer):
    """A job as the broker shows it (``GET /jobs/{id}``; list items lack ``script``)."""

    id: uuid.UUID
    name: str
    state: str
    reason: str = ""
    native_state: str = ""
    project_id: uuid.UUID | None = None
    enterprise_id: uuid.UUID | None = None
    cluster: str = ""
    partition: str = ""
    scheduler_job_id: str | None = None
    exit_code: int | None = None
    nodes: int = 1
    ntasks: int | None = None
    cpus_per_task: int | None = None
    memory_mb: int | None = None
    gpus_per_node: int | None = None
    time_limit_minutes: int = 0
    node_list: list[str] = Field(default_factory=list)
    elapsed_s: int | None = None
    hold_pfh: float = 0.0
    charge_pfh: float | None = None
    routing: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    settled_at: datetime | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    working_directory: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraints: list[str] = Field(default_factory=list)
    script: str | None = None
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] | None = None
    array: str | None = None
    depends_on: list[Dependency] = Field(default_factory=list)
    array_tasks: int | None = None

    @property
    def terminal(self) -> bool:
        if self.state in TERMINAL_STATES:
            return True
        return self.state not in LIVE_STATES and self.ended_at is not None

    @property
    def settled(self) -> bool:
        """Ended and charged (or released): ``charge_pfh`` is final."""
        return self.terminal and self.settled_at is not None


class JobPage(_Answer):
    items: list[Job]
    next_cursor: str | None = None


class Task(_Answer):
    """One task of an array job (``GET /jobs/{id}/tasks``)."""

    index: int
    state: str
    exit_code: int | None = None
    charge_pfh: float | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    node_list: list[str] = Field(default_factory=list)
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class JobEvent(_Answer):
    """One state change from ``GET /jobs/{id}/events`` (Server-Sent Events)."""

    event_id: int | None = None
    state: str
    previous_state: str | None = None
    at: datetime | None = None
    job: dict[str, Any] = Field(default_factory=dict)


class Balance(_Answer):
    enterprise_id: uuid.UUID
    granted_pfh: float
    held_pfh: float
    charged_pfh: float
    available_pfh: float


class ProjectBalance(_Answer):
    project_id: uuid.UUID
    allocation_pfh: float | None = None
    held_pfh: float
    charged_pfh: float
    remaining_pfh: float | None = None


class _Ref(_Answer):
    id: uuid.UUID
    name: str
    status: str | None = None


class Me(_Answer):
    """Who the token is: its role, enterprise and that enterprise's projects."""

    token_id: uuid.UUID | None = None
    name: str
    role: str
    enterprise: _Ref | None = None
    projects: list[_Ref] = Field(default_factory=list)
    expires_at: datetime | None = None


class WorkspaceFile(_Answer):
    path: str
    size_bytes: int
    sha256: str
    job_id: uuid.UUID | None = None
    updated_by: str = ""
    updated_at: datetime | None = None


class WorkspaceListing(_Answer):
    project_id: uuid.UUID
    prefix: str = ""
    items: list[WorkspaceFile]
    next_cursor: str | None = None
    used_bytes: int = 0
    quota_bytes: int = 0
