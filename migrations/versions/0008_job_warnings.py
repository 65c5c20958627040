"""a job's neutralised script directives (warnings)

A JSON list of sentences, one per directive line of the job's script that the
scheduler will not see; jobs accepted before this revision get an empty list.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 11:40:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0008'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('warnings', sa.JSON(), nullable=False, server_default='[]')
        )


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('warnings')
