"""lost jobs (issue 16)

job.unseen_since: since when neither the controller nor accounting has known a live job;
past the grace period (BROKER_LOST_GRACE_S) the job becomes `lost` (the state column,
VARCHAR(16) without a constraint, holds the new value as it is).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 15:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0017'
down_revision: Union[str, None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unseen_since', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('unseen_since')
