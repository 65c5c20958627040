"""Charge lines: a job's charge (or credit) per node and per month, with its rate's proof."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, utcnow


class ChargeLine(Base):
    """Part of one ledger entry (CHARGE, or a crediting ADJUST) for one node and month.

    The lines of an entry add up to its amount exactly; a statement is the lines of
    a month, so statement totals match the ledger to the last unit.

    ``entry_id`` names a ledger entry. The database checks it per statement, not per
    row (a trigger, migration 0006): a month's lines are stored in bulk, and the
    ledger, append-only, refuses to lose an entry that lines point to.
    """

    __tablename__ = "charge_line"
    __table_args__ = (
        Index("ix_charge_line_enterprise_period", "enterprise_id", "period"),
        Index("ix_charge_line_node", "cluster", "node"),  # credits for a degraded node
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    entry_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    enterprise_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM of the usage
    cluster: Mapped[str] = mapped_column(String(40))
    partition: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    node_seconds: Mapped[int] = mapped_column(Integer)
    rate_mflops: Mapped[int] = mapped_column(BigInteger)
    rate_id: Mapped[int | None] = mapped_column(BigInteger, default=None)  # NodeRate version
    run_id: Mapped[int | None] = mapped_column(BigInteger, default=None)  # ValidationRun
    units: Mapped[int] = mapped_column(BigInteger)  # negative for credits
    # GPU jobs and GPU nodes: of rate_mflops, the GPUs' part; the precision they are
    # billed at; the GPUs charged on this node out of the node's (a share on a shared
    # partition, all of them on an exclusive one). None on CPU-only lines.
    gpu_mflops: Mapped[int | None] = mapped_column(BigInteger, default=None)
    precision: Mapped[str | None] = mapped_column(String(4), default=None)
    gpus: Mapped[int | None] = mapped_column(Integer, default=None)
    node_gpus: Mapped[int | None] = mapped_column(Integer, default=None)
    # A credit line: the charge line it corrects (which may be of a closed month).
    corrects_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    memo: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
