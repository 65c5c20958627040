"""Live: a script's directives cannot grow a job beyond its spec on alpha or beta.

The script asks for two nodes, a second heterogeneous component of two nodes and 30
minutes, and #PBS resources; the spec asks for one node for one minute. Slurm's own
accounting must show one component, one node, one minute, and the broker's job must
list each neutralised line. Alpha submits with sbatch, beta through slurmrestd.
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

from broker.app import create_app
from broker.db import session_scope
from broker.services import slurm_sync
from tests._slurm import ensure_posix_user, load_clusters
from tests.broker.conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER = "brokerdirectives"
ACCOUNT = "e_directives"
SCRIPT = "\n".join(
    [
        "#!/bin/bash",
        "#SBATCH -J kept --mail-type=END",
        "#SBATCH --nodes=2",
        "#SBATCH --time=30",
        "#SBATCH hetjob",
        "#SBATCH --nodes=2 --time=30",
        "#PBS -l nodes=2,walltime=00:30:00",
        'echo "nodes=$SLURM_JOB_NUM_NODES het=${SLURM_HET_SIZE:-none}"',
        "",
    ]
)
NEUTRALISED = [
    "line 3: '#SBATCH --nodes=2'",
    "line 4: '#SBATCH --time=30'",
    "line 5: '#SBATCH hetjob'",
    "line 6: '#SBATCH --nodes=2 --time=30'",
    "line 7: '#PBS -l nodes=2,walltime=00:30:00'",
]


@pytest.fixture(scope="module")
def live(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Api, str, dict[str, Any]]]:
    ensure_posix_user(USER)
    tmp = tmp_path_factory.mktemp("directives")
    shutil.copy(sqlite_template, tmp / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=slurm_clusters_file
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        ent = api.post(
            "/enterprises",
            json={"name": "Directives", "posix_user": USER, "slurm_account": ACCOUNT},
        ).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
        member = api.token(ent["id"])
        project = api.post("/projects", json={"enterprise_id": ent["id"], "name": "d"}).json()
        api.post(f"/projects/{project['id']}/approve")
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False)
        assert all(not r.error for r in results), results
        app.state.worker.refresh_clusters()
        yield api, member, project


def _sacct_allocations(clusters_file: Path, cluster: str, job_id: str) -> list[list[str]]:
    """JobID, NNodes, Timelimit and JobName of each allocation, once slurmdbd has them all."""
    conf = load_clusters(clusters_file)[cluster]["options"]["slurm_conf"]
    # Job ids restart with a cluster's state: the user and start time single it out.
    argv = ["sacct", "-j", job_id, "-u", USER, "-S", "now-1hour", "-X", "-n", "-P"]
    deadline = time.monotonic() + 30
    while True:  # slurmdbd records a finished job a moment after squeue drops it
        out = subprocess.run(
            [*argv, "-o", "JobID,NNodes,Timelimit,JobName,State"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [line.split("|") for line in out.strip().splitlines()]
        if rows and all(row[-1] == "COMPLETED" for row in rows):
            return [row[:-1] for row in rows]
        assert time.monotonic() < deadline, f"sacct has no finished record: {rows}"
        time.sleep(0.5)


@pytest.mark.parametrize("cluster", ["alpha", "beta"])
def test_script_directives_do_not_outgrow_the_spec(
    live: tuple[Api, str, dict[str, Any]], slurm_clusters_file: Path, cluster: str
) -> None:
    api, member, project = live
    r = api.submit(
        project["id"],
        member,
        cluster=cluster,
        name="spec-name",
        script=SCRIPT,
        nodes=1,
        time_limit_minutes=1,
    )
    assert r.status_code == 202, r.text
    warnings = r.json()["warnings"]
    assert [w.split(" neutralised: ")[0] for w in warnings] == NEUTRALISED
    done = api.drive_until(r.json()["id"], {"completed", "failed", "cancelled"}, timeout_s=90)
    assert done["state"] == "completed", done
    assert done["warnings"] == warnings
    job_id = done["scheduler_job_id"]
    # One allocation (a heterogeneous job would list job_id+0 and job_id+1), as the spec.
    assert _sacct_allocations(slurm_clusters_file, cluster, job_id) == [
        [job_id, "1", "00:01:00", "spec-name"]
    ]
    out = api.client.get(f"/api/v1/jobs/{done['id']}/output", headers=api.h(member)).text
    assert "nodes=1 het=none" in out
