"""budget periods, capacity share

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:24:52.979042
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("enterprise", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "period_kind",
                sa.Enum("month", "quarter", name="periodkind", native_enum=False, length=16),
                nullable=False,
                server_default="month",
            )
        )
        batch_op.add_column(
            sa.Column("carry_over", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column("current_period", sa.String(length=7), nullable=False, server_default="")
        )

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rate_mflops", sa.BigInteger(), nullable=False, server_default="0")
        )

    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("period", sa.String(length=7), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_column("period")

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("rate_mflops")

    with op.batch_alter_table("enterprise", schema=None) as batch_op:
        batch_op.drop_column("current_period")
        batch_op.drop_column("carry_over")
        batch_op.drop_column("period_kind")
