"""Clusters, partitions and nodes as the broker knows them (synced from config and adapters)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, str_enum, utcnow


class ClusterStatus(enum.StrEnum):
    """``degraded``: the scheduler answers but no node is in service (all drained,
    degraded by validation or down), so the cluster takes no new jobs."""

    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class Validation(enum.StrEnum):
    UNVALIDATED = "unvalidated"
    VALIDATED = "validated"
    DEGRADED = "degraded"


class Cluster(Base):
    __tablename__ = "cluster"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    adapter: Mapped[str] = mapped_column(String(20))
    scratch_dir: Mapped[str] = mapped_column(String(500))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[ClusterStatus] = mapped_column(
        str_enum(ClusterStatus), default=ClusterStatus.UNKNOWN
    )
    version: Mapped[str] = mapped_column(String(40), default="")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_error: Mapped[str] = mapped_column(String(1000), default="")
    # Live load from the last poll: {partition: {idle_nodes, pending_jobs, ...}}
    load: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Partition(Base):
    __tablename__ = "partition"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cluster.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    nodes: Mapped[int] = mapped_column(Integer)
    cpus_per_node: Mapped[int] = mapped_column(Integer)
    memory_mb_per_node: Mapped[int] = mapped_column(Integer)
    gpus_per_node: Mapped[int] = mapped_column(Integer, default=0)
    max_nodes: Mapped[int] = mapped_column(Integer)
    max_time_minutes: Mapped[int] = mapped_column(Integer)
    rated_mflops: Mapped[int] = mapped_column(BigInteger)
    price_per_pfh: Mapped[float] = mapped_column(default=0.0)
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    references: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # References for quick validation runs (small sizes); without them a quick run
    # cannot degrade a node.
    quick_references: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What a job spec may ask for here (the clusters file's allow-lists).
    allowed_qos: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_reservations: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The most tasks one job array may have here (Slurm's MaxArraySize bounds it too).
    max_array_tasks: Mapped[int] = mapped_column(Integer, default=1000)
    # GPU nodes: the precision their GPUs are billed at ("fp64" or "fp32"), per-GPU
    # references (full and quick sizes), and whether jobs share nodes (not exclusive:
    # a job taking part of a node is charged by its GPU share).
    gpu_precision: Mapped[str] = mapped_column(String(4), default="fp64")
    gpu_references: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gpu_quick_references: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shared: Mapped[bool] = mapped_column(default=False)
    # This partition's validation runs: extra `kernels validate` arguments after
    # BROKER_VALIDATION_ARGS (e.g. "--quick --repeat 1") and environment (e.g. the
    # CUDA simulator's NUMBA_ENABLE_CUDASIM=1 on fake-GPU nodes).
    validation_args: Mapped[str] = mapped_column(String(200), default="")
    validation_environment: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class Node(Base):
    __tablename__ = "node"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cluster.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_type: Mapped[str | None] = mapped_column(String(64), default=None)
    partitions: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(64), default="unknown")
    reason: Mapped[str] = mapped_column(String(500), default="")
    # Measured rate (median of recent passing GEMM runs) in MFLOP/s; None = not measured.
    rate_mflops: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Of which each GPU's measured rate (by index, at the partition's billing precision);
    # empty for a CPU node or one not measured.
    gpu_mflops: Mapped[list[int]] = mapped_column(JSON, default=list)
    validation: Mapped[Validation] = mapped_column(
        str_enum(Validation), default=Validation.UNVALIDATED
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
