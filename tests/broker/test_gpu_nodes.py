"""GPU nodes (issue 18): per-GPU validation, rates of CPU + GPUs at the billing precision,
whole-node and GPU-share charges, and routing of GPU and CPU-only jobs (local adapter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

import scheduler_adapters as sa_
from broker.app import create_app
from broker.db import session_scope
from broker.errors import InvalidInput
from broker.models import (
    ChargeLine,
    GpuResult,
    Job,
    Node,
    NodeRate,
    Partition,
    RunState,
    Validation,
    ValidationRun,
)
from broker.schemas.kernels import GpuReport, KernelsReport
from broker.services import billing, brokering, gpus, scheduling, validation
from broker.services.principal import SYSTEM
from broker.units import CHARGE, work_units

from .conftest import Api, make_settings, operator_token

ROOT = Path(__file__).resolve().parents[2]
SIM_ARGS = ["--repeat", "1", "--threads", "1"]

CLUSTERS = """
[[clusters]]
name = "cpu"
adapter = "local"
scratch_dir = "{root}/cpu/scratch"
[clusters.options]
root_dir = "{root}/cpu/sched"
node_names = ["c1", "c2"]
[[clusters.partitions]]
name = "default"
nodes = 2
cpus_per_node = 2
max_time_minutes = 120
rate_tflops = 1.0

[[clusters]]
name = "gx"
adapter = "local"
scratch_dir = "{root}/gx/scratch"
[clusters.options]
root_dir = "{root}/gx/sched"
node_names = ["g1", "g2"]
partition = "gpu"
[[clusters.partitions]]
name = "gpu"
nodes = 2
cpus_per_node = 4
gpus_per_node = 2
max_time_minutes = 120
rate_tflops = 2.0
gpu_quick_references = {{ dgemm_gflops = [100.0, -0.5] }}
validation_args = "--repeat 1"
validation_environment = {{ NUMBA_ENABLE_CUDASIM = "1" }}

