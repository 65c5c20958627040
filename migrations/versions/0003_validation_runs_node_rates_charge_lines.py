"""validation runs, node rates, charge lines

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:49:57.074379
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('validation_run',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('node_id', sa.Uuid(), nullable=False),
    sa.Column('cluster', sa.String(length=40), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('campaign', sa.String(length=36), nullable=False),
    sa.Column('state', sa.Enum('submitted', 'passed', 'failed', 'error', name='runstate', native_enum=False, length=16), nullable=False),
    sa.Column('scheduler_job_id', sa.String(length=64), nullable=True),
    sa.Column('work_dir', sa.String(length=500), nullable=False),
    sa.Column('gemm_gflops', sa.Double(), nullable=True),
    sa.Column('fft_gflops', sa.Double(), nullable=True),
    sa.Column('stream_gbs', sa.Double(), nullable=True),
    sa.Column('peak_gflops', sa.Double(), nullable=True),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_validation_run_node_id_node')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_validation_run'))
    )
    with op.batch_alter_table('validation_run', schema=None) as batch_op:
        batch_op.create_index('ix_validation_run_node_created', ['node_id', 'created_at'], unique=False)

    op.create_table('charge_line',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('enterprise_id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('cluster', sa.String(length=40), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('node_seconds', sa.Integer(), nullable=False),
    sa.Column('rate_mflops', sa.BigInteger(), nullable=False),
    sa.Column('rate_id', sa.BigInteger(), nullable=True),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('units', sa.BigInteger(), nullable=False),
    sa.Column('memo', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entry.id'], name=op.f('fk_charge_line_entry_id_ledger_entry')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_charge_line'))
    )
    with op.batch_alter_table('charge_line', schema=None) as batch_op:
        batch_op.create_index('ix_charge_line_enterprise_period', ['enterprise_id', 'period'], unique=False)
        batch_op.create_index('ix_charge_line_job', ['job_id'], unique=False)

    op.create_table('node_rate',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('node_id', sa.Uuid(), nullable=False),
    sa.Column('rate_mflops', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['node.id'], name=op.f('fk_node_rate_node_id_node')),
    sa.ForeignKeyConstraint(['run_id'], ['validation_run.id'], name=op.f('fk_node_rate_run_id_validation_run')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_rate'))
    )
    with op.batch_alter_table('node_rate', schema=None) as batch_op:
        batch_op.create_index('ix_node_rate_node_valid_from', ['node_id', 'valid_from'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('node_rate', schema=None) as batch_op:
        batch_op.drop_index('ix_node_rate_node_valid_from')

    op.drop_table('node_rate')
    with op.batch_alter_table('charge_line', schema=None) as batch_op:
        batch_op.drop_index('ix_charge_line_job')
        batch_op.drop_index('ix_charge_line_enterprise_period')

    op.drop_table('charge_line')
    with op.batch_alter_table('validation_run', schema=None) as batch_op:
        batch_op.drop_index('ix_validation_run_node_created')

    op.drop_table('validation_run')
