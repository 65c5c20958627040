"""end states that tell the truth: native state, requeues

job.native_state: the scheduler's own word(s) for the job's state. The new states
(node_fail, boot_fail, preempted, out_of_memory) fit the state column as it is
(VARCHAR(16), no constraint). Jobs that ended before this revision get the reason
their end now gets (every terminal job has one), in the words of this revision.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 12:15:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0013'
down_revision: Union[str, None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_CODE = "CAST(exit_code AS VARCHAR(12))"
_BACKFILL = {
    "completed": "'exit code 0'",
    "failed": f"CASE WHEN exit_code IS NULL THEN 'failed' ELSE 'exit code ' || {_CODE} END",
    "timeout": "'time limit of ' || CAST(time_limit_minutes AS VARCHAR(12)) || ' minutes reached'",
    "cancelled": (
        "CASE WHEN cancel_requested THEN 'cancelled by the user'"
        " ELSE 'cancelled by the scheduler or an administrator' END"
    ),
}


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('native_state', sa.String(length=64), server_default='', nullable=False)
        )
    for state, reason in _BACKFILL.items():
        op.execute(
            f"UPDATE job SET reason = {reason} WHERE state = '{state}' AND reason = ''"
        )


def downgrade() -> None:
    # Jobs in the new end states go back to the nearest older one.
    op.execute(
        "UPDATE job SET state = 'failed'"
        " WHERE state IN ('node_fail', 'boot_fail', 'preempted', 'out_of_memory')"
    )
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('native_state')
