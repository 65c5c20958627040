"""What the submission load tests and ``benchmarks/submit_load.py`` share: a one-cluster
clusters file, ``brokerctl api --workers N`` on a database, and tenants with a token."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Role
from broker.services import ledger, projects, tenants, tokens
from broker.services.principal import SYSTEM

from .servers import VENV_BIN, clean_env, free_port

#: One local cluster, 4 nodes at 1 TFLOP/s: a 1-node, 60-minute job holds 0.001 PFlop·h.
CLUSTERS = """
[[clusters]]
name = "local"
adapter = "local"
scratch_dir = "{root}/scratch"
[clusters.options]
root_dir = "{root}/sched"
[[clusters.partitions]]
name = "default"
nodes = 4
cpus_per_node = 2
max_time_minutes = 120
rate_tflops = 1.0
"""


def write_clusters(root: Path) -> Path:
    path = root / "clusters.toml"
    path.write_text(CLUSTERS.format(root=root))
    return path


@dataclass(frozen=True)
class LoadTenant:
    enterprise_id: uuid.UUID
    project: str
    token: str
    token_id: uuid.UUID


def make_tenants(db_url: str, n: int, grant_units: int, prefix: str = "load") -> list[LoadTenant]:
    """``n`` enterprises, each granted ``grant_units`` with an approved project and a
    member token."""
    engine = make_engine(db_url)
    out = []
    with session_scope(make_session_factory(engine)) as s:
        for i in range(n):
            name = f"{prefix}-{i}-{uuid.uuid4().hex[:6]}"
            ent = tenants.create_enterprise(s, SYSTEM, name=name)
            ledger.grant(s, SYSTEM, ent.id, grant_units, "load")
            project = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="p")
            projects.approve_project(s, SYSTEM, project.id)
            row, token = tokens.create_token(
                s, SYSTEM, name="m", role=Role.MEMBER, enterprise_id=ent.id
            )
            out.append(LoadTenant(ent.id, str(project.id), token, row.id))
    engine.dispose()
    return out


@contextmanager
def api_processes(
    db_url: str, root: Path, workers: int = 1, log_level: str = "INFO", **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``brokerctl api --workers N`` (worker off, rate limits off) on ``db_url``:
    (the process, its base URL), once ``/healthz`` answers. Stopped on exit."""
    clusters = write_clusters(root)
    environ = clean_env(
        BROKER_DATABASE_URL=db_url,
        BROKER_CLUSTERS_FILE=str(clusters),
        BROKER_RATE_LIMIT_PER_MINUTE="0",
        BROKER_ANON_RATE_LIMIT_PER_MINUTE="0",
        **env,
    )
    port = free_port()
    log_path = root / f"api-{port}.log"
    command = [str(VENV_BIN / "brokerctl"), "api", "--workers", str(workers)]
    command += ["--port", str(port), "--log-level", log_level]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=root, env=environ, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"API did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            yield proc, base
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
