"""Grants, balances and ledger entries (amounts in PFlop·h).

An amount is at most ``units.MAX_PFH`` (1e9 PFlop·h) in magnitude, and one that is
not zero must not round to zero ledger units (1 GFLOP = 2.8e-10 PFlop·h): either is a
422 naming the field. (The ledger also refuses a grant total above ``CEILING_PFH``.)
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from ..units import MAX_PFH, check_amount
from .common import ReadModel, StrictModel

_MAX = float(MAX_PFH)


def _nonzero_units(value: float) -> float:
    check_amount(value)
    return value


def _units_or_zero(value: float | None) -> float | None:
    if value is not None:
        check_amount(value, zero_ok=True)
    return value


#: A PFlop·h amount that is a whole, non-zero number of ledger units (grants, adjustments).
AmountPfh = Annotated[float, AfterValidator(_nonzero_units)]
#: A PFlop·h allocation: zero, or at least one ledger unit.
AllocationPfh = Annotated[float | None, AfterValidator(_units_or_zero)]


class GrantCreate(StrictModel):
    amount_pfh: AmountPfh = Field(gt=0, le=_MAX)
    memo: str = Field("", max_length=500)


class AdjustCreate(StrictModel):
    amount_pfh: AmountPfh = Field(ge=-_MAX, le=_MAX)
    memo: str = Field(min_length=1, max_length=500)


class AllocationSet(StrictModel):
    allocation_pfh: AllocationPfh = Field(ge=0, le=_MAX)


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
