"""job_io.collect_due: the worker's queue of stage-outs, run outside its transactions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 12:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0011'
down_revision: Union[str, None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job_io', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('collect_due', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(batch_op.f('ix_job_io_collect_due'), ['collect_due'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_io', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_io_collect_due'))
        batch_op.drop_column('collect_due')
