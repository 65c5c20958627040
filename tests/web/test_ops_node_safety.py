"""Dashboard: a cluster with no node in service shows degraded; a degraded node's Resume
asks for a reason (a forced, audited resume); each node shows what its failure credits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from broker.db import session_scope
from broker.models import AuditEvent, Node, Validation

from .conftest import Ops


def test_degraded_cluster_resume_with_reason_and_credit_preview(ops: Ops) -> None:
    app: Any = ops.client.app
    app.state.worker.refresh_clusters()
    page = ops.client.get("/ops/clusters/local").text
    assert "A failed validation would credit" in page
    assert "nothing: no passing run yet" in page
    for name in ("local1", "local2"):
        r = ops.post(f"/ops/clusters/local/nodes/{name}/drain", reason="maintenance")
        assert f"Node {name} drained." in ops.flashes(r.text)
    page = ops.client.get("/ops/clusters/local").text
    assert 'class="status status-degraded">degraded<' in page
    assert "status-degraded" in ops.client.get("/ops/clusters").text

    with session_scope(app.state.session_factory) as s:
        s.execute(update(Node).where(Node.name == "local1").values(validation=Validation.DEGRADED))
    page = ops.client.get("/ops/clusters/local").text
    assert 'placeholder="why resume a degraded node" required' in page  # it asks
    r = ops.post("/ops/clusters/local/nodes/local1/resume")
    assert "--force --reason" in ops.flashes(r.text)[0]  # refused without a reason
    r = ops.post("/ops/clusters/local/nodes/local1/resume", reason="fan replaced")
    assert "Node local1 resumed by force: fan replaced." in ops.flashes(r.text)
    with session_scope(app.state.session_factory) as s:
        node = s.scalar(select(Node).where(Node.name == "local1"))
        assert node is not None and node.validation is Validation.UNVALIDATED
        event = s.scalar(
            select(AuditEvent)
            .where(AuditEvent.action == "node.resume")
            .order_by(AuditEvent.id.desc())
        )
        assert event is not None and event.detail["reason"] == "fan replaced"
        assert event.actor == "operator:ops"
    page = ops.client.get("/ops/clusters/local").text
    assert 'class="status status-up">up<' in page
