"""GPU nodes end to end on the live dev cluster alpha (its `gpu` partition: two nodes of two
fake GPUs each), the GPU kernels under numba's CUDA simulator at quick sizes: rates set per
GPU; a node whose GPU misses its reference degraded and drained naming the GPU; a job with
gpus_per_node routed to the GPU partition, its GPUs in sacct, charged CPU + GPU rate."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import scheduler_adapters as sa_
from broker.app import create_app
from broker.db import session_scope
from broker.models import (
    ChargeLine,
    GpuResult,
    Node,
    NodeRate,
    Partition,
    RunState,
    Validation,
    ValidationRun,
)
from broker.services import slurm_sync, validation
from broker.services.principal import SYSTEM

from .._slurm import ensure_posix_user, load_clusters
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

VALIDATOR = "hcbvalidator"
TENANT = "gpulive"
NODES = ("alpha-g1", "alpha-g2")


@pytest.fixture(scope="module")
def glive(
    slurm_clusters_file: Path,
    kernels_python: str,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[tuple[Api, dict[str, Any], str, dict[str, Any], dict[str, str]]]:
    ensure_posix_user(VALIDATOR, system=True)
    ensure_posix_user(TENANT)
    alpha = load_clusters(slurm_clusters_file)["alpha"]
    if not any(p["name"] == "gpu" for p in alpha["partitions"]):
        pytest.fail("alpha has no gpu partition: bring the dev clusters up again")
    tmp = tmp_path_factory.mktemp("glive")
    shutil.copy(sqlite_template, tmp / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp / 'broker.db'}",
        tmp,
        clusters_file=slurm_clusters_file,
        validation_min_gemm_peak_ratio=0.0,
        validation_user=VALIDATOR,
        validation_python=kernels_python,
    )
    env = {**os.environ, "SLURM_CONF": alpha["options"]["slurm_conf"]}
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        ent = api.post(
            "/enterprises", json={"name": TENANT, "posix_user": TENANT, "slurm_account": TENANT}
        ).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
        member = api.token(ent["id"])
        project = api.post("/projects", json={"enterprise_id": ent["id"], "name": "gpu"}).json()
        api.post(f"/projects/{project['id']}/approve")
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(
                s,
                settings.load_clusters(),
                dry_run=False,
                only="alpha",
                service=(settings.validation_account, VALIDATOR),
            )
            assert not [r for r in results if r.cluster == "alpha" and r.error], results
            # The fake GPUs are measured by the CUDA simulator, at quick sizes.
            part = s.scalar(select(Partition).where(Partition.name == "gpu"))
            assert part is not None
            part.validation_args = "--quick --repeat 1 --threads 1"
            part.validation_environment = {"NUMBA_ENABLE_CUDASIM": "1"}
            part.quick_references, part.gpu_quick_references = {}, {}
        app.state.worker.refresh_clusters()
        try:
            yield api, ent, member, project, env
        finally:
            for node in NODES:  # leave alpha's GPU nodes in service whatever happened
                with contextlib.suppress(sa_.SchedulerError):
                    app.state.adapters.get("alpha").resume(node)


def _sinfo(env: dict[str, str], node: str) -> str:
    return subprocess.run(
        ["sinfo", "-N", "-h", "-o", "%N|%T|%E", "-n", node],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _finished(app: Any, runs: list[ValidationRun], timeout_s: float = 120) -> dict[str, Any]:
    """Wait until every run's job has ended in Slurm; their JobInfo by job id."""
    adapter = app.state.adapters.get("alpha")
    ids = [r.scheduler_job_id for r in runs if r.scheduler_job_id]
    assert len(ids) == len(runs), [r.reasons for r in runs]
    deadline = time.monotonic() + timeout_s
    while True:
        infos = adapter.status(ids)
        if all(i in infos and infos[i].state.terminal for i in ids):
            return dict(infos)
        assert time.monotonic() < deadline, infos
        time.sleep(0.5)


