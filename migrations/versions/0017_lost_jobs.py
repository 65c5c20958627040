"""lost jobs (issue 16)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 15:00:00
"""
from typing import Sequence, Union

revision: str = '0017'
down_revision: Union[str, None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
