"""Node validation, performance-normalized charges, credits and statements (local adapter)."""

from __future__ import annotations

import json
import subprocess
import sys
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
from broker.config import Settings
from broker.db import session_scope
from broker.models import ChargeLine, Job, Node, NodeRate, Partition, RunState, ValidationRun
from broker.schemas.kernels import KernelsReport
from broker.services import billing, scheduling, statements, validation
from broker.services.principal import SYSTEM
from broker.units import CHARGE, units_to_pfh, work_units

from .conftest import Api, make_settings, operator_token


def _report(gemm: float = 50.0, peak: float = 100.0, residual_ok: bool = True) -> KernelsReport:
    def res(kernel: str, **kw: Any) -> dict[str, Any]:
        base = {
            "kernel": kernel,
            "size": 64,
            "dtype": "float64",
            "threads": 2,
            "repeat": 3,
            "seconds_best": 0.1,
            "seconds_median": 0.1,
            "residual": 1.0,
            "residual_ok": True,
        }
        return {**base, **kw}

    return KernelsReport.model_validate(
        {
            "schema": "hpc-broker/kernels-validate/1",
            "host": "n1",
            "cpu": "x",
            "threads": 2,
            "versions": {},
            "started_at": "2026-11-01T00:00:00Z",
            "seconds": 1.0,
            "results": [
                res("gemm", gflops_median=gemm, residual_ok=residual_ok),
                res("fft", gflops_median=5.0),
                res("stream", gbs_median=20.0),
                res("peak", gflops_median=peak),
            ],
        }
    )


def test_kernels_validate_json_matches_the_broker_schema() -> None:
    """The pinned contract: the real command's output validates against our schema."""
    out = subprocess.run(
        [sys.executable, "-m", "kernels", "validate", "--json", "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = KernelsReport.model_validate(json.loads(out.stdout))
    assert {r.kernel for r in report.results} == {"gemm", "fft", "stream", "peak"}
    assert report.result("gemm").gflops_median > 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("refs", "kwargs", "passed", "why"),
    [
        ({}, {}, True, ""),
        ({"gemm_gflops": [40.0, -0.1]}, {}, True, ""),
        ({"gemm_gflops": [60.0, -0.1]}, {}, False, "gemm_gflops 50 below 54"),
        ({"gemm_gflops": [40.0, -0.1, 0.1]}, {}, False, "above 44"),
        ({"stream_gbs": [30.0, -0.2]}, {}, False, "stream_gbs 20 below 24"),
        ({}, {"residual_ok": False}, False, "residual"),
        ({}, {"gemm": 10.0}, False, "FMA probe"),
    ],
)
def test_judge_reframe_semantics(
    refs: dict[str, list[float]], kwargs: dict[str, Any], passed: bool, why: str
) -> None:
    verdict = validation.judge(_report(**kwargs), refs, min_gemm_peak=0.2)
    assert verdict.passed is passed
    assert why in "; ".join(verdict.reasons)


def test_month_seconds_and_apportion() -> None:
    start = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)
    assert billing.month_seconds(start, 3600) == [("2026-10", 1800), ("2026-11", 1800)]
    assert billing.apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(billing.apportion(999_999, [7, 13, 29])) == 999_999


