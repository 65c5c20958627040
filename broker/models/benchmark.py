"""Node validation runs (our kernels as jobs) and the versioned node rates they set."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, str_enum, utcnow


class RunState(enum.StrEnum):
    SUBMITTED = "submitted"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # the job did not produce a usable result

    @property
    def finished(self) -> bool:
        return self is not RunState.SUBMITTED


class ValidationRun(Base):
    """One `python -m kernels validate --json` job pinned to one node, and its verdict."""

    __tablename__ = "validation_run"
    __table_args__ = (Index("ix_validation_run_node_created", "node_id", "created_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    node_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("node.id"))
    cluster: Mapped[str] = mapped_column(String(40))
    partition: Mapped[str] = mapped_column(String(64))
    campaign: Mapped[str] = mapped_column(String(36))
    quick: Mapped[bool] = mapped_column(default=False)  # `kernels validate --quick` sizes
    state: Mapped[RunState] = mapped_column(str_enum(RunState), default=RunState.SUBMITTED)
    scheduler_job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    work_dir: Mapped[str] = mapped_column(String(500), default="")
    gemm_gflops: Mapped[float | None] = mapped_column(default=None)
    fft_gflops: Mapped[float | None] = mapped_column(default=None)
    stream_gbs: Mapped[float | None] = mapped_column(default=None)
    peak_gflops: Mapped[float | None] = mapped_column(default=None)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class NodeRate(Base):
    """A node's billing rate from ``valid_from`` on: each measurement is a new version."""

    __tablename__ = "node_rate"
    __table_args__ = (Index("ix_node_rate_node_valid_from", "node_id", "valid_from"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    node_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("node.id"))
    rate_mflops: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("validation_run.id"), default=None)
    samples: Mapped[int] = mapped_column(Integer, default=1)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A GPU node's rate is cpu_mflops + Σ gpu_mflops (each GPU's, by index, at
    # ``precision``); a CPU node's has cpu_mflops == rate_mflops (None before 0018).
    cpu_mflops: Mapped[int | None] = mapped_column(BigInteger, default=None)
    gpu_mflops: Mapped[list[int]] = mapped_column(JSON, default=list)
    precision: Mapped[str | None] = mapped_column(String(4), default=None)


class GpuResult(Base):
    """One GPU's figures in one validation run, and its own verdict."""

    __tablename__ = "gpu_result"
    __table_args__ = (Index("ix_gpu_result_node_gpu", "node_id", "gpu_index", "run_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("validation_run.id"), index=True)
    node_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("node.id"))
    gpu_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100), default="")
    gpu_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    simulated: Mapped[bool] = mapped_column(default=False)
    dgemm_gflops: Mapped[float | None] = mapped_column(default=None)
    sgemm_gflops: Mapped[float | None] = mapped_column(default=None)
    triad_gbs: Mapped[float | None] = mapped_column(default=None)
    peak_gflops: Mapped[float | None] = mapped_column(default=None)  # FP64 FMA probe
    passed: Mapped[bool] = mapped_column(default=False)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
