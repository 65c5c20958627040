"""Jobs through the REST API on gamma (Slurm 25.11 built from source), once per adapter.

The clusters file holds gamma alone, reached by the adapter under test (``gamma`` is
slurmrestd v0.0.44 in devcluster's file; ``gamma-cli`` and ``gamma-pyslurm`` are renamed
to gamma here; pyslurm runs in this process, as root, submitting with user_id). A job
completes as the enterprise's POSIX user and is charged what sacct reports. Needs
``BROKER_TEST_GAMMA=1`` (``slurm_three_file``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.db import session_scope
from broker.services import slurm_sync

from .._slurm import ensure_posix_user
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER = "tenantgamma"
ACCOUNT = "e_slurm_gamma"
RATE_TFLOPS = 0.2  # devcluster's gamma partition


def gamma_only(three: Path, entry_name: str, out: Path) -> dict[str, Any]:
    """A clusters file with devcluster's ``entry_name`` as the only cluster, ``gamma``."""
    with three.open("rb") as fh:
        entry = next(c for c in tomllib.load(fh)["clusters"] if c["name"] == entry_name)
    entry = {**entry, "name": "gamma", "options": dict(entry["options"])}
    entry["options"].pop("slurm_cluster", None)
    lines = [
        "[[clusters]]",
        f'name = "gamma"\nadapter = "{entry["adapter"]}"\nscratch_dir = "{entry["scratch_dir"]}"',
        "[clusters.options]",
        *(f"{k} = {_toml(v)}" for k, v in entry["options"].items()),
    ]
    for part in entry["partitions"]:
        lines.append("[[clusters.partitions]]")
        lines += [f"{k} = {_toml(v)}" for k, v in part.items()]
    out.write_text("\n".join(lines) + "\n")
    return entry


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.fixture(
    scope="module",
    params=["gamma", "gamma-cli", "gamma-pyslurm"],
    ids=["slurmrestd", "slurm-cli", "pyslurm"],
)
def gamma(
    request: pytest.FixtureRequest,
    slurm_three_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[tuple[Api, str, dict[str, Any], dict[str, Any]]]:
    ensure_posix_user(USER)
    tmp = tmp_path_factory.mktemp("gamma")
    entry = gamma_only(slurm_three_file, request.param, tmp / "clusters.toml")
    shutil.copy(sqlite_template, tmp / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=tmp / "clusters.toml"
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        ent = api.post(
            "/enterprises",
            json={"name": "Slurm Gamma", "posix_user": USER, "slurm_account": ACCOUNT},
        ).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
        member = api.token(ent["id"])
        project = api.post("/projects", json={"enterprise_id": ent["id"], "name": "g"}).json()
        api.post(f"/projects/{project['id']}/approve")
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False)
        assert all(not r.error for r in results), results
        app.state.worker.refresh_clusters()
        yield api, member, project, entry


def _sacct(entry: dict[str, Any], job_id: str) -> tuple[int, int]:
    opts = entry["options"]
    out = (
        subprocess.run(
            [
                os.path.join(opts["bin_dir"], "sacct"),
                "-j",
                job_id,
                "-X",
                "-n",
                "-P",
                "-o",
                "ElapsedRaw,NNodes,Cluster",
            ],
            env={**os.environ, "SLURM_CONF": opts["slurm_conf"]},
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[0]
    )
    elapsed, nodes, cluster = out.split("|")
    assert cluster == "gamma"
    return int(elapsed), int(nodes)


def test_job_on_gamma_completes_and_is_charged_from_sacct(
    gamma: tuple[Api, str, dict[str, Any], dict[str, Any]],
) -> None:
    api, member, project, entry = gamma
    r = api.submit(
        project["id"],
        member,
        cluster="gamma",
        name="hello",
        script="echo hello from $(whoami) on $SLURM_CLUSTER_NAME; sleep 2",
    )
    assert r.status_code == 202, r.text
    assert r.json()["routing"]["cluster"] == "gamma"
    done = api.drive_until(r.json()["id"], {"completed", "failed", "cancelled"}, timeout_s=90)
    assert done["state"] == "completed", done
    assert done["exit_code"] == 0
    out = api.client.get(f"/api/v1/jobs/{done['id']}/output", headers=api.h(member)).text
    assert f"hello from {USER} on gamma" in out  # the enterprise's user, on Slurm 25.11
    elapsed, nodes = _sacct(entry, done["scheduler_job_id"])
    assert done["elapsed_s"] == elapsed >= 2
    assert done["charge_pfh"] == pytest.approx(
        nodes * RATE_TFLOPS * elapsed / 3600 / 1000, rel=1e-9
    )


def test_exit_3_on_gamma_is_failed_with_exit_code_3(
    gamma: tuple[Api, str, dict[str, Any], dict[str, Any]],
) -> None:
    api, member, project, _ = gamma
    job = api.submit(project["id"], member, cluster="gamma", script="exit 3").json()
    done = api.drive_until(job["id"], {"completed", "failed"}, timeout_s=90)
    assert done["state"] == "failed" and done["exit_code"] == 3