[[clusters]]
name = "gs"
adapter = "local"
scratch_dir = "{root}/gs/scratch"
[clusters.options]
root_dir = "{root}/gs/sched"
node_names = ["s1"]
partition = "shared"
[[clusters.partitions]]
name = "shared"
nodes = 1
cpus_per_node = 4
gpus_per_node = 4
max_time_minutes = 120
rate_tflops = 2.0
shared = true
gpu_precision = "fp32"
"""


@pytest.fixture
def gapi(db_url: str, tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "clusters.toml"
    path.write_text(CLUSTERS.format(root=tmp_path))
    settings = make_settings(
        db_url,
        tmp_path,
        clusters_file=path,
        validation_args="--quick",
        validation_min_gemm_peak_ratio=0.0,
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        app.state.worker.refresh_clusters()
        yield Api(client, operator_token(app))


def _res(kernel: str, dtype: str = "float64", **kw: Any) -> dict[str, Any]:
    base = {
        "kernel": kernel,
        "size": 48,
        "dtype": dtype,
        "threads": 256,
        "repeat": 1,
        "seconds_best": 0.1,
        "seconds_median": 0.1,
        "residual": 1.0,
        "residual_ok": True,
    }
    return {**base, **kw}


def _gpu(index: int, dgemm: float = 200.0, sgemm: float = 400.0, **kw: Any) -> dict[str, Any]:
    return {
        "index": index,
        "name": "Fake H200",
        "uuid": f"GPU-{index:08d}-aaaa",
        "simulated": False,
        "results": [
            _res("gemm", gflops_median=dgemm, **kw),
            _res("gemm", "float32", gflops_median=sgemm),
            _res("stream", gbs_median=900.0),
            _res("peak", gflops_median=300.0),
        ],
    }


def _doc(gpus: list[dict[str, Any]], gemm: float = 50.0) -> dict[str, Any]:
    return {
        "schema": "hpc-broker/kernels-validate/1",
        "host": "g1",
        "cpu": "x",
        "threads": 4,
        "versions": {},
        "started_at": "2026-12-01T00:00:00Z",
        "seconds": 1.0,
        "results": [
            _res("gemm", gflops_median=gemm),
            _res("fft", gflops_median=5.0),
            _res("stream", gbs_median=20.0),
            _res("peak", gflops_median=100.0),
        ],
        "gpus": gpus,
    }


def test_judge_gpus_names_the_missing_and_the_slow_gpu() -> None:
    refs = {"dgemm_gflops": [200.0, -0.1]}
    reports = [GpuReport.model_validate(g) for g in (_gpu(0), _gpu(1, dgemm=90.0))]
    verdicts = gpus.judge(reports, 3, refs)
    assert [v.passed for v in verdicts] == [True, False, False]
    assert "gpu1 (Fake H200, GPU-00000001)" in verdicts[1].reasons[0]
    assert "dgemm_gflops 90 below 180" in verdicts[1].reasons[0]
    assert verdicts[2].reasons == ["gpu2: missing (the node has 3 GPUs, the run saw 2)"]
    bad = GpuReport.model_validate(_gpu(0, residual_ok=False))
    (v,) = gpus.judge([bad], 1, {})
    assert not v.passed and "gpu0" in v.reasons[0] and "residual" in v.reasons[0]
    assert gpus.judge([], 0, refs) == []  # a CPU node


def test_gpu_rate_is_at_least_one_mflops_once_measured() -> None:
    assert gpus.gpu_rate_mflops(0.0004) == 1  # the CUDA simulator's speed
    assert gpus.gpu_rate_mflops(None) == 0
    assert gpus.gpu_rate_mflops(51_234.5678) == 51_234_568


def test_gpu_references_name_known_metrics_only(tmp_path: Path) -> None:
    from broker.config import load_clusters_file

    path = tmp_path / "c.toml"
    path.write_text(CLUSTERS.format(root=tmp_path).replace("dgemm_gflops", "dgem_gflops"))
    with pytest.raises(ValueError, match="unknown GPU metrics"):
        load_clusters_file(path)


def _factory(api: Api) -> Any:
    return api.client.app.state.session_factory  # type: ignore[attr-defined]


def _node(s: Session, name: str) -> Node:
    node = s.scalar(select(Node).where(Node.name == name))
    assert node is not None
    return node


def _ingest(api: Api, tmp_path: Path, node: str, doc: dict[str, Any]) -> ValidationRun:
    """A finished validation run of ``node`` whose job printed ``doc``, ingested."""
    app = api.client.app
    work = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    (work / "result.json").write_text(json.dumps(doc))
    info = sa_.JobInfo(job_id="1", state=sa_.JobState.COMPLETED, exit_code=0)
    with session_scope(_factory(api)) as s:
        n = _node(s, node)
        run = ValidationRun(
            node_id=n.id,
            cluster="gx",
            partition="gpu",
            campaign="c",
            work_dir=str(work),
            quick=True,
            scheduler_job_id="1",
        )
        s.add(run)
        s.flush()
        validation.ingest(
            s,
            app.state.adapters,  # type: ignore[attr-defined]
            app.state.settings,  # type: ignore[attr-defined]
            run,
            info,
            datetime.now(UTC),
        )
        s.flush()
        s.expunge(run)
    return run


def test_gpu_validation_sets_rates_per_gpu_and_degrades_naming_the_gpu(
    gapi: Api, tmp_path: Path
) -> None:
    api = gapi
    run = _ingest(api, tmp_path, "g1", _doc([_gpu(0), _gpu(1, dgemm=220.0)]))
    assert run.state is RunState.PASSED, run.reasons
    with session_scope(_factory(api)) as s:
        g1 = _node(s, "g1")
        assert g1.validation is Validation.VALIDATED
        rate = s.scalar(select(NodeRate).where(NodeRate.run_id == run.id))
        assert rate is not None
        assert (rate.cpu_mflops, rate.gpu_mflops, rate.precision) == (
            50_000,
            [200_000, 220_000],
            "fp64",
        )
        assert rate.rate_mflops == g1.rate_mflops == 50_000 + 200_000 + 220_000
        assert g1.gpu_mflops == [200_000, 220_000]
        figures = list(s.scalars(select(GpuResult).where(GpuResult.run_id == run.id)))
        assert [(f.gpu_index, f.dgemm_gflops, f.sgemm_gflops, f.passed) for f in figures] == [
            (0, 200.0, 400.0, True),
            (1, 220.0, 400.0, True),
        ]
        # FP32 billing: the same figures, the SGEMM ones billed.
        part = s.scalar(select(Partition).where(Partition.name == "gpu"))
        assert part is not None
        part.gpu_precision = "fp32"
    run2 = _ingest(api, tmp_path, "g1", _doc([_gpu(0), _gpu(1, dgemm=220.0)]))
    with session_scope(_factory(api)) as s:
        rate = s.scalar(select(NodeRate).where(NodeRate.run_id == run2.id))
        assert rate is not None and rate.precision == "fp32"
        assert rate.gpu_mflops == [400_000, 400_000]
        assert rate.rate_mflops == 50_000 + 800_000

    # One slow GPU: the node is degraded and drained, the reason naming that GPU.
    slow = _ingest(api, tmp_path, "g2", _doc([_gpu(0), _gpu(1, dgemm=20.0)]))
    assert slow.state is RunState.FAILED
    assert slow.reasons[0].startswith("gpu1 (Fake H200")
    with session_scope(_factory(api)) as s:
        g2 = _node(s, "g2")
        assert g2.validation is Validation.DEGRADED and g2.state == "drain"
        assert "gpu1 (Fake H200, GPU-00000001) dgemm_gflops 20 below 50" in g2.reason
        assert g2.rate_mflops is None  # never measured: no rate from a failing run
    drained = api.client.app.state.adapters.get("gx").nodes()  # type: ignore[attr-defined]
    assert "gpu1" in next(n.reason for n in drained if n.name == "g2")

    # A GPU missing from the report (the node has 2): degraded, the missing one named,
    # even by a quick run without GPU references (a missing GPU is missing at any size).
    with session_scope(_factory(api)) as s:
        part = s.scalar(select(Partition).where(Partition.name == "gpu"))
        assert part is not None
        part.gpu_quick_references = {}
    slow_again = _ingest(api, tmp_path, "g1", _doc([_gpu(0), _gpu(1, residual_ok=False)]))
    assert slow_again.state is RunState.FAILED and "not degraded" in slow_again.reasons[-1]
    missing = _ingest(api, tmp_path, "g1", _doc([_gpu(0)]))
    assert missing.state is RunState.FAILED
    assert missing.reasons == ["gpu1: missing (the node has 2 GPUs, the run saw 1)"]
    with session_scope(_factory(api)) as s:
        assert "gpu1: missing" in _node(s, "g1").reason


def test_gpu_campaign_asks_every_gpu_and_the_partition_environment(
    gapi: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation job of a GPU node: --gpu, the partition's args and environment,
    and all the node's GPUs in its allocation."""
    app = gapi.client.app
    seen: list[sa_.JobSpec] = []
    adapter = app.state.adapters.get("gx")  # type: ignore[attr-defined]

    def submit(spec: sa_.JobSpec) -> str:
        seen.append(spec)
        return "7"

    monkeypatch.setattr(adapter, "submit", submit)
    with session_scope(_factory(gapi)) as s:
        runs = validation.start_campaign(
            s,
            app.state.adapters,  # type: ignore[attr-defined]
            app.state.settings,  # type: ignore[attr-defined]
            SYSTEM,
            "gx",
            node="g1",
        )
        assert runs[0].quick
    (spec,) = seen
    assert spec.gpus_per_node == 2 and spec.exclusive
    assert spec.environment["NUMBA_ENABLE_CUDASIM"] == "1"
    assert "validate --json --quick --repeat 1 --gpu" in spec.script


