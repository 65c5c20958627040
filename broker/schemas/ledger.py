"""Grants, balances and ledger entries (amounts in PFlop·h)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from .common import ReadModel, StrictModel


class GrantCreate(StrictModel):
    amount_pfh: float = Field(gt=0, le=2e6)
    memo: str = Field("", max_length=500)


class AdjustCreate(StrictModel):
    amount_pfh: float = Field(ge=-2e6, le=2e6)
    memo: str = Field(min_length=1, max_length=500)


class AllocationSet(StrictModel):
    allocation_pfh: float | None = Field(ge=0, le=2e6)


class BalanceRead(ReadModel):
    enterprise_id: uuid.UUID
    granted_pfh: float
    held_pfh: float
    charged_pfh: float
    available_pfh: float


class ProjectBalanceRead(ReadModel):
    project_id: uuid.UUID
    allocation_pfh: float | None
    held_pfh: float
    charged_pfh: float
    remaining_pfh: float | None


class AuditEventRead(ReadModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    enterprise_id: uuid.UUID | None
    detail: dict[str, Any]


class LedgerEntryRead(ReadModel):
    id: int
    kind: str
    amount_pfh: float
    project_id: uuid.UUID | None
    job_id: uuid.UUID | None
    reverses_id: int | None
    period: str
    memo: str
    actor: str
    created_at: datetime
