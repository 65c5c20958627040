"""project secrets are stored sealed: room for a Fernet token

Values written before this revision are clear text; the broker still reads them and
seals the next one (rotate the secret to seal it now).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 06:20:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('project_secret', schema=None) as batch_op:
        batch_op.alter_column(
            'secret', existing_type=sa.String(length=128), type_=sa.String(length=512)
        )


def downgrade() -> None:
    with op.batch_alter_table('project_secret', schema=None) as batch_op:
        batch_op.alter_column(
            'secret', existing_type=sa.String(length=512), type_=sa.String(length=128)
        )
