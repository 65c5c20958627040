"""tokens may carry an expiry

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
    pass  # placeholder: filled in by its change


def downgrade() -> None:
    pass
