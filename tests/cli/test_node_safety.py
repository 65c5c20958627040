"""brokerctl nodes resume --force --reason and nodes validate --dry-run's credit preview."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

import scheduler_adapters as sa_
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import AuditEvent, Job, Node, RunState, Validation, ValidationRun
from broker.services import scheduling

from .conftest import Cli, submit_job


def _degrade(cli: Cli, name: str) -> None:
    engine = make_engine(cli.url)
    with engine.begin() as conn:
        conn.execute(update(Node).where(Node.name == name).values(validation=Validation.DEGRADED))
    engine.dispose()


def test_degraded_node_resumes_with_force_and_a_reason(cli: Cli) -> None:
    cli.json("nodes", "list", "local", "--refresh")
    cli.json("nodes", "drain", "local", "local1", "--reason", "validation failed")
    _degrade(cli, "local1")
    refused = cli.json("nodes", "resume", "local", "local1", code=1)
    assert "--force --reason" in refused[0]["error"]
    cli.run("nodes", "resume", "local", "local1", "--force", code=2)  # a reason is required
    done = cli.json(
        "nodes", "resume", "local", "local1", "--force", "--reason", "busy host, not bad silicon"
    )
    assert done[0]["error"] == ""
    row = next(n for n in cli.json("nodes", "list", "local") if n["name"] == "local1")
    assert row["state"] == "idle" and row["validation"] == "unvalidated"
    engine = make_engine(cli.url)
    with session_scope(make_session_factory(engine)) as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "node.resume"))
        assert event is not None and event.detail["forced"] is True
        assert event.detail["reason"] == "busy host, not bad silicon"
    engine.dispose()


def test_validate_dry_run_shows_what_a_failure_would_credit(cli: Cli) -> None:
    seeded = cli.seed()
    cli.json("nodes", "list", "local", "--refresh")
    engine = make_engine(cli.url)
    factory = make_session_factory(engine)
    passed_at = datetime.now(UTC) - timedelta(hours=3)
    with session_scope(factory) as s:
        node = s.scalar(select(Node).where(Node.name == "local1"))
        assert node is not None
        s.add(
            ValidationRun(
                node_id=node.id,
                cluster="local",
                partition="default",
                campaign="c",
                state=RunState.PASSED,
                finished_at=passed_at,
            )
        )
    job_id = submit_job(cli.url, seeded["enterprise"]["id"], seeded["project"]["id"])
    start = datetime.now(UTC) - timedelta(hours=2)
    info = sa_.JobInfo(
        job_id="1",
        state=sa_.JobState.COMPLETED,
        exit_code=0,
        nodes=("local1",),
        start_time=start,
        end_time=start + timedelta(hours=1),
        elapsed_s=3600,
    )
    with session_scope(factory) as s:
        job = s.get(Job, uuid.UUID(str(job_id)))
        assert job is not None
        assert scheduling.apply_info(s, job, info, datetime.now(UTC))
        charge = job.charge_units
    engine.dispose()
    plan = cli.json("nodes", "validate", "--cluster", "local", "--dry-run")
    assert plan["would_validate"] == ["local1", "local2"]
    by_node = {p["node"]: p for p in plan["if_failed"]}
    assert by_node["local1"]["jobs"] == 1 and by_node["local1"]["enterprises"] == 1
    assert by_node["local1"]["credit_pfh"] > 0 and charge
    assert by_node["local2"]["jobs"] == 0 and by_node["local2"]["credited_since"] is None
    text = cli.run("nodes", "validate", "--cluster", "local", "--dry-run").stdout
    assert "if local1 fails, it is drained and credits" in text
    assert "1 job(s) of 1 enterprise(s)" in text
    assert "if local2 fails" in text and "never passed" in text
