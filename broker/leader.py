"""The worker's leader lock: one worker works, the others wait and take over when it dies.

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held on a
dedicated connection in autocommit mode (no transaction stays open). The server
releases it the moment that connection ends, so a worker killed with ``kill -9``
frees it at once; TCP keepalives bound the wait when the leader's host vanishes
without closing the socket. The leader checks the connection before every pass and
steps down if it was lost (a database restart), since the lock went with it.

SQLite: an exclusive ``fcntl.flock`` on a file next to the database, released by the
kernel when the process dies.

Waiting workers try again every ``poll_s`` seconds (``brokerctl worker
--leader-poll-s``), which bounds the takeover time.
"""

from __future__ import annotations

import abc
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 2.0
LOCK_NAME = "hpc-compute-broker:worker"


def lock_key(name: str = LOCK_NAME) -> int:
    """A stable signed 64-bit advisory-lock key derived from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class LeaderLock(abc.ABC):
    """A non-blocking, process-lifetime lock: ``acquire`` tries once, ``check`` re-verifies."""

    def __init__(self, poll_s: float = DEFAULT_POLL_S) -> None:
        self.poll_s = poll_s
        self.held = False

    @abc.abstractmethod
    def acquire(self) -> bool:
        """Try to take the lock without waiting; True if this process now holds it."""

    def check(self) -> bool:
        """True while the lock is still held (the PostgreSQL lock can be lost with its link)."""
        return self.held

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock up (idempotent)."""

    def ensure(self) -> bool:
        """Hold the lock: verify it if held, else try to take it. Never raises."""
        try:
            if self.held:
                if self.check():
                    return True
                log.warning("leader lock lost; stepping down")
                self.release()
            if self.acquire():
                log.info("leader lock acquired", extra={"lock": self.describe()})
                return True
        except Exception as exc:  # database down: stay idle and retry
            log.warning("leader lock unavailable: %s", exc)
            self.release()
        return False

    def describe(self) -> str:
        return type(self).__name__


class PostgresLeaderLock(LeaderLock):
    """``pg_try_advisory_lock`` on a dedicated autocommit connection."""

    def __init__(self, url: str, *, key: int | None = None, poll_s: float = DEFAULT_POLL_S) -> None:
        super().__init__(poll_s)
        self.key = lock_key() if key is None else key
        self._engine: Engine = create_engine(
            url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args=_keepalives(url),
        )
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if self._conn is None:
            self._conn = self._engine.connect()
        got = bool(
            self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
        )
        self.held = got
        return got

    def check(self) -> bool:
        if not self.held or self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("leader lock connection failed: %s", exc)
            return False
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        was_held, self.held = self.held, False
        if conn is None:
            return
        try:
            if was_held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        except Exception as exc:  # the connection is gone, and the lock with it
            log.debug("advisory unlock failed: %s", exc)
        finally:
            conn.close()

    def dispose(self) -> None:
        self.release()
        self._engine.dispose()

    def describe(self) -> str:
        return f"postgresql advisory lock {self.key}"


def _keepalives(url: str) -> dict[str, Any]:
    if make_url(url).get_driver_name() in ("psycopg", "psycopg2"):
        return {
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
    return {}


class FileLeaderLock(LeaderLock):
    """An exclusive ``flock`` on a file (the lock dies with the process)."""

    def __init__(self, path: Path, *, poll_s: float = DEFAULT_POLL_S) -> None:
        super().__init__(poll_s)
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()
        self.held = True
        return True

    def release(self) -> None:
        fh, self._fh = self._fh, None
        self.held = False
        if fh is not None:
            fh.close()  # closing the descriptor drops the flock

    def describe(self) -> str:
        return f"file lock {self.path}"


class NoLock(LeaderLock):
    """For a private in-memory database: there is nothing to share, always the leader."""

    def acquire(self) -> bool:
        self.held = True
        return True

    def release(self) -> None:
        self.held = False


def for_database(url: str, *, poll_s: float = DEFAULT_POLL_S) -> LeaderLock:
    """The leader lock that fits the database: advisory on PostgreSQL, a file on SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return PostgresLeaderLock(url, poll_s=poll_s)
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or db.startswith("file::memory:"):
            return NoLock(poll_s)
        return FileLeaderLock(Path(db + ".worker.lock"), poll_s=poll_s)
    raise ValueError(f"no leader lock for {backend} databases")
