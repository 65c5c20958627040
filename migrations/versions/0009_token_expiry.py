"""tokens may carry an expiry; an enterprise's POSIX user is unique

``api_token.expires_at`` (null: never expires). The unique constraint refuses to be
added while two enterprises share a POSIX user: which of them keeps it is an operator's
decision (each enterprise's jobs would run as the other's), so the error lists them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 11:40:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0009'
down_revision: Union[str, None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    shared = op.get_bind().execute(
        sa.text(
            "SELECT posix_user, COUNT(*) FROM enterprise GROUP BY posix_user"
            " HAVING COUNT(*) > 1 ORDER BY posix_user"
        )
    ).all()
    if shared:
        users = ", ".join(f"{user!r} ({count} enterprises)" for user, count in shared)
        raise RuntimeError(
            f"enterprises share POSIX users: {users}. Give each enterprise its own"
            " (UPDATE enterprise SET posix_user = ... WHERE id = ...), then upgrade again."
        )
    with op.batch_alter_table('enterprise', schema=None) as batch_op:
        batch_op.create_unique_constraint(op.f('uq_enterprise_posix_user'), ['posix_user'])


def downgrade() -> None:
    with op.batch_alter_table('enterprise', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('uq_enterprise_posix_user'), type_='unique')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
