"""Dependencies declared once: the unit of work, the caller, the settings."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from ..config import ClusterConfig, Settings
from ..errors import Unauthenticated
from ..request_db import get_db
from ..services import tokens, webhooks
from ..services.principal import Principal

log = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False, description="An API token from POST /enterprises/{id}/tokens"
)


async def get_settings(request: Request) -> Settings:
    """The app's settings. Also sets ``webhooks.ALLOW_NETWORKS`` for this request, so
    that a ``callback_url`` checked deep in a service obeys the same settings (async:
    it runs in the request's own context, which the handler's thread inherits)."""
    settings: Settings = request.app.state.settings
    webhooks.ALLOW_NETWORKS.set(settings.webhook_allow_networks)
    return settings


def get_cluster_configs(request: Request) -> list[ClusterConfig]:
    """The configured clusters (the app's adapter pool holds them)."""
    return list(request.app.state.adapters.configs.values())


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClusterConfigsDep = Annotated[list[ClusterConfig], Depends(get_cluster_configs)]


def get_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate in a short read session of its own, closed before the handler runs."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    with request.app.state.read_session_factory() as session:
        principal = tokens.authenticate(session, creds.credentials)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(str(principal.token_id))
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
