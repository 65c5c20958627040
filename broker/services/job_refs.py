"""Job references as people type them: a full id, or a unique prefix of one (``88eecf04``).

The dashboard and ``brokerctl jobs list`` show the first eight hex digits of a job's
id; that is what an operator copies. A prefix is looked up as a range of ids (the
prefix padded with ``0`` and with ``f``), which the primary key's index answers on
PostgreSQL (native ``uuid``) and SQLite (32 lower-case hex digits) alike.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import InvalidInput, NotFound
from ..models import Job
from .principal import Principal

#: At least this many hex digits: fewer would match half the center.
MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+$")


def parse_ref(ref: str) -> uuid.UUID | str:
    """A full id, or the hex digits of a prefix; InvalidInput if it is neither."""
    text = ref.strip().lower()
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    digits = text.replace("-", "")
    if not _HEX.match(digits) or not MIN_PREFIX <= len(digits) < 32:
        raise InvalidInput(
            "job_id",
            f"{ref!r} is not a job id or a prefix of one (at least {MIN_PREFIX} hex digits)",
        )
    return digits


def resolve(session: Session, principal: Principal, ref: str) -> uuid.UUID:
    """The id of the one job (visible to ``principal``) that ``ref`` names."""
    parsed = parse_ref(ref)
    if isinstance(parsed, uuid.UUID):
        return parsed
    low, high = uuid.UUID(parsed.ljust(32, "0")), uuid.UUID(parsed.ljust(32, "f"))
    query = select(Job.id).where(Job.id >= low, Job.id <= high)
    if not principal.is_staff:
        query = query.where(Job.enterprise_id == principal.enterprise_id)
    found = list(session.scalars(query.limit(3)))
    if not found:
        raise NotFound(f"no job id starts with {ref.strip()!r}")
    if len(found) > 1:
        raise InvalidInput(
            "job_id", f"{ref.strip()!r} is the start of several job ids; give more digits"
        )
    return found[0]
