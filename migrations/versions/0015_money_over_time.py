"""money and limits over time (reserved; filled in by its change)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 14:40:00
"""
from typing import Sequence, Union

revision: str = '0015'
down_revision: Union[str, None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
