"""The routing snapshot from memory: what a batch of submissions routes from, read once
for many batches.

Routing reads the enabled clusters, their partitions, load and node rates
(``brokering.snapshot``: three queries and an object per row). A process keeps the last
snapshot ``ttl_s`` (0.5 s): a change made elsewhere (the worker's probe in another
process, the CLI) is routed by within that time; one committed by any session of this
process (the embedded worker, the dashboard, a test) at once, as a listener bumps a
generation on such a commit. The snapshot's rows are detached from the session that
read them: nothing expires them, and nothing may change them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from ..models import Cluster, GpuResult, Node, NodeRate, Partition
from . import brokering

#: What routing reads: a commit that changes one of these is routed by at once.
_ROUTED = (Cluster, Partition, Node, NodeRate, GpuResult)
_CHANGED_KEY = "snapshot_cache.changed"
_generation = 0
_installed = threading.Lock()
_listening = False


def _listen() -> None:
    """Once per process: note commits that change what routing reads (every session)."""
    global _listening
    with _installed:
        if _listening:
            return
        _listening = True

    def noted(session: Session, _ctx: Any) -> None:
        changed = (*session.new, *session.dirty, *session.deleted)
        if any(isinstance(o, _ROUTED) for o in changed):
            session.info[_CHANGED_KEY] = True

    def executed(state: Any) -> None:  # bulk UPDATE/DELETE statements too
        if (state.is_update or state.is_delete or state.is_insert) and any(
            m.class_ in _ROUTED for m in state.all_mappers
        ):
            state.session.info[_CHANGED_KEY] = True

    def committed(session: Session) -> None:
        global _generation
        if session.info.pop(_CHANGED_KEY, False):
            _generation += 1

    def rolled_back(session: Session) -> None:
        session.info.pop(_CHANGED_KEY, None)

    event.listen(Session, "after_flush", noted)
    event.listen(Session, "do_orm_execute", executed)
    event.listen(Session, "after_commit", committed)
    event.listen(Session, "after_rollback", rolled_back)


class SnapshotCache:
    """One process's routing snapshot (see the module)."""

    def __init__(self, ttl_s: float = 0.5) -> None:
        self.ttl_s = ttl_s
        self._snap: brokering.Snapshot | None = None
        self._at = 0.0
        self._generation = -1
        _listen()

    def get(self, session: Session) -> brokering.Snapshot:
        """The snapshot, read again in ``session`` if it is older than ``ttl_s`` or
        this process committed a change to what it holds since."""
        snap, now, generation = self._snap, time.monotonic(), _generation
        if snap is None or now - self._at > self.ttl_s or generation != self._generation:
            snap = brokering.snapshot(session)
            for cluster, part in snap.rows:
                for obj in (cluster, part):
                    if obj in session:
                        session.expunge(obj)
            self._snap, self._at, self._generation = snap, now, generation
        return snap
