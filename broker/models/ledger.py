"""The quota ledger: append-only entries, and balance rows that are their running sums.

Entries are never updated or deleted. A ``Balance`` row per enterprise (and per
project) holds the running sums of its entries; it is the row a submission locks
(``SELECT ... FOR UPDATE`` on PostgreSQL) so concurrent holds cannot overspend, and
``services.ledger`` is the only writer of both tables.

Effects of an entry of amount ``a`` (ledger units, 1 GFLOP; see ``broker.units``):
GRANT +a granted · HOLD +a held · RELEASE −a held · CHARGE +a charged ·
ADJUST ±a granted (operator correction) or, when it reverses a CHARGE, −a charged (credit).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from ._types import UTCDateTime, str_enum, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class EntryKind(enum.StrEnum):
    GRANT = "GRANT"
    HOLD = "HOLD"
    RELEASE = "RELEASE"
    CHARGE = "CHARGE"
    ADJUST = "ADJUST"


class LedgerEntry(Base):
    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'ADJUST' AND amount_units <> 0)"
            " OR (kind = 'CHARGE' AND amount_units >= 0)"
            " OR (kind IN ('GRANT', 'HOLD', 'RELEASE') AND amount_units > 0)",
            name="amount_sign",
        ),
        CheckConstraint(
            "job_id IS NOT NULL OR kind IN ('GRANT', 'ADJUST')", name="job_entries_have_job"
        ),
        # A job has at most one HOLD, one RELEASE and one CHARGE: settlement is exactly once.
        Index(
            "uq_ledger_entry_job_hold",
            "job_id",
            unique=True,
            sqlite_where=text("kind = 'HOLD'"),
            postgresql_where=text("kind = 'HOLD'"),
        ),
        Index(
            "uq_ledger_entry_job_release",
            "job_id",
            unique=True,
            sqlite_where=text("kind = 'RELEASE'"),
            postgresql_where=text("kind = 'RELEASE'"),
        ),
        Index(
            "uq_ledger_entry_job_charge",
            "job_id",
            unique=True,
            sqlite_where=text("kind = 'CHARGE'"),
            postgresql_where=text("kind = 'CHARGE'"),
        ),
        Index("ix_ledger_entry_enterprise_created", "enterprise_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("enterprise.id"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("project.id"), index=True, default=None
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    kind: Mapped[EntryKind] = mapped_column(str_enum(EntryKind))
    amount_units: Mapped[int] = mapped_column(BigInteger)
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entry.id"), default=None)
    period: Mapped[str] = mapped_column(String(7), default="")  # budget period, e.g. 2026-11
    memo: Mapped[str] = mapped_column(String(500), default="")
    actor: Mapped[str] = mapped_column(String(120), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Balance(Base):
    """Running sums of an enterprise's entries (``project_id`` NULL) or a project's."""

    __tablename__ = "balance"
    __table_args__ = (
        CheckConstraint("held_units >= 0", name="held_nonneg"),
        # Enterprise rows can never go below zero available; project rows are checked
        # against the project's allocation by the service.
        CheckConstraint(
            "project_id IS NOT NULL OR granted_units - held_units - charged_units >= 0",
            name="available_nonneg",
        ),
        Index(
            "uq_balance_enterprise_row",
            "enterprise_id",
            unique=True,
            sqlite_where=text("project_id IS NULL"),
            postgresql_where=text("project_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("enterprise.id"), index=True)
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("project.id"), unique=True, default=None
    )
    granted_units: Mapped[int] = mapped_column(BigInteger, default=0)
    held_units: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_units: Mapped[int] = mapped_column(BigInteger, default=0)
    # Project rows: the budget period the counters below belong to ("" before the first
    # hold), what the period's own holds hold and charged (a hold of an earlier period
    # settles outside them), and the allocation carried over from the period before.
    period: Mapped[str] = mapped_column(String(7), default="")
    period_held_units: Mapped[int] = mapped_column(BigInteger, default=0)
    period_charged_units: Mapped[int] = mapped_column(BigInteger, default=0)
    carried_units: Mapped[int] = mapped_column(BigInteger, default=0)
