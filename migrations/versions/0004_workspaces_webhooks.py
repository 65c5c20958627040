"""workspaces, job io, job events (outbox), webhooks and deliveries

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 15:00:52.819135
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('project_secret',
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_project_secret_project_id_project')),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_project_secret'))
    )
    op.create_table('webhook',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_webhook_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook'))
    )
    with op.batch_alter_table('webhook', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_project_id'), ['project_id'], unique=False)

    op.create_table('workspace',
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('root_dir', sa.String(length=500), nullable=False),
    sa.Column('quota_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_workspace_project_id_project')),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_workspace'))
    )
    op.create_table('workspace_file',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=True),
    sa.Column('updated_by', sa.String(length=120), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_workspace_file_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workspace_file')),
    sa.UniqueConstraint('project_id', 'path', name=op.f('uq_workspace_file_project_id_path'))
    )
    with op.batch_alter_table('workspace_file', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workspace_file_project_id'), ['project_id'], unique=False)

    op.create_table('job_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('previous_state', sa.String(length=16), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_job_event_job_id_job')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_event'))
    )
    with op.batch_alter_table('job_event', schema=None) as batch_op:
        batch_op.create_index('ix_job_event_job_id_id', ['job_id', 'id'], unique=False)

    op.create_table('job_io',
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=True),
    sa.Column('callback_url', sa.String(length=2000), nullable=True),
    sa.Column('stage_in', sa.JSON(), nullable=False),
    sa.Column('stage_out', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_job_io_job_id_job')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_job_io_project_id_project')),
    sa.PrimaryKeyConstraint('job_id', name=op.f('pk_job_io'))
    )
    with op.batch_alter_table('job_io', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_io_project_id'), ['project_id'], unique=False)

    op.create_table('webhook_delivery',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('webhook_id', sa.Uuid(), nullable=True),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('status', sa.Enum('pending', 'delivered', 'failed', name='deliverystatus', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=1000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['job_event.id'], name=op.f('fk_webhook_delivery_event_id_job_event')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery'))
    )
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_delivery_project_id_id', ['project_id', 'id'], unique=False)
        batch_op.create_index('ix_webhook_delivery_status_next', ['status', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_delivery_status_next')
        batch_op.drop_index('ix_webhook_delivery_project_id_id')

    op.drop_table('webhook_delivery')
    with op.batch_alter_table('job_io', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_io_project_id'))

    op.drop_table('job_io')
    with op.batch_alter_table('job_event', schema=None) as batch_op:
        batch_op.drop_index('ix_job_event_job_id_id')

    op.drop_table('job_event')
    with op.batch_alter_table('workspace_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workspace_file_project_id'))

    op.drop_table('workspace_file')
    op.drop_table('workspace')
    with op.batch_alter_table('webhook', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_project_id'))

    op.drop_table('webhook')
    op.drop_table('project_secret')
