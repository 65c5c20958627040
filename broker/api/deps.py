"""Dependencies declared once: the unit of work, the caller, the settings."""

from __future__ import annotations

import logging
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from ..config import ClusterConfig, Settings
from ..errors import Unauthenticated
from ..request_db import get_db
from ..services import webhooks
from ..services.principal import Principal
from ..services.token_cache import TokenCache

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


async def get_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The token's principal, from the app's ``TokenCache`` (refreshed every 0.5 s) or
    read in a short session of its own on a thread, closed before the handler runs."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    state = request.app.state
    cache: TokenCache = state.token_cache
    principal = cache.get(creds.credentials)
    if principal is None:
        principal = await anyio.to_thread.run_sync(
            cache.load, state.read_session_factory, creds.credentials
        )
    limiter = getattr(state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(str(principal.token_id))
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
