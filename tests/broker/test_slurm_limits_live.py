"""Slurm as a second line, on the live dev clusters alpha and beta (slurm-cli, slurmrestd).

Approving a project creates its accounts, the enterprise's user association and the
period's ``GrpTRESMins`` on every cluster at once (no ``slurm sync``); suspending the
enterprise blocks a direct ``sbatch`` under its accounts, reactivating unblocks it;
closing a project blocks its account. With alpha's only node drained, a submit for
alpha is refused (or routed to beta), the dashboard shows alpha degraded; a quick
validation of a healthy node does not degrade it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from broker.app import create_app
from broker.cli import app as brokerctl
from broker.db import session_scope
from broker.services import slurm_sync

from .._slurm import ensure_posix_user, load_clusters
from ..web.conftest import log_in
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER = "tenantlimits"
ACCOUNT = "e_limits_live"


@pytest.fixture(scope="module")
def limits(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Api, str, dict[str, Any]]]:
    ensure_posix_user(USER)
    tmp = tmp_path_factory.mktemp("limits")
    shutil.copy(sqlite_template, tmp / "broker.db")
    url = f"sqlite:///{tmp / 'broker.db'}"
    settings = make_settings(url, tmp, clusters_file=slurm_clusters_file)
    app = create_app(settings, run_worker=False)
    env = {
        "BROKER_DATABASE_URL": url,
        "BROKER_CLUSTERS_FILE": str(slurm_clusters_file),
        "BROKER_DATA_DIR": str(tmp / "data"),
    }
    with TestClient(app) as client:
        yield Api(client, operator_token(app)), url, env


def _conf(clusters_file: Path, cluster: str) -> str:
    return str(load_clusters(clusters_file)[cluster]["options"]["slurm_conf"])


def _assoc(conf: str, *accounts: str) -> list[list[str]]:
    out = subprocess.run(
        [
            "sacctmgr",
            "-nP",
            "show",
            "assoc",
            f"account={','.join(accounts)}",
            "format=account,user,grptresmins,grpsubmit",
        ],
        env={**os.environ, "SLURM_CONF": conf},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines()]


def _sbatch(conf: str, account: str) -> subprocess.CompletedProcess[str]:
    """``sbatch`` run by the enterprise's user directly, not through the broker."""
    cmd = (
        f"cd /tmp && SLURM_CONF={conf} sbatch --parsable --account={account} -t 1"
        " -o /dev/null --wrap=true"
    )
    return subprocess.run(
        ["su", USER, "-s", "/bin/bash", "-c", cmd], capture_output=True, text=True, check=False
    )


def _until(conf: str, account: str, accepted: bool) -> subprocess.CompletedProcess[str]:
    """sbatch until Slurm gives the expected answer (slurmctld gets slurmdbd's changes
    within a moment), then cancel what it accepted."""
    for _ in range(40):
        proc = _sbatch(conf, account)
        if (proc.returncode == 0) is accepted:
            break
        time.sleep(0.25)
    if proc.returncode == 0:
        job_id = proc.stdout.strip().split(";")[0]
        subprocess.run(["scancel", job_id], env={**os.environ, "SLURM_CONF": conf}, check=False)
    return proc


def _brokerctl(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(brokerctl, list(args), env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def test_approve_suspend_reactivate_and_close_reach_slurm(
    limits: tuple[Api, str, dict[str, Any]], slurm_clusters_file: Path
) -> None:
    api, _, env = limits
    ent = api.post(
        "/enterprises", json={"name": "Limits Live", "posix_user": USER, "slurm_account": ACCOUNT}
    ).json()
    assert api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 3}).status_code == 201
    project = api.project(ent["id"], approve=False, name="poc", allocation_pfh=1)
    approved = api.post(f"/projects/{project['id']}/approve")
    assert approved.status_code == 200, approved.text
    status = approved.json()["slurm"]
    assert {status[c]["status"] for c in ("alpha", "beta")} == {"ok"}, status
    account = f"{ACCOUNT}-poc"
    for cluster in ("alpha", "beta"):
        conf = _conf(slurm_clusters_file, cluster)
        rows = _assoc(conf, ACCOUNT, account)
        # No `slurm sync` was run: the approval created the accounts and the user's
        # association, with this period's budget: 3 PFlop·h = 1.8e8 billing minutes
        # (1 billing = 1 GFLOP/s), the project's allocation of 1 PFlop·h = 6e7.
        assert [account, USER, "", ""] in rows, rows
        assert [ACCOUNT, "", "billing=180000000", ""] in rows, rows
        assert [account, "", "billing=60000000", ""] in rows, rows
        assert _until(conf, account, accepted=True).returncode == 0

    _brokerctl(env, "enterprise", "suspend", ACCOUNT)
    for cluster in ("alpha", "beta"):
        conf = _conf(slurm_clusters_file, cluster)
        refused = _until(conf, account, accepted=False)
        assert refused.returncode != 0 and "AssocGrpSubmitJobsLimit" in refused.stderr, refused
        assert _until(conf, ACCOUNT, accepted=False).returncode != 0

    _brokerctl(env, "enterprise", "activate", ACCOUNT)
    for cluster in ("alpha", "beta"):
        proc = _until(_conf(slurm_clusters_file, cluster), account, accepted=True)
        assert proc.returncode == 0, proc.stderr

    closed = api.post(f"/projects/{project['id']}/close")
    assert closed.status_code == 200 and closed.json()["slurm"]["alpha"]["status"] == "ok"
    conf = _conf(slurm_clusters_file, "alpha")
    assert _until(conf, account, accepted=False).returncode != 0  # the closed project's
    assert _until(conf, ACCOUNT, accepted=True).returncode == 0  # the enterprise's still


