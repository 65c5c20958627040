"""GPU rates (issue 18)

GPU nodes are validated per GPU and billed at CPU rate + their GPUs' rates:
- partition: gpu_precision (fp64|fp32), gpu_references, gpu_quick_references, shared
  (jobs share nodes, charged by GPU share), validation_args, validation_environment;
- node: gpu_type, gpu_mflops (each GPU's current rate);
- node_rate: cpu_mflops, gpu_mflops, precision (the parts of each rate version); existing
  versions are CPU rates: cpu_mflops = rate_mflops;
- gpu_result: each GPU's figures and verdict in each validation run;
- charge_line: gpu_mflops, precision, gpus, node_gpus.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 18:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0018'
down_revision: Union[str, None] = '0017'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('partition', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpu_precision', sa.String(length=4), nullable=False, server_default='fp64'))
        batch_op.add_column(sa.Column('gpu_references', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('gpu_quick_references', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('shared', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('validation_args', sa.String(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('validation_environment', sa.JSON(), nullable=False, server_default='{}'))
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpu_type', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('gpu_mflops', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('node_rate', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cpu_mflops', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('gpu_mflops', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('precision', sa.String(length=4), nullable=True))
    op.execute('UPDATE node_rate SET cpu_mflops = rate_mflops')
    with op.batch_alter_table('charge_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpu_mflops', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('precision', sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column('gpus', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('node_gpus', sa.Integer(), nullable=True))
    op.create_table(
        'gpu_result',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('node_id', sa.Uuid(), nullable=False),
        sa.Column('gpu_index', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('gpu_uuid', sa.String(length=64), nullable=True),
        sa.Column('simulated', sa.Boolean(), nullable=False),
        sa.Column('dgemm_gflops', sa.Double(), nullable=True),
        sa.Column('sgemm_gflops', sa.Double(), nullable=True),
        sa.Column('triad_gbs', sa.Double(), nullable=True),
        sa.Column('peak_gflops', sa.Double(), nullable=True),
        sa.Column('passed', sa.Boolean(), nullable=False),
        sa.Column('reasons', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_gpu_result_node_id_node')),
        sa.ForeignKeyConstraint(['run_id'], ['validation_run.id'], name=op.f('fk_gpu_result_run_id_validation_run')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_gpu_result')),
    )
    with op.batch_alter_table('gpu_result', schema=None) as batch_op:
        batch_op.create_index('ix_gpu_result_node_gpu', ['node_id', 'gpu_index', 'run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_gpu_result_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gpu_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gpu_result_run_id'))
        batch_op.drop_index('ix_gpu_result_node_gpu')
    op.drop_table('gpu_result')
    with op.batch_alter_table('charge_line', schema=None) as batch_op:
        for col in ('node_gpus', 'gpus', 'precision', 'gpu_mflops'):
            batch_op.drop_column(col)
    with op.batch_alter_table('node_rate', schema=None) as batch_op:
        for col in ('precision', 'gpu_mflops', 'cpu_mflops'):
            batch_op.drop_column(col)
    with op.batch_alter_table('node', schema=None) as batch_op:
        for col in ('gpu_mflops', 'gpu_type'):
            batch_op.drop_column(col)
    with op.batch_alter_table('partition', schema=None) as batch_op:
        for col in ('validation_environment', 'validation_args', 'shared', 'gpu_quick_references', 'gpu_references', 'gpu_precision'):
            batch_op.drop_column(col)