def _rate(api: Api, node: str, cpu: int, per_gpu: list[int], at: datetime) -> None:
    with session_scope(_factory(api)) as s:
        n = _node(s, node)
        n.rate_mflops, n.gpu_mflops = cpu + sum(per_gpu), per_gpu  # as validation sets them
        s.add(
            NodeRate(
                node_id=n.id,
                rate_mflops=cpu + sum(per_gpu),
                cpu_mflops=cpu,
                gpu_mflops=per_gpu,
                precision="fp64",
                valid_from=at,
            )
        )


def _settle(api: Api, job_id: str, node: str, alloc: int, start: datetime) -> list[ChargeLine]:
    info = sa_.JobInfo(
        job_id="x",
        state=sa_.JobState.COMPLETED,
        exit_code=0,
        nodes=(node,),
        start_time=start,
        elapsed_s=600,
        alloc_gpus=alloc,
    )
    with session_scope(_factory(api)) as s:
        row = s.get(Job, uuid.UUID(job_id))
        assert row is not None
        assert scheduling.apply_info(s, row, info, datetime.now(UTC))
        # Charged exactly once: the same end again charges nothing more.
        assert not scheduling.settle(s, row, info, datetime.now(UTC))
        lines = list(s.scalars(select(ChargeLine).where(ChargeLine.job_id == row.id)))
        s.expunge_all()
    return lines


