"""Enterprises, tokens, projects."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from ..units import MAX_PFH
from .common import DisplayName, ReadModel, StrictModel
from .ledger import AllocationPfh

#: Enterprise and project names: any script ("Société Générale", "量子化学"), no control
#: characters; the Slurm account and POSIX user get an ASCII slug (services.names).
Name = Field(min_length=1, max_length=100)


class EnterpriseCreate(StrictModel):
    name: DisplayName = Name
    posix_user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    slurm_account: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    capacity_cap_pflops: float | None = Field(None, ge=0, le=1e6)
    period: Literal["month", "quarter"] = "month"
    carry_over: bool = True


class CapacitySet(StrictModel):
    capacity_cap_pflops: float | None = Field(ge=0, le=1e6)


class EnterpriseRead(ReadModel):
    id: uuid.UUID
    name: str
    posix_user: str
    slurm_account: str
    status: str
    capacity_cap_pflops: float | None
    capacity_in_use_pflops: float | None = None
    period: str
    carry_over: bool
    current_period: str
    created_at: datetime
    # Per cluster, the last push of its Slurm accounts and limits:
    # {status: ok|error, detail, at, period, slurm_cluster}.
    slurm: dict[str, dict[str, str]] = Field(default_factory=dict)


class TokenCreate(StrictModel):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["member", "admin"] = "member"
    expires_at: datetime | None = Field(
        None, description="When the token stops working (UTC if no offset); none: never."
    )


class TokenCreated(ReadModel):
    id: uuid.UUID
    name: str
    role: str
    enterprise_id: uuid.UUID | None
    expires_at: datetime | None = None
    token: str


class TokenRead(ReadModel):
    id: uuid.UUID
    name: str
    role: str
    enterprise_id: uuid.UUID | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None


class ProjectCreate(StrictModel):
    enterprise_id: uuid.UUID
    name: DisplayName = Name
    description: str = Field("", max_length=5000)
    allocation_pfh: AllocationPfh = Field(None, ge=0, le=float(MAX_PFH))


class ProjectRead(ReadModel):
    id: uuid.UUID
    enterprise_id: uuid.UUID
    name: str
    description: str
    status: str
    allocation_pfh: float | None
    created_at: datetime
    approved_at: datetime | None
    closed_at: datetime | None
    # Per cluster, the last push of its Slurm account (as on the enterprise).
    slurm: dict[str, dict[str, str]] = Field(default_factory=dict)
