"""Who the calling token is (``GET /me``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from .common import ReadModel


class EnterpriseRef(ReadModel):
    id: uuid.UUID
    name: str


class ProjectRef(ReadModel):
    id: uuid.UUID
    name: str
    status: str


class MeRead(ReadModel):
    token_id: uuid.UUID | None
    name: str
    role: str
    # None for center staff (operator, cluster_admin): they belong to no enterprise.
    enterprise: EnterpriseRef | None
    # The enterprise's projects, every state; [] for staff.
    projects: list[ProjectRef]
    expires_at: datetime | None
