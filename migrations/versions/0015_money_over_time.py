"""money and limits over time: project periods, credit links, quick references, Slurm status

balance: a project row's counters for the current budget period (what its own holds
hold and charged) and the allocation carried over, so allocations are per period.
charge_line.corrects_id: a credit line names the line it corrects (credits of a closed
month are booked in the current one). partition.quick_references and
validation_run.quick: quick runs are judged against their own references. enterprise
and project slurm_status: the per-cluster outcome of the last push to Slurm.

Existing project rows start with no period: the first hold of the current period opens
it with zero use (holds made before this revision settle outside the counters).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 14:40:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0015'
down_revision: Union[str, None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('balance', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('period', sa.String(length=7), server_default='', nullable=False)
        )
        for name in ('period_held_units', 'period_charged_units', 'carried_units'):
            batch_op.add_column(
                sa.Column(name, sa.BigInteger(), server_default='0', nullable=False)
            )
    with op.batch_alter_table('charge_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('corrects_id', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('partition', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('quick_references', sa.JSON(), server_default='{}', nullable=False)
        )
    with op.batch_alter_table('validation_run', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('quick', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    for table in ('enterprise', 'project'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column('slurm_status', sa.JSON(), server_default='{}', nullable=False)
            )


def downgrade() -> None:
    for table in ('project', 'enterprise'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('slurm_status')
    with op.batch_alter_table('validation_run', schema=None) as batch_op:
        batch_op.drop_column('quick')
    with op.batch_alter_table('partition', schema=None) as batch_op:
        batch_op.drop_column('quick_references')
    with op.batch_alter_table('charge_line', schema=None) as batch_op:
        batch_op.drop_column('corrects_id')
    with op.batch_alter_table('balance', schema=None) as batch_op:
        for name in ('carried_units', 'period_charged_units', 'period_held_units', 'period'):
            batch_op.drop_column(name)