def test_missing_posix_user_is_reported_at_approval(
    limits: tuple[Api, str, dict[str, Any]],
) -> None:
    api, _, _ = limits
    ent = api.post(
        "/enterprises",
        json={"name": "Nobody Here", "posix_user": "hcb_nosuchuser", "slurm_account": "e_nosuch"},
    ).json()
    project = api.project(ent["id"], approve=False)
    status = api.post(f"/projects/{project['id']}/approve").json()["slurm"]
    assert status["alpha"]["status"] == "error"  # slurm-cli: sbatch runs as that user here
    assert "hcb_nosuchuser" in status["alpha"]["detail"]
    assert status["beta"]["status"] == "ok"  # slurmrestd: the cluster knows its users
    shown = api.get(f"/projects/{project['id']}").json()["slurm"]
    assert shown["alpha"]["status"] == "error"


def _scontrol(conf: str, *args: str) -> None:
    subprocess.run(
        ["scontrol", *args], env={**os.environ, "SLURM_CONF": conf}, check=True, capture_output=True
    )


def test_alpha_drained_gets_no_job_and_shows_degraded(
    limits: tuple[Api, str, dict[str, Any]], slurm_clusters_file: Path
) -> None:
    api, _, _ = limits
    app = api.client.app
    ensure_posix_user(f"{USER}2")  # slurm-cli submits as the enterprise's user here
    ent = api.post(
        "/enterprises",
        json={"name": "Drained Live", "posix_user": f"{USER}2", "slurm_account": "e_drained"},
    ).json()
    api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
    member, project = api.token(ent["id"]), api.project(ent["id"])
    conf = _conf(slurm_clusters_file, "alpha")
    # Every node of alpha: with only its CPU node drained, a CPU job would go to its
    # partition gpu (CPU jobs stay off GPU partitions only while another one fits).
    nodes = "nodename=localhost,alpha-g1,alpha-g2"
    _scontrol(conf, "update", nodes, "state=drain", "reason=h20-test")
    try:
        app.state.worker.refresh_clusters()  # type: ignore[attr-defined]  # the worker's probe
        r = api.submit(project["id"], member, cluster="alpha", script="true")
        assert r.status_code == 422, r.text
        assert "in service" in r.json()["detail"]
        anywhere = api.submit(project["id"], member, script="true")
        assert anywhere.status_code == 202, anywhere.text
        assert anywhere.json()["routing"]["cluster"] == "beta"  # routed elsewhere
        (alpha,) = [c for c in api.get("/clusters").json() if c["name"] == "alpha"]
        assert alpha["status"] == "degraded"
        assert log_in(api.client, api.operator).status_code == 303
        page = api.client.get("/ops/clusters/alpha").text
        assert 'class="status status-degraded">degraded<' in page
        listing = api.client.get("/ops/clusters").text
        assert "status-degraded" in listing
        api.post(f"/jobs/{anywhere.json()['id']}/cancel", member)
    finally:
        _scontrol(conf, "update", nodes, "state=resume")
    for _ in range(60):  # resumed, the node is "idle*" (not responding) until slurmd answers
        app.state.worker.refresh_clusters()  # type: ignore[attr-defined]
        (alpha,) = [c for c in api.get("/clusters").json() if c["name"] == "alpha"]
        if alpha["status"] == "up":
            break
        time.sleep(0.5)
    assert alpha["status"] == "up"
    back = api.submit(project["id"], member, cluster="alpha", script="true")
    assert back.status_code == 202, back.text
    api.post(f"/jobs/{back.json()['id']}/cancel", member)
    with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
        assert slurm_sync.desired(s, "alpha")  # the accounts are the ledger's
