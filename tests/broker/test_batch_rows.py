"""A batch's rows, written set-based (``services.bulk``: one statement on PostgreSQL, one
executemany per table on SQLite), read back as the ORM reads them: every column of each
job as accepted, its HOLD entry, audit row, outbox event, array tasks and dependency
rows; the 202's body is the job as ``GET /jobs/{id}`` shows it; the balances add up.
A mixed batch: replays, refusals (project allocation, capacity cap, budget) between
acceptances, arrays, dependencies, inputs and outputs, a webhook's deliveries."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from broker.api import views
from broker.db import session_scope
from broker.models import (
    AuditEvent,
    Balance,
    EntryKind,
    Job,
    JobDependency,
    JobEvent,
    JobIO,
    JobTask,
    LedgerEntry,
    Project,
    Webhook,
    WebhookDelivery,
)
from broker.services import bulk, intake, ledger, outbox, workspaces
from broker.services.principal import SYSTEM
from broker.units import pfh_to_units

from .test_submit_batching import HOLD_PFH, _answer, factory, make_tenant, run, spec

__all__ = ["factory"]


def _columns(job: Job) -> dict[str, Any]:
    return {c.key: getattr(job, c.key) for c in Job.__table__.columns}


def test_a_mixed_batch_stores_each_row_as_accepted(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cfg = workspaces.WorkspaceConfig(tmp_path / "ws", 1 << 20)
    t = make_tenant(factory, cap_nodes=7, grant_jobs=7)
    parent = run(factory, [(t.member, t.p2, spec(), "parent")], batched=True)[0]
    assert parent.job is not None
    m = t.member
    items = [
        (m, t.p1, spec(environment={"A": "é b"}, constraints=[]), "a"),
        (m, t.p1, spec(), "b"),
        (m, t.p1, spec(), "c"),  # 409: p1's allocation (two holds)
        (m, t.p1, spec(environment={"A": "é b"}, constraints=[]), "a"),  # replay in the batch
        (m, t.p2, spec(array="0-3%2", time_limit_minutes=1), "arr"),  # 2 nodes at once
        (m, t.p2, spec(depends_on=[{"job_id": str(parent.job.id)}], outputs=["*.out"]), "d"),
        (m, t.p2, spec(script="#SBATCH --account=x\necho", working_directory="w"), None),
        (m, t.p2, spec(nodes=2), "cap"),  # 422: the capacity cap (7 nodes) leaves 1
        (m, t.p2, spec(), "parent"),  # a replay of a stored job
    ]
    outs = run(factory, items, batched=True, workspace=cfg)
    assert [_answer(o)[0] for o in outs] == [
        "created",
        "created",
        "QuotaExceeded",
        "replayed",
        "created",
        "created",
        "created",
        "InvalidInput",
        "replayed",
    ]
    assert "capacity cap" in str(outs[7].error)
    assert outs[3].job is outs[0].job and outs[3].detail == outs[0].detail
    created = [o for o in outs if o.created]
    with session_scope(factory) as s:
        for out in created:
            assert isinstance(out.job, intake.JobRow) and out.detail is not None
            stored = s.get(Job, out.job.id)
            assert stored is not None
            assert _columns(stored) == {k: out.job.row[k] for k in _columns(stored)}
            io = s.get(JobIO, stored.id)
            shown = json.loads(views.job_detail(stored, io).model_dump_json())
            assert json.loads(views.job_detail_json(out.detail)) == shown
            [hold] = s.scalars(select(LedgerEntry).where(LedgerEntry.job_id == stored.id)).all()
            assert (hold.kind, hold.amount_units, hold.project_id, hold.actor) == (
                EntryKind.HOLD,
                stored.hold_units,
                stored.project_id,
                stored.submitted_by,
            )
            assert hold.period and hold.created_at is not None
            [audit] = s.scalars(
                select(AuditEvent).where(AuditEvent.target_id == str(stored.id))
            ).all()
            assert (audit.action, audit.enterprise_id, audit.detail) == (
                "job.submit",
                t.enterprise_id,
                {"cluster": stored.cluster, "partition": stored.partition},
            )
            [event] = s.scalars(select(JobEvent).where(JobEvent.job_id == stored.id)).all()
            assert (event.state, event.previous_state) == ("accepted", None)
            assert event.payload == json.loads(json.dumps(outbox.job_snapshot(stored, io)))
        arr = created[2].job
        assert arr is not None
        tasks = s.scalars(select(JobTask).where(JobTask.job_id == arr.id)).all()
        assert [(x.index, x.state.value, x.node_list, x.reason) for x in tasks] == [
            (i, "accepted", [], "") for i in range(4)
        ]
        dep = created[3].job
        assert dep is not None
        assert s.scalars(
            select(JobDependency.parent_id).where(JobDependency.job_id == dep.id)
        ).all() == [parent.job.id]
        io = s.get(JobIO, dep.id)
        assert io is not None and io.outputs == ["*.out"] and io.stage_in == {}
        assert ledger.check_invariants(s, t.enterprise_id) == []
        bal = ledger.balance(s, SYSTEM, t.enterprise_id)
        held = sum(o.job.hold_units for o in created if o.job is not None)
        assert bal.held_units == held + pfh_to_units(HOLD_PFH)  # the parent's too


def test_the_budget_refuses_in_arrival_order(factory: sessionmaker[Session]) -> None:
    t = make_tenant(factory, grant_jobs=3, p1_jobs=1000)
    items = [(t.member, t.p2, spec(nodes=n), f"k{i}") for i, n in enumerate([1, 3, 1, 1, 1])]
    outs = run(factory, items, batched=True)
    assert [_answer(o)[0] for o in outs] == [
        "created",
        "QuotaExceeded",
        "created",
        "created",
        "QuotaExceeded",
    ]
    with session_scope(factory) as s:
        row = s.scalar(
            select(Balance).where(
                Balance.enterprise_id == t.enterprise_id, Balance.project_id.is_(None)
            )
        )
        assert row is not None and row.held_units == row.granted_units


def test_a_webhook_gets_its_deliveries(factory: sessionmaker[Session]) -> None:
    """A project with a webhook: the events are written with their deliveries (the
    outbox's own path, which needs the events' ids)."""
    t = make_tenant(factory)
    with session_scope(factory) as s:
        hook = Webhook(project_id=t.p2, url="http://127.0.0.1:9/h")
        s.add(hook)
        s.flush()
        hook_id = hook.id
    outs = run(factory, [(t.member, t.p2, spec(), f"w{i}") for i in range(3)], batched=True)
    assert all(o.created and o.detail is not None for o in outs)
    with session_scope(factory) as s:
        for out in outs:
            assert out.job is not None
            [event] = s.scalars(select(JobEvent).where(JobEvent.job_id == out.job.id)).all()
            [delivery] = s.scalars(
                select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)
            ).all()
            assert delivery.webhook_id == hook_id


def test_complete_gives_each_column_its_default() -> None:
    row = bulk.complete(JobTask, {"job_id": uuid.uuid4(), "index": 3})
    assert set(row) == {c.key for c in JobTask.__table__.columns}
    assert (row["native_state"], row["node_list"], row["cancel_requested"]) == ("", [], False)


def test_the_routing_snapshot_is_read_again_after_a_change(
    factory: sessionmaker[Session],
) -> None:
    """``SnapshotCache``: a change committed by any session of this process is routed
    by at once; one made elsewhere (here: plain SQL, which the ORM's events do not see)
    once the snapshot is ``ttl_s`` old."""
    from sqlalchemy import update

    from broker.models import Cluster
    from broker.services.snapshot_cache import SnapshotCache

    cache = SnapshotCache(ttl_s=3600)
    with session_scope(factory) as s:
        first = cache.get(s)
        assert [c.name for c, _ in first.rows] == ["local"]
        assert cache.get(s) is first
    with session_scope(factory) as s:
        cluster = s.scalars(select(Cluster)).one()
        cluster.enabled = False
    with session_scope(factory) as s:
        assert cache.get(s).rows == []  # this process's commit: at once
    with factory() as s, s.begin():
        s.connection().execute(update(Cluster.__table__).values(enabled=True))
    with session_scope(factory) as s:
        assert cache.get(s).rows == []  # elsewhere: not before ttl_s
        cache.ttl_s = 0
        assert [c.name for c, _ in cache.get(s).rows] == ["local"]


def test_the_allocation_is_read_under_the_lock(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project's allocation lowered after the batch read its projects, before it took
    the lock, is the one its holds are checked against (PostgreSQL: on SQLite the batch
    holds the whole database from its first read)."""
    if factory.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite: one writer at a time from the first read")
    t = make_tenant(factory, p1_jobs=5)
    real = ledger.lock_batch

    def lower_first(session: Session, *args: Any) -> Any:
        with session_scope(factory) as other:
            project = other.get(Project, t.p1)
            assert project is not None
            ledger.allocate(other, SYSTEM, project, pfh_to_units(HOLD_PFH))  # one hold
        return real(session, *args)

    monkeypatch.setattr(ledger, "lock_batch", lower_first)
    outs = run(factory, [(t.member, t.p1, spec(), f"k{i}") for i in range(2)], batched=True)
    assert [_answer(o)[0] for o in outs] == ["created", "QuotaExceeded"]
    assert "allocation" in str(outs[1].error)