def test_gpu_nodes_validated_rated_drained_routed_and_charged(
    glive: tuple[Api, dict[str, Any], str, dict[str, Any], dict[str, str]],
) -> None:
    api, ent, member, project, env = glive
    app: Any = api.client.app
    factory = app.state.session_factory
    t0 = time.monotonic()

    # Both GPU nodes validated at once; g1 judged without GPU references, g2 against a
    # DGEMM reference no simulated GPU can meet.
    with session_scope(factory) as s:
        runs = validation.start_campaign(
            s, app.state.adapters, app.state.settings, SYSTEM, "alpha", partition="gpu"
        )
        assert sorted(validation.node_name(s, r) for r in runs) == list(NODES)
        s.expunge_all()
    infos = _finished(app, runs)
    verdicts: dict[str, ValidationRun] = {}
    for run in runs:
        with session_scope(factory) as s:
            row = s.get(ValidationRun, run.id)
            assert row is not None
            name = validation.node_name(s, row)
            if name == "alpha-g2":
                part = s.scalar(select(Partition).where(Partition.name == "gpu"))
                assert part is not None
                part.gpu_quick_references = {"dgemm_gflops": [1e6, -0.5]}
            info = infos[row.scheduler_job_id or ""]
            validation.ingest(
                s, app.state.adapters, app.state.settings, row, info, datetime.now(UTC)
            )
            s.flush()
            s.expunge(row)
            verdicts[name] = row
    validated_s = time.monotonic() - t0

    good, bad = verdicts["alpha-g1"], verdicts["alpha-g2"]
    assert good.state is RunState.PASSED, good.reasons
    with session_scope(factory) as s:
        g1 = s.scalar(select(Node).where(Node.name == "alpha-g1"))
        assert g1 is not None and g1.validation is Validation.VALIDATED
        assert (g1.gpus, g1.gpu_type) == (2, "h200")
        figures = list(s.scalars(select(GpuResult).where(GpuResult.run_id == good.id)))
        assert [(f.gpu_index, f.simulated, f.passed) for f in figures] == [
            (0, True, True),
            (1, True, True),
        ]
        assert all(f.dgemm_gflops and f.sgemm_gflops for f in figures)
        rate = s.scalar(select(NodeRate).where(NodeRate.run_id == good.id))
        assert rate is not None and rate.precision == "fp64"
        assert len(rate.gpu_mflops) == 2 and all(g >= 1 for g in rate.gpu_mflops)
        assert rate.cpu_mflops and rate.rate_mflops == rate.cpu_mflops + sum(rate.gpu_mflops)
        assert g1.rate_mflops == rate.rate_mflops

    assert bad.state is RunState.FAILED
    assert bad.reasons[0].startswith("gpu0 (") and "dgemm_gflops" in bad.reasons[0]
    state = _sinfo(env, "alpha-g2")
    assert "drain" in state.split("|")[1] and "gpu0" in state, state
    nodes = {n["name"]: n for n in api.get("/clusters/alpha/nodes").json()}
    assert nodes["alpha-g2"]["validation"] == "degraded" and "gpu0" in nodes["alpha-g2"]["reason"]
    assert [f["index"] for f in nodes["alpha-g1"]["gpu_figures"]] == [0, 1]

    # A GPU job, its cluster named but not its partition: routed to the GPU partition,
    # onto the node in service; its GPUs in sacct; charged the node's CPU + GPU rate.
    job = api.submit(
        project["id"],
        member,
        cluster="alpha",
        gpus_per_node=1,
        script='echo "gpus=$CUDA_VISIBLE_DEVICES"',
    ).json()
    assert job["partition"] == "gpu", job
    done = api.drive_until(job["id"], {"completed"}, timeout_s=60)
    assert done["node_list"] == ["alpha-g1"]  # alpha-g2 is drained
    alloc = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", done["scheduler_job_id"], "-o", "AllocTRES"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "gres/gpu=" in alloc, alloc
    with session_scope(factory) as s:
        (line,) = s.scalars(select(ChargeLine).where(ChargeLine.job_id == uuid.UUID(job["id"])))
        assert line.node == "alpha-g1" and line.rate_id == rate.id
        assert line.rate_mflops == rate.cpu_mflops + sum(rate.gpu_mflops)
        assert line.gpu_mflops == sum(rate.gpu_mflops) and line.precision == "fp64"
        assert (line.gpus, line.node_gpus) == (2, 2)  # exclusive: the whole node
    month = datetime.now(UTC).strftime("%Y-%m")
    doc = api.get(f"/enterprises/{ent['id']}/usage?month={month}", member).json()
    (stated,) = doc["projects"][0]["jobs"][0]["lines"]
    assert (stated["precision"], stated["gpus"], stated["node_gpus"]) == ("fp64", 2, 2)
    total_s = time.monotonic() - t0
    print(f"validation {validated_s:.1f} s, whole flow {total_s:.1f} s")
