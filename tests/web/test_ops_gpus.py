"""Dashboard and API: a GPU node's GPUs with their figures, rates and rate history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.db import session_scope
from broker.models import GpuResult, Node, NodeRate, RunState, Validation, ValidationRun

from .conftest import Ops


def seed_gpu_node(s: Session, name: str) -> None:
    """``name`` as a validated node of 2 H200s: two rate versions, the newest run's
    figures with gpu1 failing its reference in an earlier run."""
    node = s.scalar(select(Node).where(Node.name == name))
    assert node is not None
    node.gpus, node.gpu_type, node.validation = 2, "h200", Validation.VALIDATED
    node.rate_mflops, node.gpu_mflops = 1_000_000 + 2 * 50_000_000, [50_000_000, 50_000_000]
    t0 = datetime.now(UTC) - timedelta(days=1)
    for i, (dgemm, ok) in enumerate(((49_000.0, True), (20_000.0, False), (50_000.0, True))):
        run = ValidationRun(
            node_id=node.id,
            cluster="local",
            partition="default",
            campaign=f"c{i}",
            state=RunState.PASSED if ok else RunState.FAILED,
            created_at=t0 + timedelta(hours=i),
            finished_at=t0 + timedelta(hours=i),
        )
        s.add(run)
        s.flush()
        for index in (0, 1):
            slow = index == 1 and not ok
            s.add(
                GpuResult(
                    run_id=run.id,
                    node_id=node.id,
                    gpu_index=index,
                    name="NVIDIA H200",
                    gpu_uuid=f"GPU-{index}",
                    dgemm_gflops=dgemm if index == 1 else 50_000.0,
                    sgemm_gflops=60_000.0,
                    triad_gbs=4_000.0,
                    peak_gflops=60_000.0,
                    passed=not slow,
                    reasons=["gpu1 (NVIDIA H200, GPU-1) dgemm_gflops 2e+04 below 4.5e+04"]
                    if slow
                    else [],
                )
            )
        if ok:
            gpus = [50_000_000, round(dgemm * 1000)]
            s.add(
                NodeRate(
                    node_id=node.id,
                    rate_mflops=1_000_000 + sum(gpus),
                    cpu_mflops=1_000_000,
                    gpu_mflops=gpus,
                    precision="fp64",
                    run_id=run.id,
                    valid_from=t0 + timedelta(hours=i),
                )
            )


def test_gpu_node_figures_rates_and_history(ops: Ops) -> None:
    app: Any = ops.client.app
    app.state.worker.refresh_clusters()
    with session_scope(app.state.session_factory) as s:
        seed_gpu_node(s, "local1")

    nodes = {n["name"]: n for n in ops.api.get("/clusters/local/nodes").json()}
    g = nodes["local1"]
    assert g["gpus"] == 2 and g["gpu_type"] == "h200"
    assert g["gpu_rates_tflops"] == [50.0, 50.0] and g["rate_tflops"] == 101.0
    assert [(f["index"], f["dgemm_gflops"], f["rate_tflops"], f["passed"]) for f in g[
        "gpu_figures"
    ]] == [(0, 50_000.0, 50.0, True), (1, 50_000.0, 50.0, True)]  # fmt: skip
    assert nodes["local2"]["gpu_figures"] == [] and nodes["local2"]["gpu_type"] is None
    rates = ops.api.get("/clusters/local/nodes/local1/rates").json()
    assert [(r["cpu_rate_tflops"], r["gpu_rates_tflops"], r["precision"]) for r in rates] == [
        (1.0, [50.0, 50.0], "fp64"),
        (1.0, [50.0, 49.0], "fp64"),
    ]
    missing = ops.api.get("/clusters/local/nodes/nope/rates")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    parts = ops.api.get("/clusters").json()[0]["partitions"]
    assert (parts[0]["gpu_precision"], parts[0]["shared"]) == ("fp64", False)

    page = ops.client.get("/ops/clusters/local").text
    assert 'data-testid="gpus-local1">2 × h200' in page and "gpu1 50.00 TF" in page
    page = ops.client.get("/ops/clusters/local?node=local1").text
    assert 'data-testid="node-rates"' in page
    assert "gpu0 50.00, gpu1 49.00" in page  # the older version's per-GPU rates
    history = page.split('data-testid="node-gpu-history"')[1]
    assert history.count("<tr data-gpu=") == 6 and "dgemm_gflops 2e+04 below" in history


def test_job_page_names_the_gpu_terms_of_its_charge(ops: Ops) -> None:
    import uuid

    import scheduler_adapters as sa_
    from broker.models import Job
    from broker.services import scheduling

    app: Any = ops.client.app
    app.state.worker.refresh_clusters()
    with session_scope(app.state.session_factory) as s:
        seed_gpu_node(s, "local1")
    _, member, project = ops.api.tenant(grant_pfh=100)
    job = ops.api.submit(project["id"], member, script="true").json()
    info = sa_.JobInfo(
        job_id="1",
        state=sa_.JobState.COMPLETED,
        exit_code=0,
        nodes=("local1",),
        start_time=datetime.now(UTC) - timedelta(minutes=2),
        elapsed_s=60,
    )
    with session_scope(app.state.session_factory) as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        assert scheduling.apply_info(s, row, info, datetime.now(UTC))
    page = ops.client.get(f"/ops/jobs/{job['id']}").text
    assert "of which GPUs 100.00 (fp64), 2/2 GPUs charged" in page
