"""SQL helpers that differ by dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import Session


def day_bucket(session: Session, column: Any) -> Any:
    """The UTC calendar day of a timestamp as ``YYYY-MM-DD``, on either dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)