@pytest.fixture
def vapi(db_url: str, open_tmp_path: Path, local_validation_python: str) -> Iterator[Api]:
    # As root, validation jobs run as the validation user: a data_dir and an
    # interpreter that user can reach.
    settings: Settings = make_settings(
        db_url,
        open_tmp_path,
        validation_args="--quick",
        validation_min_gemm_peak_ratio=0.0,
        validation_python=local_validation_python,
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        app.state.worker.refresh_clusters()
        yield Api(client, operator_token(app))


def _campaign(api: Api, node: str) -> ValidationRun:
    app = api.client.app
    with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
        runs = validation.start_campaign(
            s, app.state.adapters, app.state.settings, SYSTEM, "local", node=node
        )  # type: ignore[attr-defined]
        run_id = runs[0].id
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        app.state.worker.run_once()  # type: ignore[attr-defined]
        with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
            run = s.get(ValidationRun, run_id)
            assert run is not None
            if run.state.finished:
                return run
        time.sleep(0.2)
    raise AssertionError("validation run did not finish")


def _set_refs(api: Api, refs: dict[str, list[float]]) -> None:
    with session_scope(api.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        part = s.scalar(select(Partition).where(Partition.name == "default"))
        assert part is not None
        part.quick_references = refs  # the campaigns here run --quick


@pytest.mark.slow
def test_validation_rates_charges_credits_and_statement(vapi: Api) -> None:
    api = vapi
    app = api.client.app
    factory = app.state.session_factory  # type: ignore[attr-defined]
    run = _campaign(api, "local1")
    assert run.state is RunState.PASSED, run.reasons
    assert run.gemm_gflops and run.gemm_gflops > 0
    nodes = {n["name"]: n for n in api.get("/clusters/local/nodes").json()}
    assert nodes["local1"]["validation"] == "validated" and nodes["local1"]["measured"]
    assert nodes["local1"]["rate_tflops"] == pytest.approx(run.gemm_gflops / 1000, rel=1e-3)
    assert not nodes["local2"]["measured"]

    # A job on local1 is charged at the measured rate, and its lines name the proof.
    ent, member, project = api.tenant(grant_pfh=10)
    job = api.submit(project["id"], member, script="sleep 1", nodes=2).json()
    done = api.drive_until(job["id"], {"completed"})
    with session_scope(factory) as s:
        lines = {
            ln.node: ln
            for ln in s.scalars(select(ChargeLine).where(ChargeLine.job_id == uuid.UUID(job["id"])))
        }
        rate = s.scalar(select(NodeRate).where(NodeRate.run_id == run.id))
        assert rate is not None
        assert lines["local1"].rate_id == rate.id and lines["local1"].run_id == run.id
        assert lines["local1"].rate_mflops == rate.rate_mflops
        assert lines["local2"].rate_id is None and lines["local2"].rate_mflops == 50_000
        # Each line: rate (MFLOP/s) x seconds, rounded half-even to whole GFLOP.
        expected = work_units(rate.rate_mflops, done["elapsed_s"], rounding=CHARGE)
        assert lines["local1"].units == expected
        assert lines["local2"].units == 50 * done["elapsed_s"]
        expected += 50 * done["elapsed_s"]
        assert sum(ln.units for ln in lines.values()) == expected
    assert done["charge_pfh"] == units_to_pfh(expected)

    # Impossible references: the node fails, is degraded, drained and its jobs credited.
    _set_refs(api, {"gemm_gflops": [1e9, -0.1]})
    failed = _campaign(api, "local1")
    assert failed.state is RunState.FAILED and "below" in failed.reasons[0]
    app.state.worker.refresh_clusters()  # type: ignore[attr-defined]
    nodes = {n["name"]: n for n in api.get("/clusters/local/nodes").json()}
    assert nodes["local1"]["validation"] == "degraded"
    assert nodes["local1"]["state"] == "drain" and "below" in nodes["local1"]["reason"]
    ledger_rows = api.get(f"/enterprises/{ent['id']}/ledger?job_id={job['id']}").json()
    credit = [e for e in ledger_rows if e["kind"] == "ADJUST"]
    assert len(credit) == 1 and credit[0]["reverses_id"] is not None
    assert "local1 degraded" in credit[0]["memo"]

    # The statement: lines, credits, totals equal to the ledger to the unit.
    month = datetime.now(UTC).strftime("%Y-%m")
    doc = api.get(f"/enterprises/{ent['id']}/usage?month={month}", member).json()
    with session_scope(factory) as s:
        assert doc["net_units"] == billing.ledger_charged(s, uuid.UUID(ent["id"]))
    jobs = doc["projects"][0]["jobs"]
    assert jobs[0]["credited_pfh"] > 0 and jobs[0]["charged_pfh"] > jobs[0]["credited_pfh"]
    csv_text = api.client.get(
        f"/api/v1/enterprises/{ent['id']}/usage?month={month}",
        headers={**api.h(member), "Accept": "text/csv"},
    ).text
    assert csv_text.splitlines()[0].startswith("month,project,job_id")
    assert csv_text.splitlines()[-1].split(",")[1] == "TOTAL"

    # Resume is refused while degraded; a passing run first, then it resumes.
    from broker.errors import Conflict

    with session_scope(factory) as s, pytest.raises(Conflict):
        validation.resume_node(s, app.state.adapters, SYSTEM, "local", "local1")  # type: ignore[attr-defined]
    _set_refs(api, {})
    again = _campaign(api, "local1")
    assert again.state is RunState.PASSED
    with session_scope(factory) as s:
        node = validation.resume_node(s, app.state.adapters, SYSTEM, "local", "local1")  # type: ignore[attr-defined]
        assert node.state == "idle"
        samples = s.scalar(select(NodeRate.samples).order_by(NodeRate.id.desc()).limit(1))
        assert samples == 2  # median of the recent passing runs


def test_month_boundary_splits_the_charge(api: Api) -> None:
    ent, member, project = api.tenant(grant_pfh=10)
    job = api.submit(project["id"], member, script="true", time_limit_minutes=120).json()
    factory = api.client.app.state.session_factory  # type: ignore[attr-defined]
    start = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)
    info = sa_.JobInfo(
        job_id="x",
        state=sa_.JobState.COMPLETED,
        exit_code=0,
        nodes=("local1",),
        start_time=start,
        elapsed_s=3600,
    )
    with session_scope(factory) as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        row.state = scheduling.JobStatus.RUNNING if hasattr(scheduling, "JobStatus") else row.state
        assert scheduling.apply_info(s, row, info, datetime.now(UTC))
    octo = api.get(f"/enterprises/{ent['id']}/usage?month=2026-10", member).json()
    nov = api.get(f"/enterprises/{ent['id']}/usage?month=2026-11", member).json()
    assert octo["net_units"] == nov["net_units"] == 50 * 1800  # GFLOP: 0.05 TFLOP/s x 30 min
    with session_scope(factory) as s:
        total = billing.ledger_charged(s, uuid.UUID(ent["id"]))
    assert octo["net_units"] + nov["net_units"] == total
    assert api.get(f"/enterprises/{ent['id']}/usage?month=2026-13", member).status_code == 422
    other_ent, other_member, _ = api.tenant()
    assert api.get(f"/enterprises/{ent['id']}/usage?month=2026-10", other_member).status_code == 404
    with session_scope(factory) as s:
        assert (
            statements.monthly_totals(s, "2026-10")[
                (uuid.UUID(ent["id"]), uuid.UUID(project["id"]))
            ]
            == 50 * 1800
        )
    _ = (other_ent, Node)
