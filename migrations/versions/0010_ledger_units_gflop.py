"""ledger base unit: 1 GFLOP (amounts up to 1e9 PFlop·h and beyond)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 11:40:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0010'
down_revision: Union[str, None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass  # placeholder: filled in by its change


def downgrade() -> None:
    pass
