"""GPU jobs on the dev clusters' partition ``gpu`` (two nodes, two fake h200 GPUs each).

For every adapter that reaches a live cluster: a job with ``gpus_per_node=1`` runs there,
sees the GPU Slurm gave it (``CUDA_VISIBLE_DEVICES``), and its ``JobInfo`` says it held
one GPU while running (the controller) and after it ended (accounting, read on its own);
the node listing shows each GPU node's two GPUs and their type. gamma's run only with
``BROKER_TEST_GAMMA=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler_adapters import JobInfo, JobSpec, JobState, SchedulerAdapter, create_adapter
from scheduler_adapters.slurm import parse
from scheduler_adapters.slurm.pyslurm import PySlurmAdapter
from tests._slurm import SlurmTenant

pytestmark = pytest.mark.slurm

ENTRIES = ["alpha", "beta", "gamma-cli", "gamma", "gamma-pyslurm"]


@pytest.fixture(params=ENTRIES)
def entry(request: pytest.FixtureRequest) -> Iterator[tuple[str, SlurmTenant, SchedulerAdapter]]:
    name: str = request.param
    tenant: SlurmTenant = request.getfixturevalue(
        "slurm_three_tenant" if name.startswith("gamma") else "slurm_tenant"
    )
    options = tenant.clusters[name]["options"]
    adapter = create_adapter(tenant.clusters[name]["adapter"], name, options)
    yield name, tenant, adapter
    adapter.close()


def _accounting(
    name: str, options: dict[str, Any], adapter: SchedulerAdapter, job_id: str
) -> JobInfo | None:
    """The job as accounting alone records it (the controller still holds it, and
    ``status`` would merge both): sacct for the CLI and REST clusters (the REST slurmdb
    shapes are in the recorded fixtures), pyslurm's db for pyslurm."""
    if isinstance(adapter, PySlurmAdapter):
        db = adapter._ps.db
        loaded = db.Jobs.load(db.JobFilter(ids=[int(job_id)]))
        return adapter._mine(loaded.values()).get(job_id)
    sacct = str(Path(options.get("bin_dir") or "/usr/bin") / "sacct")
    out = subprocess.run(
        [sacct, "--json", "--allusers", "-j", job_id],
        env={**os.environ, "SLURM_CONF": options["slurm_conf"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return parse.parse_jobs(json.loads(out), options.get("slurm_cluster") or name).get(job_id)


def test_a_gpu_job_runs_sees_its_gpu_and_is_reported_holding_it(
    entry: tuple[str, SlurmTenant, SchedulerAdapter],
) -> None:
    """One GPU on a shared node; and one asked for by an exclusive job (the broker's
    default), to which Slurm (22.05 and 25.11 alike) gives every GPU of its node."""
    name, tenant, adapter = entry
    cluster = name.split("-")[0]
    workdir = tenant.workdir(name, f"gpu-{uuid.uuid4().hex[:8]}")
    jobs: dict[str, tuple[Path, int]] = {}
    for exclusive, expected in ((False, 1), (True, 2)):
        out = workdir / f"out-{exclusive}.txt"
        spec = JobSpec(
            name="gpu-live",
            script='#!/bin/bash\necho "CVD=$CUDA_VISIBLE_DEVICES"\nsleep 2\n',
            time_limit_minutes=2,
            partition="gpu",
            gpus_per_node=1,
            exclusive=exclusive,
            account=tenant.account,
            user=tenant.user,
            tag=str(uuid.uuid4()),
            working_dir=str(workdir),
            stdout_path=str(out),
        )
        jobs[adapter.submit(spec)] = (out, expected)
    running: dict[str, JobInfo] = {}
    ended: dict[str, JobInfo] = {}
    try:
        # Seconds, unless other tests hold the partition (a node validation: a minute).
        deadline = time.monotonic() + 180
        while len(ended) < len(jobs) and time.monotonic() < deadline:
            for job_id, info in adapter.status(list(jobs)).items():
                if info.state is JobState.RUNNING:
                    running[job_id] = info
                elif info.state.terminal:
                    ended[job_id] = info
            time.sleep(0.2)
    finally:
        for job_id in jobs:
            adapter.cancel(job_id)
    options = tenant.clusters[name]["options"]
    for job_id, (out, gpus) in jobs.items():
        assert job_id in running, f"{job_id} never seen running"
        assert running[job_id].alloc_gpus == gpus and running[job_id].partition == "gpu"
        assert running[job_id].nodes[0] in (f"{cluster}-g1", f"{cluster}-g2")
        assert ended[job_id].state is JobState.COMPLETED and ended[job_id].alloc_gpus == gpus
        assert out.read_text().split() == [f"CVD={','.join(map(str, range(gpus)))}"]
        accounted = None
        for _ in range(25):  # slurmdbd records the end a moment after the controller
            accounted = _accounting(name, options, adapter, job_id)
            if accounted is not None and accounted.state.terminal:
                break
            time.sleep(0.2)
        assert accounted is not None and accounted.state is JobState.COMPLETED, accounted
        assert accounted.alloc_gpus == gpus and accounted.nodes == ended[job_id].nodes


def test_gpu_nodes_list_their_gpus_and_type(
    entry: tuple[str, SlurmTenant, SchedulerAdapter],
) -> None:
    name, _, adapter = entry
    cluster = name.split("-")[0]
    nodes = {n.name: n for n in adapter.nodes()}
    for node in (f"{cluster}-g1", f"{cluster}-g2"):
        assert (nodes[node].gpus, nodes[node].gpu_type) == (2, "h200"), nodes[node]
        assert "gpu" in nodes[node].partitions
    others = [n for n in nodes.values() if not n.name.startswith(f"{cluster}-g")]
    assert others and all((n.gpus, n.gpu_type) == (0, None) for n in others)
