"""PoC projects: an enterprise's unit of work, approved by the center."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, str_enum, utcnow


class ProjectStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    CLOSED = "closed"


class Project(Base):
    __tablename__ = "project"
    __table_args__ = (UniqueConstraint("enterprise_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("enterprise.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ProjectStatus] = mapped_column(
        str_enum(ProjectStatus), default=ProjectStatus.DRAFT
    )
    # Sub-allocation of the enterprise budget in ledger units; None = no project limit.
    allocation_units: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Slurm accounting per cluster, as the last push left it:
    # {cluster: {"status": "ok"|"error"|"skipped", "detail", "period", "at"}}.
    slurm_status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
