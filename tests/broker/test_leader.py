"""The worker's leader lock: one worker works, a second waits and takes over when it dies."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from broker import leader
from broker.config import Settings
from broker.db import make_engine, make_session_factory, session_scope
from broker.worker import Worker


def test_file_lock_is_exclusive_and_freed_on_release(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    first, second = leader.for_database(url), leader.for_database(url)
    assert isinstance(first, leader.FileLeaderLock)
    assert first.path == tmp_path / "broker.db.worker.lock"
    assert first.ensure() and first.ensure()
    assert not second.ensure()
    first.release()
    assert second.ensure()
    second.release()


def test_memory_database_needs_no_lock() -> None:
    assert isinstance(leader.for_database("sqlite://"), leader.NoLock)
    with pytest.raises(ValueError, match="no leader lock"):
        leader.for_database("mysql://x@localhost/db")


@pytest.mark.postgres
def test_advisory_lock_is_exclusive_and_lost_with_its_connection(pg_url: str) -> None:
    first = leader.PostgresLeaderLock(pg_url, poll_s=0.1)
    second = leader.PostgresLeaderLock(pg_url, poll_s=0.1)
    try:
        assert first.ensure() and first.check()
        assert not second.ensure()
        # The server ends the leader's session (as when its process dies): the lock goes.
        pid = first._conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        admin = make_engine(pg_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        admin.dispose()
        assert second.ensure()
        assert not first.ensure()  # it notices the loss and cannot take it back
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.postgres
def test_unreachable_database_leaves_the_worker_idle() -> None:
    lock = leader.PostgresLeaderLock("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert not lock.ensure()
    lock.dispose()


def test_run_forever_waits_while_another_holds_the_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    holder = leader.for_database(url)
    assert holder.ensure()
    settings = Settings(database_url=url, data_dir=tmp_path / "data", worker_interval_s=0.05)
    calls: list[float] = []

    class Counting(Worker):
        def run_once(self) -> Any:
            calls.append(time.monotonic())
            return super().run_once()

    from broker import migrate
    from broker.services import clusters

    migrate.upgrade(url)
    factory = make_session_factory(make_engine(url))
    configs = settings.load_clusters()
    with session_scope(factory) as s:
        clusters.sync_config(s, configs)
    worker = Counting(settings, factory, clusters.AdapterPool(configs))
    stop = threading.Event()
    waiting = leader.for_database(url, poll_s=0.05)
    thread = threading.Thread(target=worker.run_forever, args=(stop, waiting))
    thread.start()
    time.sleep(0.4)
    assert calls == []  # idle while the other holds it
    holder.release()
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    assert calls, "the waiting worker never took over"
    assert not waiting.held
