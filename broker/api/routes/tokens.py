"""Token revocation."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from ...schemas.tenants import TokenRead
from ...services import tokens
from .. import views
from ..deps import CurrentPrincipal, SessionDep

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("/{token_id}/revoke")
def revoke(token_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal) -> TokenRead:
    row = tokens.revoke_token(session, me, token_id)
    session.commit()
    return views.token(row)
