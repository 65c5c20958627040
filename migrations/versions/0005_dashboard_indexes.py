"""dashboard indexes: jobs by creation, jobs by cluster and end

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 15:20:54.106357
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index('ix_job_cluster_ended', ['cluster', 'ended_at'], unique=False)
        batch_op.create_index('ix_job_created_id', ['created_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_created_id')
        batch_op.drop_index('ix_job_cluster_ended')
