"""accept path (issue 15; reserved, empty unless it needs one)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 15:00:00
"""
from typing import Sequence, Union

revision: str = '0016'
down_revision: Union[str, None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
