"""Concurrent submissions through the HTTP API never overspend the quota.

A quota that fits exactly 20 holds receives 100 simultaneous submissions: exactly 20
are accepted (202) and 80 refused (409 QuotaExceeded), on PostgreSQL (row lock on the
enterprise balance, `brokerctl api` with one and with two processes, each batching its
own submissions) and on SQLite (`BEGIN IMMEDIATE`, `brokerctl serve`).
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Role
from broker.services import ledger, projects, tenants, tokens
from broker.services.principal import SYSTEM
from broker.units import pfh_to_units

from ..servers import brokerctl_server, clean_env

CLUSTERS = """
[[clusters]]
name = "local"
adapter = "local"
scratch_dir = "{root}/scratch"
[clusters.options]
root_dir = "{root}/sched"
node_names = ["n1", "n2"]
[[clusters.partitions]]
name = "default"
nodes = 2
cpus_per_node = 2
max_time_minutes = 120
rate_tflops = 1.0
"""
HOLD_PFH = 0.001  # 1 node x 60 min x 1 TFLOP/s


def _tenant(db_url: str) -> tuple[str, str, str]:
    """An enterprise whose quota fits exactly 20 holds; returns (enterprise, project, token)."""
    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as s:
        ent = tenants.create_enterprise(s, SYSTEM, name=f"race-{uuid.uuid4().hex[:6]}")
        ledger.grant(s, SYSTEM, ent.id, pfh_to_units(HOLD_PFH * 20), "exactly 20 jobs")
        project = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="race")
        projects.approve_project(s, SYSTEM, project.id)
        _, token = tokens.create_token(s, SYSTEM, name="m", role=Role.MEMBER, enterprise_id=ent.id)
        ids = (str(ent.id), str(project.id), token)
    engine.dispose()
    return ids


def _race(base: str, project_id: str, token: str, n: int = 100) -> list[int]:
    barrier = threading.Barrier(n)
    body = {"name": "race", "script": "sleep 20", "nodes": 1, "time_limit_minutes": 60}

    def one(i: int) -> int:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            r = client.post(
                f"{base}/projects/{project_id}/jobs",
                json=body,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{i}"},
            )
            assert r.status_code in (202, 409), r.text
            if r.status_code == 409:
                assert r.json()["error"] == "QuotaExceeded"
            return r.status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _check(db_url: str, enterprise_id: str, codes: list[int]) -> None:
    assert codes.count(202) == 20, codes
    assert codes.count(409) == 80
    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as s:
        assert ledger.check_invariants(s, uuid.UUID(enterprise_id)) == []
        bal = ledger.balance(s, SYSTEM, uuid.UUID(enterprise_id))
        assert bal.available_units + bal.charged_units + bal.held_units == bal.granted_units
        assert bal.available_units >= 0
    engine.dispose()


def _env(db_url: str, tmp_path: Path) -> dict[str, str]:
    clusters = tmp_path / "clusters.toml"
    clusters.write_text(CLUSTERS.format(root=tmp_path))
    return clean_env(
        BROKER_DATABASE_URL=db_url,
        BROKER_CLUSTERS_FILE=str(clusters),
        BROKER_RATE_LIMIT_PER_MINUTE="0",
        BROKER_WORKER_INTERVAL_S="0.5",
    )


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_100_concurrent_submissions_on_postgres(
    pg_url: str, tmp_path: Path, processes: int
) -> None:
    ent, project, token = _tenant(pg_url)
    args = ("--workers", str(processes))
    # Two processes each import the app: slow to start on a loaded 2-core machine.
    server = brokerctl_server("api", tmp_path, _env(pg_url, tmp_path), timeout_s=120, args=args)
    with server as base:
        codes = _race(base, project, token)
    _check(pg_url, ent, codes)


@pytest.mark.slow
def test_100_concurrent_submissions_on_sqlite_serve(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'broker.db'}"
    from broker import migrate

    migrate.upgrade(db_url)
    ent, project, token = _tenant(db_url)
    with brokerctl_server("serve", tmp_path, _env(db_url, tmp_path)) as base:
        codes = _race(base, project, token)
        # The worker runs meanwhile (serve): cancel what it started so nothing lingers.
        with httpx.Client(timeout=30) as client:
            jobs = client.get(
                f"{base}/jobs?limit=100", headers={"Authorization": f"Bearer {token}"}
            ).json()["items"]
            for job in jobs:
                client.post(
                    f"{base}/jobs/{job['id']}/cancel", headers={"Authorization": f"Bearer {token}"}
                )
    _check(db_url, ent, codes)
