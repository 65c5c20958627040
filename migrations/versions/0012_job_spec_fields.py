"""the submitted spec kept whole: environment, working directory, qos, reservation

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 12:15:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0012'
down_revision: Union[str, None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass  # placeholder: filled in by its change


def downgrade() -> None:
    pass
