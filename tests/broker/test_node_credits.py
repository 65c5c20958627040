"""Credits of a degraded node over time, quick-run safety, forced resume, and routing
around nodes out of service (local adapter; SQLite and PostgreSQL).

A node's failure credits only the jobs since its last passing run; a credit for a
closed month is booked in the current month, linked to the line it corrects, and the
closed month's statement stays byte-identical.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import scheduler_adapters as sa_
from broker.db import session_scope
from broker.errors import Conflict, InvalidInput
from broker.models import (
    AuditEvent,
    ChargeLine,
    Job,
    Node,
    Partition,
    RunState,
    Validation,
    ValidationRun,
)
from broker.services import billing, validation
from broker.services.principal import SYSTEM

from .conftest import Api
from .test_validation import _report


def _last_month(day: int, hour: int = 10) -> datetime:
    first = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    prev = first - timedelta(days=1)
    return datetime(prev.year, prev.month, day, hour, tzinfo=UTC)


def _factory(api: Api) -> Any:
    return api.client.app.state.session_factory  # type: ignore[attr-defined]


def _ran(api: Api, project: dict[str, Any], member: str, start: datetime, node: str) -> str:
    """A job that ran an hour on ``node`` from ``start``, settled."""
    from broker.services import scheduling

    job = api.submit(project["id"], member, script="true", time_limit_minutes=120).json()
    info = sa_.JobInfo(
        job_id=f"x{uuid.uuid4().hex[:6]}",
        state=sa_.JobState.COMPLETED,
        exit_code=0,
        nodes=(node,),
        start_time=start,
        end_time=start + timedelta(hours=1),
        elapsed_s=3600,
    )
    with session_scope(_factory(api)) as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        assert scheduling.apply_info(s, row, info, datetime.now(UTC))
    return str(job["id"])


def _node(s: Any, name: str) -> Node:
    node: Node | None = s.scalar(select(Node).where(Node.name == name))
    assert node is not None
    return node


def _passed(api: Api, name: str, at: datetime) -> None:
    with session_scope(_factory(api)) as s:
        s.add(
            ValidationRun(
                node_id=_node(s, name).id,
                cluster="local",
                partition="default",
                campaign="earlier",
                state=RunState.PASSED,
                gemm_gflops=50.0,
                created_at=at,
                finished_at=at,
            )
        )


def _refs(api: Api, *, full: dict[str, Any], quick: dict[str, Any]) -> None:
    with session_scope(_factory(api)) as s:
        part = s.scalar(select(Partition).where(Partition.name == "default"))
        assert part is not None
        part.references, part.quick_references = full, quick


def _judge(api: Api, tmp: Path, name: str, *, quick: bool = False, gemm: float = 50.0) -> int:
    """Ingest a finished validation run of ``name`` whose result says ``gemm`` GFLOP/s."""
    work = tmp / f"run-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    (work / "result.json").write_text(json.dumps(_report(gemm=gemm).model_dump(by_alias=True)))
    app = api.client.app
    with session_scope(_factory(api)) as s:
        run = ValidationRun(
            node_id=_node(s, name).id,
            cluster="local",
            partition="default",
            campaign="now",
            work_dir=str(work),
            scheduler_job_id="1",
            quick=quick,
        )
        s.add(run)
        s.flush()
        info = sa_.JobInfo(job_id="1", state=sa_.JobState.COMPLETED, exit_code=0)
        validation.ingest(
            s,
            app.state.adapters,  # type: ignore[attr-defined]
            app.state.settings,  # type: ignore[attr-defined]
            run,
            info,
            datetime.now(UTC),
        )
        return run.id


def _statement(api: Api, ent_id: str, month: str, member: str) -> tuple[bytes, bytes]:
    url = f"/api/v1/enterprises/{ent_id}/usage?month={month}"
    as_json = api.client.get(url, headers=api.h(member)).content
    as_csv = api.client.get(url, headers={**api.h(member), "Accept": "text/csv"}).content
    return as_json, as_csv


@pytest.fixture
def local(api: Api) -> Api:
    api.client.app.state.worker.refresh_clusters()  # type: ignore[attr-defined]
    return api


def test_failure_credits_only_since_the_last_pass_in_this_month_linked(
    local: Api, tmp_path: Path
) -> None:
    api = local
    ent, member, project = api.tenant(grant_pfh=10)
    before = _ran(api, project, member, _last_month(1), "local1")
    _passed(api, "local1", _last_month(2))
    after = _ran(api, project, member, _last_month(3), "local1")
    never = _ran(api, project, member, _last_month(3), "local2")  # local2 never passed
    month = _last_month(1).strftime("%Y-%m")
    sent = _statement(api, ent["id"], month, member)
    with session_scope(_factory(api)) as s:
        preview = validation.failure_credits(s, "local", _node(s, "local1"))
        after_line = s.scalar(select(ChargeLine).where(ChargeLine.job_id == uuid.UUID(after)))
        assert after_line is not None
        assert (preview.jobs, preview.units) == (1, after_line.units)
        assert validation.failure_credits(s, "local", _node(s, "local2")).jobs == 0

    _refs(api, full={"gemm_gflops": [1e9, -0.1]}, quick={})
    _judge(api, tmp_path, "local1")
    _judge(api, tmp_path, "local2")

    assert _statement(api, ent["id"], month, member) == sent  # byte-identical
    this_month = datetime.now(UTC).strftime("%Y-%m")
    doc = api.get(f"/enterprises/{ent['id']}/usage?month={this_month}", member).json()
    jobs = {j["job_id"]: j for p in doc["projects"] for j in p["jobs"]}
    assert set(jobs) == {after}  # not the job before the pass, not local2's
    (line,) = jobs[after]["lines"]
    assert line["units"] == -after_line.units
    assert (line["corrects_line"], line["corrects_period"]) == (after_line.id, month)
    assert doc["net_units"] == -after_line.units
    ledger_rows = api.get(f"/enterprises/{ent['id']}/ledger").json()
    credits = [e for e in ledger_rows if e["kind"] == "ADJUST"]
    assert [c["job_id"] for c in credits] == [after]
    assert before not in {c["job_id"] for c in credits} and never not in jobs
    with session_scope(_factory(api)) as s:
        assert billing.ledger_charged(s, uuid.UUID(ent["id"])) == (
            sum(
                ln.units
                for ln in s.scalars(
                    select(ChargeLine).where(ChargeLine.enterprise_id == uuid.UUID(ent["id"]))
                )
            )
        )
        # Degrading again credits nothing twice.
        assert billing.credit_node(s, SYSTEM, "local", "local1", _last_month(2), "again") == []


def test_quick_run_without_quick_references_cannot_degrade(local: Api, tmp_path: Path) -> None:
    api = local
    _refs(api, full={"gemm_gflops": [1e9, -0.1]}, quick={})
    run_id = _judge(api, tmp_path, "local1", quick=True)
    with session_scope(_factory(api)) as s:
        run = s.get(ValidationRun, run_id)
        assert run is not None and run.state is RunState.PASSED  # no quick refs to miss
        assert _node(s, "local1").validation is Validation.VALIDATED
    _refs(api, full={}, quick={"gemm_gflops": [100.0, -0.1]})
    run_id = _judge(api, tmp_path, "local1", quick=True, gemm=50.0)
    with session_scope(_factory(api)) as s:
        run = s.get(ValidationRun, run_id)
        assert run is not None and run.state is RunState.FAILED
        node = _node(s, "local1")
        assert node.validation is Validation.DEGRADED and node.state == "drain"


def test_quick_run_failing_without_quick_references_leaves_the_node(
    local: Api, tmp_path: Path
) -> None:
    """A quick run on a busy machine, judged by the FMA probe ratio, fails: recorded,
    but the node stays in service and nobody is credited."""
    api = local
    app = api.client.app
    app.state.settings.validation_min_gemm_peak_ratio = 0.9  # type: ignore[attr-defined]
    ent, member, project = api.tenant(grant_pfh=10)
    _passed(api, "local1", _last_month(1))
    _ran(api, project, member, _last_month(2), "local1")
    run_id = _judge(api, tmp_path, "local1", quick=True, gemm=10.0)  # 10% of its peak
    with session_scope(_factory(api)) as s:
        run = s.get(ValidationRun, run_id)
        assert run is not None and run.state is RunState.FAILED
        assert "not degraded" in run.reasons[-1]
        node = _node(s, "local1")
        assert node.validation is not Validation.DEGRADED and node.state != "drain"
    assert not [
        e for e in api.get(f"/enterprises/{ent['id']}/ledger").json() if e["kind"] == "ADJUST"
    ]


def test_degraded_node_resumes_by_force_with_a_reason(local: Api, tmp_path: Path) -> None:
    api = local
    app = api.client.app
    _refs(api, full={"gemm_gflops": [1e9, -0.1]}, quick={})
    _judge(api, tmp_path, "local1")
    pool = app.state.adapters  # type: ignore[attr-defined]
    with session_scope(_factory(api)) as s, pytest.raises(Conflict, match="--force --reason"):
        validation.resume_node(s, pool, SYSTEM, "local", "local1")
    with session_scope(_factory(api)) as s, pytest.raises(InvalidInput, match="reason"):
        validation.resume_node(s, pool, SYSTEM, "local", "local1", force=True, reason=" ")
    with session_scope(_factory(api)) as s:
        node = validation.resume_node(
            s, pool, SYSTEM, "local", "local1", force=True, reason="busy host, not a bad node"
        )
        assert node.state == "idle" and node.validation is Validation.UNVALIDATED
        event = s.scalar(
            select(AuditEvent)
            .where(AuditEvent.action == "node.resume")
            .order_by(AuditEvent.id.desc())
        )
        assert event is not None
        assert event.detail["forced"] is True
        assert event.detail["reason"] == "busy host, not a bad node"
        assert "below" in event.detail["was"]
    assert "local1" not in {n.name for n in pool.get("local").nodes() if n.state == "drain"}


def test_no_node_in_service_refuses_the_submit_and_shows_degraded(local: Api) -> None:
    api = local
    app = api.client.app
    pool = app.state.adapters  # type: ignore[attr-defined]
    _, member, project = api.tenant(grant_pfh=10)
    with session_scope(_factory(api)) as s:
        for name in ("local1", "local2"):
            validation.drain_node(s, pool, SYSTEM, "local", name, "maintenance")
    (cluster,) = [c for c in api.get("/clusters").json() if c["name"] == "local"]
    assert cluster["status"] == "degraded"
    r = api.submit(project["id"], member)
    assert r.status_code == 422, r.text
    assert "in service" in r.json()["detail"]
    app.state.worker.refresh_clusters()  # type: ignore[attr-defined]  # the probe agrees
    assert api.submit(project["id"], member).status_code == 422
    (cluster,) = [c for c in api.get("/clusters").json() if c["name"] == "local"]
    assert cluster["status"] == "degraded"
    with session_scope(_factory(api)) as s:
        validation.resume_node(s, pool, SYSTEM, "local", "local2")
    r = api.submit(project["id"], member)
    assert r.status_code == 202, r.text
    assert r.json()["routing"]["cluster"] == "local"
    (cluster,) = [c for c in api.get("/clusters").json() if c["name"] == "local"]
    assert cluster["status"] == "up"
