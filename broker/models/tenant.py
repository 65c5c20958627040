"""Enterprises (tenants) and their API tokens."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, str_enum, utcnow


class Role(enum.StrEnum):
    """What a token may do. ``operator`` and ``cluster_admin`` are center staff."""

    MEMBER = "member"
    ADMIN = "admin"
    OPERATOR = "operator"
    CLUSTER_ADMIN = "cluster_admin"


class EnterpriseStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class PeriodKind(enum.StrEnum):
    MONTH = "month"
    QUARTER = "quarter"


class Enterprise(Base):
    __tablename__ = "enterprise"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    posix_user: Mapped[str] = mapped_column(String(32), unique=True)  # an enterprise's own
    slurm_account: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[EnterpriseStatus] = mapped_column(
        str_enum(EnterpriseStatus), default=EnterpriseStatus.ACTIVE
    )
    # PFLOP/s the enterprise may hold at once, as MFLOP/s; None = no cap.
    capacity_cap_mflops: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Budget periods: grants are made per period; at a period's end the unused balance
    # expires (an ADJUST entry) unless it carries over.
    period_kind: Mapped[PeriodKind] = mapped_column(str_enum(PeriodKind), default=PeriodKind.MONTH)
    carry_over: Mapped[bool] = mapped_column(default=True)
    current_period: Mapped[str] = mapped_column(String(7), default="")
    # Slurm accounting per cluster, as the last push left it:
    # {cluster: {"status": "ok"|"error"|"skipped", "detail", "period", "at"}}.
    slurm_status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    enterprise_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("enterprise.id"), index=True, default=None
    )
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[Role] = mapped_column(str_enum(Role))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # None: never expires. From this instant on the token authenticates nothing.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