def test_gpu_node_charged_cpu_plus_gpus_whole_or_by_gpu_share(gapi: Api) -> None:
    api = gapi
    start = datetime.now(UTC) - timedelta(minutes=20)
    _rate(api, "g1", 1_000_000, [10_000_000, 12_000_000], start - timedelta(hours=1))
    _rate(api, "s1", 1_000_000, [8_000_000] * 4, start - timedelta(hours=1))
    ent, member, project = api.tenant(grant_pfh=100)

    # Exclusive partition: a job asking 1 GPU is charged the whole node, CPU + both GPUs.
    job = api.submit(
        project["id"], member, script="true", gpus_per_node=1, cluster="gx", time_limit_minutes=30
    ).json()
    assert job["partition"] == "gpu", job
    (line,) = _settle(api, job["id"], "g1", 1, start)
    assert line.rate_mflops == 23_000_000 and line.gpu_mflops == 22_000_000
    assert (line.precision, line.gpus, line.node_gpus) == ("fp64", 2, 2)
    assert line.units == work_units(23_000_000, 600, rounding=CHARGE)

    # Shared partition: 1 of the node's 4 GPUs, a quarter of its whole rate.
    job = api.submit(
        project["id"], member, script="true", gpus_per_node=1, cluster="gs", time_limit_minutes=30
    ).json()
    assert job["routing"]["shared"] is True
    (line,) = _settle(api, job["id"], "s1", 1, start)
    assert line.rate_mflops == 33_000_000 // 4 and line.gpu_mflops == 8_000_000
    assert (line.precision, line.gpus, line.node_gpus) == ("fp32", 1, 4)
    # The scheduler's allocation counts, not the request: 3 GPUs given, 3 charged.
    job = api.submit(
        project["id"], member, script="true", gpus_per_node=1, cluster="gs", time_limit_minutes=30
    ).json()
    (line,) = _settle(api, job["id"], "s1", 3, start)
    assert line.gpus == 3 and line.rate_mflops == 24_750_000

    # The statement names the precision on every GPU line; the ledger matches it.
    month = datetime.now(UTC).strftime("%Y-%m")
    doc = api.get(f"/enterprises/{ent['id']}/usage?month={month}", member).json()
    lines = [ln for p in doc["projects"] for j in p["jobs"] for ln in j["lines"]]
    assert len(lines) == 3 and {ln["precision"] for ln in lines} == {"fp64", "fp32"}
    assert {(ln["gpus"], ln["node_gpus"]) for ln in lines} == {(2, 2), (1, 4), (3, 4)}
    with session_scope(_factory(api)) as s:
        assert doc["net_units"] == billing.ledger_charged(s, uuid.UUID(ent["id"]))
    csv_text = api.client.get(
        f"/api/v1/enterprises/{ent['id']}/usage?month={month}",
        headers={**api.h(member), "Accept": "text/csv"},
    ).text
    header, first = csv_text.splitlines()[:2]
    assert header.endswith("precision,gpu_rate_tflops,gpus,node_gpus")
    assert first.split(",")[-4] in {"fp64", "fp32"}


def test_shared_partition_jobs_are_not_exclusive(gapi: Api) -> None:
    api = gapi
    _, member, project = api.tenant(grant_pfh=100)
    job = api.submit(project["id"], member, script="true", gpus_per_node=1, cluster="gs").json()
    other = api.submit(project["id"], member, script="true", cluster="cpu").json()
    with session_scope(_factory(api)) as s:
        shared, whole = s.get(Job, uuid.UUID(job["id"])), s.get(Job, uuid.UUID(other["id"]))
        assert shared is not None and whole is not None
        assert not scheduling.spec_for(shared, "u").exclusive
        assert scheduling.spec_for(whole, "u").exclusive


def _req(**kw: Any) -> brokering.JobRequest:
    base: dict[str, Any] = {
        "nodes": 1,
        "ntasks": None,
        "cpus_per_task": None,
        "memory_mb": None,
        "gpus_per_node": None,
        "time_limit_minutes": 30,
    }
    return brokering.JobRequest(**{**base, **kw})


