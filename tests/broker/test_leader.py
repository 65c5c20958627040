"""The worker's leader lock: one worker works, a second waits and takes over when it dies."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import leader
from broker.config import Settings
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Job, Role
from broker.schemas.jobs import JobCreate
from broker.services import jobs, ledger, projects, tenants
from broker.services.principal import SYSTEM, Principal
from broker.units import pfh_to_units
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
        # pg_terminate_backend only signals the backend: its locks go once it has exited.
        wait_for("the terminated leader's lock to go", second.ensure, timeout_s=10)
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


CLUSTERS = """
[[clusters]]
name = "local"
adapter = "local"
scratch_dir = "{tmp}/scratch"
options = {{ root_dir = "{tmp}/sched", node_names = ["n1", "n2"] }}
[[clusters.partitions]]
name = "default"
nodes = 2
max_time_minutes = 60
"""


class WorkerProcess:
    """``brokerctl worker`` as a child process, its JSON log lines read from a file."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path, metrics_port: int = 0) -> None:
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        brokerctl = Path(sys.executable).with_name("brokerctl")
        self.proc = subprocess.Popen(
            [
                str(brokerctl),
                "worker",
                "--leader-poll-s",
                "0.5",
                "--metrics-port",
                str(metrics_port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def said(self, msg: str) -> bool:
        return any(r.get("msg") == msg for r in self.records())

    def submitted(self) -> int:
        return sum(r.get("submitted", 0) + r.get("adopted", 0) for r in self.records())

    def stop(self) -> None:
        self._log.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Any, timeout_s: float = 20.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def workers(pg_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], list[WorkerProcess]]]:
    clusters_file = tmp_path / "clusters.toml"
    clusters_file.write_text(CLUSTERS.format(tmp=tmp_path))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "BROKER_DATABASE_URL": pg_url,
        "BROKER_CLUSTERS_FILE": str(clusters_file),
        "BROKER_DATA_DIR": str(tmp_path / "data"),
        "BROKER_WORKER_INTERVAL_S": "0.2",
    }
    started: list[WorkerProcess] = []
    yield env, started
    for w in started:
        w.stop()


def _submit(url: str, project: Any, n: int) -> list[uuid.UUID]:
    member = Principal(token_id=None, name="m", role=Role.MEMBER, enterprise_id=project[1])
    engine = make_engine(url)
    ids = []
    with session_scope(make_session_factory(engine)) as s:
        for i in range(n):
            req = JobCreate(name=f"j{i}", script="echo hi", nodes=1, time_limit_minutes=5)
            ids.append(
                jobs.submit(
                    s, member, project[0], req, idempotency_key=None, max_script_bytes=4096
                ).job.id
            )
    engine.dispose()
    return ids


def _states(url: str) -> dict[uuid.UUID, str]:
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as s:
        out = {j.id: j.state.value for j in s.query(Job)}
    engine.dispose()
    return out


def _tenant(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as s:
        ent = tenants.create_enterprise(s, SYSTEM, name="Acme")
        ledger.grant(s, SYSTEM, ent.id, pfh_to_units(100), "test")
        proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="poc")
        projects.approve_project(s, SYSTEM, proj.id)
        ids = (proj.id, ent.id)
    engine.dispose()
    return ids


@pytest.mark.postgres
def test_second_worker_takes_over_when_the_leader_is_killed(
    pg_url: str, tmp_path: Path, workers: tuple[dict[str, str], list[WorkerProcess]]
) -> None:
    env, started = workers
    first = WorkerProcess("first", env, tmp_path)
    started.append(first)
    wait_for("the first worker to lead", lambda: first.said("leader lock acquired"))
    port = free_port()
    second = WorkerProcess("second", env, tmp_path, metrics_port=port)
    started.append(second)
    wait_for(
        "the second worker to wait",
        lambda: second.said("another worker holds the leader lock; waiting"),
    )
    project = _tenant(pg_url)
    batch1 = _submit(pg_url, project, 4)
    wait_for("batch 1 submitted", lambda: all(_states(pg_url)[j] != "accepted" for j in batch1))
    wait_for("the first worker to log it", lambda: first.submitted() == 4)
    assert second.submitted() == 0
    assert not second.said("leader lock acquired")

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    killed = time.monotonic()
    batch2 = _submit(pg_url, project, 4)
    wait_for("the second worker to lead", lambda: second.said("leader lock acquired"))
    takeover_s = time.monotonic() - killed
    wait_for("batch 2 submitted", lambda: all(_states(pg_url)[j] != "accepted" for j in batch2))
    wait_for("the second worker to log it", lambda: second.submitted() == 4)
    print(f"takeover after kill -9: {takeover_s:.2f} s")
    assert takeover_s < 5.0

    # The standalone worker serves its own /metrics: it leads now, and its loop runs.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {
        (m.name, tuple(sorted(m.labels.items()))): m.value
        for f in text_string_to_metric_families(text)
        for m in f.samples
    }
    assert samples[("broker_worker_leader", ())] == 1
    assert samples[("broker_worker_last_pass_timestamp_seconds", ())] > time.time() - 10
    assert samples[("broker_jobs", (("state", "accepted"),))] == 0

    # Every job went to the scheduler exactly once: one local job dir per broker job.
    metas = [
        json.loads((d / "meta.json").read_text()) for d in (tmp_path / "sched" / "jobs").iterdir()
    ]
    tags = sorted(m["tag"] for m in metas)
    assert len(tags) == len(set(tags)) == 8
    assert tags == sorted(str(j) for j in batch1 + batch2)
