"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 14:19:37.522195
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=32), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=False),
    sa.Column('enterprise_id', sa.Uuid(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_event'))
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index('ix_audit_event_enterprise_at', ['enterprise_id', 'at'], unique=False)

    op.create_table('cluster',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('adapter', sa.String(length=20), nullable=False),
    sa.Column('scratch_dir', sa.String(length=500), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('unknown', 'up', 'down', name='clusterstatus', native_enum=False, length=16), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=1000), nullable=False),
    sa.Column('load', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster')),
    sa.UniqueConstraint('name', name=op.f('uq_cluster_name'))
    )
    op.create_table('enterprise',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('posix_user', sa.String(length=32), nullable=False),
    sa.Column('slurm_account', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('active', 'suspended', name='enterprisestatus', native_enum=False, length=16), nullable=False),
    sa.Column('capacity_cap_mflops', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enterprise')),
    sa.UniqueConstraint('name', name=op.f('uq_enterprise_name')),
    sa.UniqueConstraint('slurm_account', name=op.f('uq_enterprise_slurm_account'))
    )
    op.create_table('api_token',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('enterprise_id', sa.Uuid(), nullable=True),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.Enum('member', 'admin', 'operator', 'cluster_admin', name='role', native_enum=False, length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['enterprise_id'], ['enterprise.id'], name=op.f('fk_api_token_enterprise_id_enterprise')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_enterprise_id'), ['enterprise_id'], unique=False)

    op.create_table('node',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('cluster_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('cpus', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('partitions', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('rate_mflops', sa.BigInteger(), nullable=True),
    sa.Column('validation', sa.Enum('unvalidated', 'validated', 'degraded', name='validation', native_enum=False, length=16), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['cluster.id'], name=op.f('fk_node_cluster_id_cluster')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node')),
    sa.UniqueConstraint('cluster_id', 'name', name=op.f('uq_node_cluster_id_name'))
    )
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_cluster_id'), ['cluster_id'], unique=False)

    op.create_table('partition',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('cluster_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('nodes', sa.Integer(), nullable=False),
    sa.Column('cpus_per_node', sa.Integer(), nullable=False),
    sa.Column('memory_mb_per_node', sa.Integer(), nullable=False),
    sa.Column('gpus_per_node', sa.Integer(), nullable=False),
    sa.Column('max_nodes', sa.Integer(), nullable=False),
    sa.Column('max_time_minutes', sa.Integer(), nullable=False),
    sa.Column('rated_mflops', sa.BigInteger(), nullable=False),
    sa.Column('price_per_pfh', sa.Double(), nullable=False),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('references', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['cluster.id'], name=op.f('fk_partition_cluster_id_cluster')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partition')),
    sa.UniqueConstraint('cluster_id', 'name', name=op.f('uq_partition_cluster_id_name'))
    )
    with op.batch_alter_table('partition', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_partition_cluster_id'), ['cluster_id'], unique=False)

    op.create_table('project',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('enterprise_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.Enum('draft', 'active', 'closed', name='projectstatus', native_enum=False, length=16), nullable=False),
    sa.Column('allocation_units', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['enterprise_id'], ['enterprise.id'], name=op.f('fk_project_enterprise_id_enterprise')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project')),
    sa.UniqueConstraint('enterprise_id', 'name', name=op.f('uq_project_enterprise_id_name'))
    )
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_project_enterprise_id'), ['enterprise_id'], unique=False)

    op.create_table('balance',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('enterprise_id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=True),
    sa.Column('granted_units', sa.BigInteger(), nullable=False),
    sa.Column('held_units', sa.BigInteger(), nullable=False),
    sa.Column('charged_units', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('held_units >= 0', name=op.f('ck_balance_held_nonneg')),
    sa.CheckConstraint('project_id IS NOT NULL OR granted_units - held_units - charged_units >= 0', name=op.f('ck_balance_available_nonneg')),
    sa.ForeignKeyConstraint(['enterprise_id'], ['enterprise.id'], name=op.f('fk_balance_enterprise_id_enterprise')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_balance_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_balance')),
    sa.UniqueConstraint('project_id', name=op.f('uq_balance_project_id'))
    )
    with op.batch_alter_table('balance', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_balance_enterprise_id'), ['enterprise_id'], unique=False)
        batch_op.create_index('uq_balance_enterprise_row', ['enterprise_id'], unique=True, sqlite_where=sa.text('project_id IS NULL'), postgresql_where=sa.text('project_id IS NULL'))

    op.create_table('job',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('enterprise_id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('submitted_by', sa.String(length=120), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('script', sa.Text(), nullable=False),
    sa.Column('nodes', sa.Integer(), nullable=False),
    sa.Column('ntasks', sa.Integer(), nullable=True),
    sa.Column('cpus_per_task', sa.Integer(), nullable=True),
    sa.Column('memory_mb', sa.Integer(), nullable=True),
    sa.Column('gpus_per_node', sa.Integer(), nullable=True),
    sa.Column('time_limit_minutes', sa.Integer(), nullable=False),
    sa.Column('cluster', sa.String(length=40), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('routing', sa.JSON(), nullable=False),
    sa.Column('state', sa.Enum('accepted', 'rejected', 'pending', 'running', 'suspended', 'completed', 'failed', 'cancelled', 'timeout', 'unknown', name='jobstatus', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.Column('scheduler_job_id', sa.String(length=64), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('node_list', sa.JSON(), nullable=False),
    sa.Column('work_dir', sa.String(length=500), nullable=False),
    sa.Column('stdout_path', sa.String(length=500), nullable=False),
    sa.Column('stderr_path', sa.String(length=500), nullable=False),
    sa.Column('hold_units', sa.BigInteger(), nullable=False),
    sa.Column('charge_units', sa.BigInteger(), nullable=True),
    sa.Column('elapsed_s', sa.Integer(), nullable=True),
    sa.Column('submit_attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['enterprise_id'], ['enterprise.id'], name=op.f('fk_job_enterprise_id_enterprise')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_job_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job')),
    sa.UniqueConstraint('cluster', 'scheduler_job_id', name=op.f('uq_job_cluster_scheduler_job_id')),
    sa.UniqueConstraint('project_id', 'idempotency_key', name=op.f('uq_job_project_id_idempotency_key'))
    )
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index('ix_job_enterprise_created', ['enterprise_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_project_id'), ['project_id'], unique=False)
        batch_op.create_index('ix_job_state_cluster', ['state', 'cluster'], unique=False)

    op.create_table('ledger_entry',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('enterprise_id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=True),
    sa.Column('job_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.Enum('GRANT', 'HOLD', 'RELEASE', 'CHARGE', 'ADJUST', name='entrykind', native_enum=False, length=16), nullable=False),
    sa.Column('amount_units', sa.BigInteger(), nullable=False),
    sa.Column('reverses_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('memo', sa.String(length=500), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(kind = 'ADJUST' AND amount_units <> 0) OR (kind = 'CHARGE' AND amount_units >= 0) OR (kind IN ('GRANT', 'HOLD', 'RELEASE') AND amount_units > 0)", name=op.f('ck_ledger_entry_amount_sign')),
    sa.CheckConstraint("job_id IS NOT NULL OR kind IN ('GRANT', 'ADJUST')", name=op.f('ck_ledger_entry_job_entries_have_job')),
    sa.ForeignKeyConstraint(['enterprise_id'], ['enterprise.id'], name=op.f('fk_ledger_entry_enterprise_id_enterprise')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_ledger_entry_project_id_project')),
    sa.ForeignKeyConstraint(['reverses_id'], ['ledger_entry.id'], name=op.f('fk_ledger_entry_reverses_id_ledger_entry')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entry'))
    )
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_entry_enterprise_created', ['enterprise_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entry_project_id'), ['project_id'], unique=False)
        batch_op.create_index('uq_ledger_entry_job_charge', ['job_id'], unique=True, sqlite_where=sa.text("kind = 'CHARGE'"), postgresql_where=sa.text("kind = 'CHARGE'"))
        batch_op.create_index('uq_ledger_entry_job_hold', ['job_id'], unique=True, sqlite_where=sa.text("kind = 'HOLD'"), postgresql_where=sa.text("kind = 'HOLD'"))
        batch_op.create_index('uq_ledger_entry_job_release', ['job_id'], unique=True, sqlite_where=sa.text("kind = 'RELEASE'"), postgresql_where=sa.text("kind = 'RELEASE'"))



def downgrade() -> None:
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.drop_index('uq_ledger_entry_job_release', sqlite_where=sa.text("kind = 'RELEASE'"), postgresql_where=sa.text("kind = 'RELEASE'"))
        batch_op.drop_index('uq_ledger_entry_job_hold', sqlite_where=sa.text("kind = 'HOLD'"), postgresql_where=sa.text("kind = 'HOLD'"))
        batch_op.drop_index('uq_ledger_entry_job_charge', sqlite_where=sa.text("kind = 'CHARGE'"), postgresql_where=sa.text("kind = 'CHARGE'"))
        batch_op.drop_index(batch_op.f('ix_ledger_entry_project_id'))
        batch_op.drop_index('ix_ledger_entry_enterprise_created')

    op.drop_table('ledger_entry')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_state_cluster')
        batch_op.drop_index(batch_op.f('ix_job_project_id'))
        batch_op.drop_index('ix_job_enterprise_created')

    op.drop_table('job')
    with op.batch_alter_table('balance', schema=None) as batch_op:
        batch_op.drop_index('uq_balance_enterprise_row', sqlite_where=sa.text('project_id IS NULL'), postgresql_where=sa.text('project_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_balance_enterprise_id'))

    op.drop_table('balance')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_project_enterprise_id'))

    op.drop_table('project')
    with op.batch_alter_table('partition', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_partition_cluster_id'))

    op.drop_table('partition')
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_cluster_id'))

    op.drop_table('node')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_enterprise_id'))

    op.drop_table('api_token')
    op.drop_table('enterprise')
    op.drop_table('cluster')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_event_enterprise_at')

    op.drop_table('audit_event')