def test_routing_gpu_jobs_by_gpu_rate_and_cpu_jobs_off_gpu(gapi: Api) -> None:
    api = gapi
    with session_scope(_factory(api)) as s:
        # CPU-only: the CPU partition, the GPU ones rejected as kept for GPU jobs.
        d = brokering.choose(s, _req())
        assert (d.chosen.cluster.name, d.chosen.partition.name) == ("cpu", "default")
        kept = [r for r in d.rejected if "kept for GPU jobs" in r["reason"]]
        assert {r["partition"] for r in kept} == {"gpu", "shared"}
        # ... unless nothing else fits (4 CPUs per node: only the GPU nodes have them).
        d = brokering.choose(s, _req(cpus_per_task=4))
        assert d.chosen.partition.gpus_per_node > 0
        # The setting off: the GPU partitions compete like any other.
        off = brokering.Weights(cpu_jobs_off_gpu=False)
        d = brokering.choose(s, _req(), off)
        assert not any("kept for GPU jobs" in r["reason"] for r in d.rejected)
        # A GPU job: GPU partitions only (the CPU one cannot fit it).
        with pytest.raises(InvalidInput) as err:
            brokering.choose(s, _req(gpus_per_node=8))
        assert err.value.field == "gpus_per_node"
        for n, per_gpu in (("g1", [5_000_000, 5_000_000]), ("g2", [5_000_000, 5_000_000])):
            node = _node(s, n)
            node.rate_mflops, node.gpu_mflops = 10_000_000 + sum(per_gpu), per_gpu
        node = _node(s, "s1")
        node.rate_mflops, node.gpu_mflops = 1_000_000, [40_000_000] * 4
    with session_scope(_factory(api)) as s:
        # s1's GPUs measure 8x faster: the GPU job goes there although g1/g2's nodes
        # are faster in all (their CPUs).
        d = brokering.choose(s, _req(gpus_per_node=2))
        assert d.chosen.partition.name == "shared", d.as_json()
        assert d.chosen.gpu_rate_mflops == 40_000_000
        assert any("GPU rate 40 TFLOP/s per GPU (fp32, measured)" in r for r in d.chosen.reasons)
        assert d.alternatives[0]["gpu_rate_tflops"] == 5.0


def test_routing_decisions_remembered_per_snapshot_are_the_fresh_ones(gapi: Api) -> None:
    """``choose_in`` (the batch writer's routing) decides once per request shape and
    snapshot: each decision equals ``choose``'s from the same snapshot; weights and the
    capacity left are part of the shape; a refusal is raised again, never remembered."""
    api, w = gapi, brokering.Weights()
    shapes = [
        _req(),
        _req(cpus_per_task=4),
        _req(gpus_per_node=2),
        _req(gpus_per_node=1, cluster="gs"),
        _req(nodes=2, time_limit_minutes=90),
        _req(memory_mb=100, partition="default"),
        _req(array="0-3"),
    ]
    with session_scope(_factory(api)) as s:
        snap = brokering.snapshot(s)
        for req in shapes:
            first = brokering.choose_in(snap, req, w)
            assert first.as_json() == brokering.choose(s, req, w, snap=snap).as_json()
            alike = brokering.JobRequest(**vars(req))  # equal, another object
            assert brokering.choose_in(snap, alike, w) is first
        assert len({id(brokering.choose_in(snap, r, w)) for r in shapes}) == len(shapes)
        off = brokering.Weights(cpu_jobs_off_gpu=False)
        decided = brokering.choose_in(snap, _req(), off)
        assert decided is not brokering.choose_in(snap, _req(), w)
        assert decided.as_json() == brokering.choose(s, _req(), off, snap=snap).as_json()
        # The capacity left: too little refuses, each time; enough decides as without.
        for _ in range(2):
            with pytest.raises(InvalidInput):
                brokering.choose_in(snap, _req(), w, capacity_left_mflops=0)
        roomy = brokering.choose_in(snap, _req(), w, capacity_left_mflops=10**12)
        assert roomy.as_json() == brokering.choose_in(snap, _req(), w).as_json()
        remembered = len(snap.decided)
        with pytest.raises(InvalidInput) as err:
            brokering.choose_in(snap, _req(gpus_per_node=8), w)
        assert err.value.field == "gpus_per_node" and len(snap.decided) == remembered
        # Another snapshot (the cache's next read) decides afresh.
        assert brokering.choose_in(brokering.snapshot(s), _req(), w) is not (
            brokering.choose_in(snap, _req(), w)
        )


@pytest.mark.slow
def test_kernels_validate_gpu_json_matches_the_broker_schema() -> None:
    """The pinned contract, GPUs included: the real command under the CUDA simulator with
    two GPUs listed reports both, in the shape the broker validates."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "CUDA_VISIBLE_DEVICES": "0,1"}
    out = subprocess.run(
        [sys.executable, "-m", "kernels", "validate", "--json", "--quick", "--gpu", *SIM_ARGS],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    report = KernelsReport.model_validate(json.loads(out.stdout))
    assert [g.index for g in report.gpus] == [0, 1]
    verdicts = gpus.judge(report.gpus, 2, {})
    assert all(v.passed for v in verdicts), [v.reasons for v in verdicts]
    assert all(v.metrics["dgemm_gflops"] and v.metrics["sgemm_gflops"] for v in verdicts)
