"""brokerctl serve | api as real processes: health, metrics, JSON logs with request ids."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Role
from broker.services import tokens
from broker.services.principal import SYSTEM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@contextmanager
def brokerctl(args: list[str], tmp: Path, db: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    log = tmp / f"{args[0]}.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "BROKER_DATABASE_URL": f"sqlite:///{db}",
        "BROKER_DATA_DIR": str(tmp / "data"),
    }
    exe = str(Path(sys.executable).with_name("brokerctl"))
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, *args, "--port", str(port)], env=env, stderr=out, cwd=tmp)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if _get(f"{base}/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            yield base, log
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_api_logs_json_with_request_ids_and_serves_metrics(
    tmp_path: Path, sqlite_template: Path
) -> None:
    db = tmp_path / "broker.db"
    shutil.copy(sqlite_template, db)
    with brokerctl(["api"], tmp_path, db) as (base, log):
        status, headers, _ = _get(f"{base}/api/v1/readyz", {"X-Request-ID": "trace-42"})
        assert status == 200 and headers["x-request-id"] == "trace-42"
        status, _, text = _get(f"{base}/metrics")
        assert status == 200 and "broker_http_requests_total" in text
        assert 'broker_jobs{state="accepted"} 0.0' in text
        status, _, body = _get(f"{base}/api/v1/jobs")
        assert status == 401 and json.loads(body)["error"] == "Unauthenticated"
        time.sleep(0.2)
    records = _records(log)
    access = [r for r in records if r.get("logger") == "broker.access"]
    traced = [r for r in access if r.get("request_id") == "trace-42"]
    assert traced and traced[0]["route"] == "/api/v1/readyz" and traced[0]["status"] == 200
    assert any(r["route"] == "/api/v1/jobs" and r["status"] == 401 for r in access)
    assert not any(r.get("logger") == "broker.worker" for r in records)  # no worker in `api`


def test_serve_migrates_a_new_database_and_runs_the_worker(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with brokerctl(["serve"], tmp_path, db) as (base, log):
        deadline = time.monotonic() + 15
        while True:
            status, _, body = _get(f"{base}/readyz")
            if status == 200 and json.loads(body)["clusters"].get("local") == "up":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
    records = _records(log)
    assert any(r.get("msg") == "leader lock acquired" for r in records)
    assert (tmp_path / "new.db.worker.lock").exists()


@pytest.mark.postgres
def test_api_workers_share_the_port_and_the_root_options(tmp_path: Path, pg_url: str) -> None:
    """`brokerctl --database-url PG api --workers 2`: two processes, both on PG (not $BROKER_*)."""
    engine = make_engine(pg_url)
    with session_scope(make_session_factory(engine)) as s:
        _, token = tokens.create_token(
            s, SYSTEM, name="ops", role=Role.OPERATOR, enterprise_id=None
        )
    engine.dispose()
    unused = tmp_path / "unused.db"  # what the environment names: the option must win
    args = ["--database-url", pg_url, "api", "--workers", "2"]
    with brokerctl(args, tmp_path, unused) as (base, _log):
        holders = _listening_pids(base)  # the supervisor and its two API processes
        assert len(holders) == 3, holders
        auth = {"Authorization": f"Bearer {token}"}
        req = urllib.request.Request(
            f"{base}/api/v1/enterprises",
            data=json.dumps({"name": "Workers Ltd"}).encode(),
            headers={**auth, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201
        seen = [_get(f"{base}/api/v1/enterprises", auth) for _ in range(20)]
        assert all(s == 200 and "Workers Ltd" in body for s, _, body in seen)
    assert not unused.exists()


def _listening_pids(base: str) -> set[int]:
    """The processes that hold ``base``'s listening socket."""
    port = int(base.rsplit(":", 1)[1])
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return {int(part.split(",")[0]) for part in out.split("pid=")[1:]}
