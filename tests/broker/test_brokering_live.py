"""Multi-cluster brokering on the live dev clusters alpha (1 node) and beta (2 nodes).

The clusters file is the dev one with alpha made the faster but pricier cluster, so
each rule shows: size, load, speed against price per the weights, and reachability.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.db import session_scope
from broker.schemas.jobs import JobCreate
from broker.services import brokering, slurm_sync

from .._slurm import DEVCLUSTER, ensure_posix_user
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER, ACCOUNT = "tenantroute", "e_route"
RUN = Path("/var/lib/hpc-broker-dev/run")


def _variant(src: Path, dest: Path) -> Path:
    """The dev clusters with alpha at 0.2 TFLOP/s and price 2, beta at 0.1 and 0.5."""
    text = src.read_text()
    data = tomllib.loads(text)
    rates = {"alpha": (0.2, 2.0), "beta": (0.1, 0.5)}
    lines = []
    current = None
    for line in text.splitlines():
        if line.startswith("name = "):  # a cluster's name (partition names are not in rates)
            value = line.split("=", 1)[1].strip().strip('"')
            current = value if value in rates else current
        if current in rates and line.startswith("rate_tflops"):
            line = f"rate_tflops = {rates[current][0]}"
        if current in rates and line.startswith("price_per_pfh"):
            line = f"price_per_pfh = {rates[current][1]}"
        lines.append(line)
    dest.write_text("\n".join(lines) + "\n")
    assert len(tomllib.loads(dest.read_text())["clusters"]) == len(data["clusters"])
    return dest


def _clear_queues(clusters_file: Path) -> None:
    """Cancel every job left on the dev clusters by earlier runs, and wait until idle."""
    for entry in tomllib.loads(clusters_file.read_text())["clusters"]:
        env = {**os.environ, "SLURM_CONF": entry["options"]["slurm_conf"]}
        ids = subprocess.run(
            ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        if ids:
            subprocess.run(["scancel", *ids], env=env, check=False)
        for _ in range(60):
            if not subprocess.run(
                ["squeue", "-h", "-t", "PD,R,CG", "-o", "%i"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip():
                break
            time.sleep(0.5)


@pytest.fixture(scope="module")
def routed(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Api, str, dict[str, Any]]]:
    import shutil

    ensure_posix_user(USER)
    _clear_queues(slurm_clusters_file)  # routing reads load: start from idle clusters
    tmp = tmp_path_factory.mktemp("route")
    shutil.copy(sqlite_template, tmp / "broker.db")
    clusters = _variant(slurm_clusters_file, tmp / "clusters.toml")
    settings = make_settings(f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=clusters)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        ent = api.post(
            "/enterprises", json={"name": "Route Co", "posix_user": USER, "slurm_account": ACCOUNT}
        ).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 50})
        member = api.token(ent["id"])
        project = api.project(ent["id"])
        with session_scope(app.state.session_factory) as s:
            assert not any(
                r.error for r in slurm_sync.sync(s, settings.load_clusters(), dry_run=False)
            )
        app.state.worker.refresh_clusters()
        yield api, member, project


def _route(api: Api, member: str, project: dict[str, Any], **spec: Any) -> dict[str, Any]:
    r = api.submit(project["id"], member, script="sleep 1", **spec)
    assert r.status_code == 202, r.text
    job = r.json()
    api.post(f"/jobs/{job['id']}/cancel", member)  # routing is what we look at
    return job


def test_too_big_for_alpha_goes_to_beta(routed: tuple[Api, str, dict[str, Any]]) -> None:
    api, member, project = routed
    job = _route(api, member, project, nodes=2)
    assert job["cluster"] == "beta"
    assert any(
        r["cluster"] == "alpha" and "nodes" in r["reason"] for r in job["routing"]["rejected"]
    )
    assert api.get(f"/jobs/{job['id']}").json()["routing"]["cluster"] == "beta"  # stored


def test_idle_faster_wins_and_price_weight_flips_it(
    routed: tuple[Api, str, dict[str, Any]],
) -> None:
    api, member, project = routed
    job = _route(api, member, project)
    assert job["cluster"] == "alpha", job["routing"]
    assert job["routing"]["alternatives"][0]["cluster"] == "beta"
    req = JobCreate(name="j", script="true", nodes=1, time_limit_minutes=10)
    with session_scope(api.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        by_price = brokering.choose(s, req, brokering.Weights(wait=1, run=1, price=1e8))
        assert by_price.chosen.cluster.name == "beta"
        assert "price=1e+08" in by_price.chosen.reasons[-1]


def test_full_alpha_sends_new_jobs_to_beta(routed: tuple[Api, str, dict[str, Any]]) -> None:
    """Alpha busy with a queue behind: waiting there costs more than running slower on beta."""
    api, member, project = routed
    blockers = [
        api.submit(project["id"], member, cluster="alpha", script="sleep 120").json()
        for _ in range(2)
    ]
    try:
        # One runs, the other waits behind it. Which is which is not fixed: submitters
        # work side by side, so the second may reach Slurm a few ms before the first.
        worker = api.client.app.state.worker  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while True:
            worker.run_once()
            states = sorted(api.get(f"/jobs/{b['id']}").json()["state"] for b in blockers)
            if states == ["pending", "running"]:
                break
            assert time.monotonic() < deadline, f"alpha never filled: {states}"
            time.sleep(0.1)
        worker.refresh_clusters()
        job = _route(api, member, project)
        assert job["cluster"] == "beta", job["routing"]
        alpha = next(a for a in job["routing"]["alternatives"] if a["cluster"] == "alpha")
        assert alpha["expected_wait_s"] > 0
    finally:
        for blocker in blockers:
            api.post(f"/jobs/{blocker['id']}/cancel", member)
        for blocker in blockers:
            api.drive_until(blocker["id"], {"cancelled"}, timeout_s=60)


def test_alpha_down_routes_to_beta_until_it_answers(
    routed: tuple[Api, str, dict[str, Any]],
) -> None:
    api, member, project = routed
    worker = api.client.app.state.worker  # type: ignore[attr-defined]
    pid = int((RUN / "alpha-slurmctld.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + 30
        while True:
            worker.refresh_clusters()
            status = {c["name"]: c["status"] for c in api.get("/clusters").json()}
            if status["alpha"] == "down" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == {"alpha": "down", "beta": "up"}
        job = _route(api, member, project)
        assert job["cluster"] == "beta"
        assert any(
            r["cluster"] == "alpha" and "not answering" in r["reason"]
            for r in job["routing"]["rejected"]
        )
    finally:
        subprocess.run(
            [sys.executable, str(DEVCLUSTER), "up", "--two"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    worker.refresh_clusters()
    assert {c["name"]: c["status"] for c in api.get("/clusters").json()}["alpha"] == "up"
    assert _route(api, member, project)["cluster"] == "alpha"
