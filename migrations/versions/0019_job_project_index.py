"""Drop job's index on project_id alone

The unique index on (project_id, idempotency_key) answers every lookup by project
(project_id leads it), so ix_job_project_id only cost an index entry per job written.
It also misled the planner: on a small or newly emptied job table, an Idempotency-Key
lookup was planned through it (every job of the project, filtered by key) rather than
through the unique index.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 07:30:00
"""
from typing import Sequence, Union

from alembic import op


revision: str = '0019'
down_revision: Union[str, None] = '0018'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.drop_index('ix_job_project_id', table_name='job')


def downgrade() -> None:
    op.create_index('ix_job_project_id', 'job', ['project_id'], unique=False)
