"""the submitted spec kept whole: environment, working directory, qos, reservation

job.environment (the spec's variables; '{}' for older jobs), job.working_directory
(relative to the job's directory; NULL: the directory itself), job.qos and
job.reservation (NULL: none asked for); partition.allowed_qos and
partition.allowed_reservations, the clusters file's allow-lists ('[]' until the
configuration is synced again, at the next start). A job's constraints stay where they
were kept already, in job.routing.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 12:15:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0012'
down_revision: Union[str, None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('environment', sa.JSON(), nullable=False, server_default='{}')
        )
        batch_op.add_column(sa.Column('working_directory', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('qos', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reservation', sa.String(length=64), nullable=True))
    with op.batch_alter_table('partition', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('allowed_qos', sa.JSON(), nullable=False, server_default='[]')
        )
        batch_op.add_column(
            sa.Column('allowed_reservations', sa.JSON(), nullable=False, server_default='[]')
        )


def downgrade() -> None:
    with op.batch_alter_table('partition', schema=None) as batch_op:
        batch_op.drop_column('allowed_reservations')
        batch_op.drop_column('allowed_qos')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('reservation')
        batch_op.drop_column('qos')
        batch_op.drop_column('working_directory')
        batch_op.drop_column('environment')
