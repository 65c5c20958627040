"""Token -> principal from memory: a request authenticates without a round trip.

An entry lives ``ttl_s`` (0.5 s) and is then read again from the database, so a token
revoked anywhere (another API process, the CLI, the dashboard) is refused by every
process within that time; one revoked through this process's own sessions is refused
at once (``watch`` clears the cache when such a commit lands). Expiry is checked on
every use. Unknown tokens are not cached (nothing to remember of a wrong guess).

While the app runs, ``refresher`` re-reads every token used in the last ``idle_s`` in
one query each ``ttl_s / 2``: busy tokens never expire from the cache (no request waits
for a read, and no burst of requests reads the same token at once when its entry
ages out), and a revoked one is dropped within that half period. If the database stops
answering, entries age out after ``ttl_s`` as before and requests read for themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from ..errors import Unauthenticated
from ..models import ApiToken
from . import tokens
from .principal import Principal

log = logging.getLogger(__name__)

_CHANGED_KEY = "token_cache.changed"


class TokenCache:
    """Principals by token hash, each for ``ttl_s`` seconds; at most ``max_entries``."""

    def __init__(self, ttl_s: float = 0.5, max_entries: int = 10_000, idle_s: float = 10.0) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.idle_s = idle_s
        self._rows: dict[str, tuple[float, Principal, datetime | None]] = {}
        self._used: dict[str, float] = {}  # last get() that found the entry
        self._lock = threading.Lock()
        self._generation = 0  # bumped by clear(): a read that raced it is not cached

    def get(self, token: str) -> Principal | None:
        """The token's principal if it is cached, fresh and not expired."""
        digest = tokens.hash_token(token)
        hit = self._rows.get(digest)
        now = time.monotonic()
        if hit is None or now - hit[0] > self.ttl_s:
            return None
        if hit[2] is not None and hit[2] <= datetime.now(UTC):
            return None
        self._used[digest] = now
        return hit[1]

    def load(self, factory: sessionmaker[Session], token: str) -> Principal:
        """Read the token (``Unauthenticated`` if unknown, revoked or expired) and cache it."""
        digest = tokens.hash_token(token)
        at, generation = time.monotonic(), self._generation
        with factory() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
            if row is None or not tokens.usable(row):
                with self._lock:
                    self._rows.pop(digest, None)
                raise Unauthenticated("invalid, revoked or expired token")
            principal = Principal(
                token_id=row.id, name=row.name, role=row.role, enterprise_id=row.enterprise_id
            )
            expires_at = row.expires_at
        with self._lock:
            if generation != self._generation:
                return principal
            if len(self._rows) >= self.max_entries:
                self._rows.clear()
                self._used.clear()
            self._rows[digest] = (at, principal, expires_at)
            self._used[digest] = at
        return principal

    def refresh(self, factory: sessionmaker[Session]) -> None:
        """Re-read, in one query, every token used in the last ``idle_s``; forget the
        others, and those no longer usable."""
        at = time.monotonic()
        with self._lock:
            generation = self._generation
            # list() copies in one step: get() may add to _used meanwhile (no lock there).
            idle = [d for d, used in list(self._used.items()) if at - used > self.idle_s]
            for digest in idle:
                self._rows.pop(digest, None)
                self._used.pop(digest, None)
            digests = list(self._rows)
        if not digests:
            return
        fresh: dict[str, tuple[float, Principal, datetime | None]] = {}
        with factory() as session:
            for row in session.scalars(select(ApiToken).where(ApiToken.token_hash.in_(digests))):
                if tokens.usable(row):
                    principal = Principal(
                        token_id=row.id,
                        name=row.name,
                        role=row.role,
                        enterprise_id=row.enterprise_id,
                    )
                    fresh[row.token_hash] = (at, principal, row.expires_at)
        with self._lock:
            if generation != self._generation:
                return
            for digest in digests:
                entry = fresh.get(digest)
                if entry is None:
                    self._rows.pop(digest, None)
                    self._used.pop(digest, None)
                elif (old := self._rows.get(digest)) is None or old[0] < at:
                    self._rows[digest] = entry

    def refresher(self, factory: sessionmaker[Session]) -> Callable[[], None]:
        """Start ``refresh`` every ``ttl_s / 2`` on a daemon thread; returns the function
        that stops it (and waits for a refresh in progress, so that its connection is
        back in the pool before the engine is disposed)."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(self.ttl_s / 2):
                try:
                    self.refresh(factory)
                except Exception:  # the database is away: entries age out meanwhile
                    log.debug("token cache refresh failed", exc_info=True)

        thread = threading.Thread(target=run, name="token-cache", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=10)

        return halt

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._rows.clear()
            self._used.clear()

    def watch(self, factory: sessionmaker[Session]) -> None:
        """Clear the cache whenever a session of ``factory`` commits a token change."""

        def noted(session: Session, _ctx: Any) -> None:
            if any(isinstance(o, ApiToken) for o in (*session.dirty, *session.deleted)):
                session.info[_CHANGED_KEY] = True

        def executed(state: ORMExecuteState) -> None:  # UPDATE/DELETE statements too
            if (state.is_update or state.is_delete) and any(
                m.class_ is ApiToken for m in state.all_mappers
            ):
                state.session.info[_CHANGED_KEY] = True

        def committed(session: Session) -> None:
            if session.info.pop(_CHANGED_KEY, False):
                self.clear()

        def rolled_back(session: Session) -> None:
            session.info.pop(_CHANGED_KEY, None)

        event.listen(factory, "after_flush", noted)
        event.listen(factory, "do_orm_execute", executed)
        event.listen(factory, "after_commit", committed)
        event.listen(factory, "after_rollback", rolled_back)
