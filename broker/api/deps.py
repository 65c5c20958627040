"""Dependencies declared once: the unit of work, the caller, the settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..config import Settings
from ..errors import Unauthenticated
from ..services import tokens
from ..services.principal import Principal

log = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False, description="An API token from POST /enterprises/{id}/tokens"
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# Commits run on threads of their own. Were they to share the request threadpool, a
# request holding the enterprise's balance lock could wait for a free thread to
# commit while every thread waits for that lock: a deadlock under load.
_COMMIT_LIMITER = anyio.CapacityLimiter(32)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_db(request: Request) -> AsyncIterator[Session]:
    """One transaction per request, committed when the handler returns without error.

    Handlers that take locks commit themselves before returning: FastAPI serializes a
    sync handler's response on the shared threadpool, so a lock held until this
    teardown could wait behind requests that wait for that very lock.
    """
    state = request.app.state
    read_only = request.method in _READS
    factory = state.read_session_factory if read_only else state.session_factory
    session: Session = factory()
    try:
        yield session
        # This runs once the response has started: an error here cannot become a 503
        # any more, only a dropped connection. So no round trip that is not needed: a
        # read has nothing to commit (close() hands the connection back, the pool rolls
        # back and discards a dead one), and a handler that committed itself left
        # nothing to commit either.
        if not read_only and session.in_transaction():
            await anyio.to_thread.run_sync(session.commit, limiter=_COMMIT_LIMITER)
    except BaseException:
        await anyio.to_thread.run_sync(session.rollback, limiter=_COMMIT_LIMITER)
        raise
    finally:
        try:
            await anyio.to_thread.run_sync(session.close, limiter=_COMMIT_LIMITER)
        except DBAPIError as exc:  # the connection died: close() has nothing left to lose
            log.warning("closing a request's session: %s", exc.orig)


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


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
