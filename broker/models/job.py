"""Jobs: one PoC batch job from acceptance to settlement."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, str_enum, utcnow


class JobStatus(enum.StrEnum):
    """Broker job states (public, lower-case). ``accepted``/``rejected`` are the broker's own.

    The end states say whose end it was: the job's (``completed``, ``failed``,
    ``out_of_memory``, ``timeout``, ``cancelled``) or the center's (``node_fail``,
    ``boot_fail``, ``preempted``: charged as ``BROKER_CHARGE_CENTER_FAILURES`` says).
    """

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_FAIL = "node_fail"
    BOOT_FAIL = "boot_fail"
    PREEMPTED = "preempted"
    OUT_OF_MEMORY = "out_of_memory"
    UNKNOWN = "unknown"
    #: Neither the controller nor accounting has known the job for a grace period
    #: (its records were deleted): its hold is released and an operator resolves it.
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        JobStatus.REJECTED,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMEOUT,
        JobStatus.NODE_FAIL,
        JobStatus.BOOT_FAIL,
        JobStatus.PREEMPTED,
        JobStatus.OUT_OF_MEMORY,
        JobStatus.LOST,
    }
)
#: States in which the scheduler holds the job and the worker must poll it.
LIVE_STATES = frozenset(
    {JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUSPENDED, JobStatus.UNKNOWN}
)


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key"),
        UniqueConstraint("cluster", "scheduler_job_id"),
        Index("ix_job_state_cluster", "state", "cluster"),
        Index("ix_job_enterprise_created", "enterprise_id", "created_at"),
        Index("ix_job_created_id", "created_at", "id"),
        Index("ix_job_cluster_ended", "cluster", "ended_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("enterprise.id"))
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("project.id"))
    submitted_by: Mapped[str] = mapped_column(String(120), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str] = mapped_column(String(64), default="")

    name: Mapped[str] = mapped_column(String(200))
    script: Mapped[str] = mapped_column(Text)
    nodes: Mapped[int] = mapped_column(Integer)
    ntasks: Mapped[int | None] = mapped_column(Integer, default=None)
    cpus_per_task: Mapped[int | None] = mapped_column(Integer, default=None)
    memory_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    gpus_per_node: Mapped[int | None] = mapped_column(Integer, default=None)
    time_limit_minutes: Mapped[int] = mapped_column(Integer)
    cluster: Mapped[str] = mapped_column(String(40))
    partition: Mapped[str] = mapped_column(String(64))
    # The rest of the spec as submitted: the job's own variables, where it starts (a
    # path relative to its directory; None: the directory itself), and the QOS and
    # reservation it asked for (from the partition's allow-lists). Its constraints are
    # routing["constraints"].
    environment: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    working_directory: Mapped[str | None] = mapped_column(String(255), default=None)
    qos: Mapped[str | None] = mapped_column(String(64), default=None)
    reservation: Mapped[str | None] = mapped_column(String(64), default=None)
    routing: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The script's directive lines the scheduler will not see, one sentence each.
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)

    state: Mapped[JobStatus] = mapped_column(str_enum(JobStatus), default=JobStatus.ACCEPTED)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    # The scheduler's own word(s) for the job's state, as last seen (``NODE_FAIL``,
    # ``PENDING+REQUEUED``; the local adapter's ``completed``...).
    native_state: Mapped[str] = mapped_column(String(64), default="")
    scheduler_job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    node_list: Mapped[list[str]] = mapped_column(JSON, default=list)
    work_dir: Mapped[str] = mapped_column(String(500), default="")
    stdout_path: Mapped[str] = mapped_column(String(500), default="")
    stderr_path: Mapped[str] = mapped_column(String(500), default="")

    # Highest node rate of the partition at submission: the hold's rate, and this
    # job's share of the enterprise's capacity cap while it is held or running.
    rate_mflops: Mapped[int] = mapped_column(BigInteger, default=0)
    hold_units: Mapped[int] = mapped_column(BigInteger, default=0)
    charge_units: Mapped[int | None] = mapped_column(BigInteger, default=None)
    elapsed_s: Mapped[int | None] = mapped_column(Integer, default=None)

    submit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # Why the broker cancelled the job when it was not its user ("": the user did, or
    # nobody): a dependency that can no longer be met.
    cancel_reason: Mapped[str] = mapped_column(String(300), default="")
    # Since when the scheduler (controller and accounting) has not known the job; past
    # BROKER_LOST_GRACE_S it is lost. None: seen at the last poll.
    unseen_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    # A job array (Slurm's syntax, as submitted: "0-9%3"; None: one job), its number of
    # tasks and how many may run at once (the capacity it takes: nodes x width x rate).
    array: Mapped[str | None] = mapped_column(String(200), default=None)
    array_tasks: Mapped[int | None] = mapped_column(Integer, default=None)
    array_width: Mapped[int] = mapped_column(Integer, default=1)
    # The jobs it waits for, as submitted: [{"job_id": "...", "condition": "afterok"}]
    # (JobDependency rows are the same, for queries).
    depends_on: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class JobTask(Base):
    """One task of a job array: its own state, nodes, times and share of the charge."""

    __tablename__ = "job_task"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    state: Mapped[JobStatus] = mapped_column(str_enum(JobStatus), default=JobStatus.ACCEPTED)
    native_state: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(String(1000), default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    node_list: Mapped[list[str]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    elapsed_s: Mapped[int | None] = mapped_column(Integer, default=None)
    # Its share of the array's CHARGE entry (the shares add up to the entry exactly).
    charge_units: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)


class DependencyCondition(enum.StrEnum):
    """When a dependent job may start, as Slurm's ``--dependency`` says it."""

    AFTEROK = "afterok"  # the parent completed (every task, for an array)
    AFTERANY = "afterany"  # the parent ended, however
    AFTERNOTOK = "afternotok"  # the parent ended other than completed


class JobDependency(Base):
    """Job ``job_id`` waits for ``parent_id`` to end under ``condition``."""

    __tablename__ = "job_dependency"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id"), primary_key=True)
    parent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id"), primary_key=True, index=True)
    condition: Mapped[DependencyCondition] = mapped_column(str_enum(DependencyCondition))
