"""The per-request unit of work shared by the API and the dashboard (FastAPI dependency)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from fastapi import Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# Commits run on threads of their own. Were they to share the request threadpool, a
# request holding the enterprise's balance lock could wait for a free thread to
# commit while every thread waits for that lock: a deadlock under load.
_COMMIT_LIMITER = anyio.CapacityLimiter(32)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A read session for GET, a write session otherwise, committed if the handler did not.

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
