"""Token -> principal from memory: a request authenticates without a round trip.

An entry lives ``ttl_s`` (0.5 s) and is then read again from the database, so a token
revoked anywhere (another API process, the CLI, the dashboard) is refused by every
process within that time; one revoked through this process's own sessions is refused
at once (``watch`` clears the cache when such a commit lands). Expiry is checked on
every use. Unknown tokens are not cached (nothing to remember of a wrong guess).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from ..errors import Unauthenticated
from ..models import ApiToken
from . import tokens
from .principal import Principal

_CHANGED_KEY = "token_cache.changed"


class TokenCache:
    """Principals by token hash, each for ``ttl_s`` seconds; at most ``max_entries``."""

    def __init__(self, ttl_s: float = 0.5, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._rows: dict[str, tuple[float, Principal, datetime | None]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by clear(): a read that raced it is not cached

    def get(self, token: str) -> Principal | None:
        """The token's principal if it is cached, fresh and not expired."""
        hit = self._rows.get(tokens.hash_token(token))
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        if hit[2] is not None and hit[2] <= datetime.now(UTC):
            return None
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
            self._rows[digest] = (at, principal, expires_at)
        return principal

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._rows.clear()

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
