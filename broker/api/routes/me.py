"""Who the caller is."""

from __future__ import annotations

from fastapi import APIRouter

from ...schemas.me import MeRead
from ...services import tokens
from .. import views
from ..deps import CurrentPrincipal, SessionDep

router = APIRouter(prefix="/me", tags=["me"])


@router.get("")
def who_am_i(session: SessionDep, me: CurrentPrincipal) -> MeRead:
    """The calling token: its id, name, role and expiry (null: never), its enterprise
    and that enterprise's projects (staff tokens: no enterprise, no projects)."""
    return views.me(tokens.whoami(session, me))
