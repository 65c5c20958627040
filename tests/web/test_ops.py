"""Dashboard sessions, CSRF, actions and reports over HTTP in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.db import session_scope
from broker.models import AuditEvent, Job, Node
from broker.services import billing, reports, statements, tokens
from broker.services.principal import SYSTEM
from broker.units import UNITS_PER_PFH

from .conftest import Ops, log_in


def _events(ops: Ops, action: str) -> list[AuditEvent]:
    with session_scope(ops.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_session_cookie_is_scoped_and_locked_down(ops: Ops) -> None:
    fresh = TestClient(ops.client.app)
    response = log_in(fresh, ops.api.operator)
    assert response.status_code == 303 and response.headers["location"] == "/ops"
    cookie = response.headers["set-cookie"].lower()
    for flag in ("httponly", "samesite=strict", "path=/ops", "max-age="):
        assert flag in cookie
    assert ops.api.operator not in response.headers["set-cookie"]
    page = fresh.get("/ops")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert len(_events(ops, "ops.login")) == 2


def test_tenant_tokens_and_bad_tokens_are_refused(ops: Ops) -> None:
    ent = ops.api.enterprise()
    for role in ("member", "admin"):
        fresh = TestClient(ops.client.app)
        r = log_in(fresh, ops.api.token(ent["id"], role))
        assert r.status_code == 403 and "Only operator tokens" in r.text
        assert fresh.get("/ops/jobs", follow_redirects=False).status_code == 303
    assert log_in(TestClient(ops.client.app), "hcb_nope").status_code == 401


def test_posts_need_the_sessions_csrf_token(ops: Ops) -> None:
    ent = ops.api.enterprise()
    url = f"/ops/enterprises/{ent['id']}/quota"
    for token in ("", "forged"):
        r = ops.client.post(url, data={"csrf": token, "action": "grant", "amount_pfh": "1"})
        assert r.status_code == 403
    other = TestClient(ops.client.app)
    log_in(other, ops.api.operator)
    r = ops.client.post(
        url, data={"csrf": ops.csrf(), "action": "grant", "amount_pfh": "1", "memo": "ok"}
    )
    assert r.status_code == 200 and "Granted 1 PFlop·h." in ops.flashes(r.text)
    assert ops.api.get(f"/enterprises/{ent['id']}/balance").json()["granted_pfh"] == 1


def test_logout_and_revocation_end_the_session(ops: Ops) -> None:
    r = ops.post("/ops/logout")
    assert r.url.path == "/ops/login" and "Logged out." in ops.flashes(r.text)
    assert ops.client.get("/ops", follow_redirects=False).status_code == 303
    assert len(_events(ops, "ops.logout")) == 1
    log_in(ops.client, ops.api.operator)
    assert ops.client.get("/ops").status_code == 200
    with session_scope(ops.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        row = next(t for t in tokens.list_tokens(s, SYSTEM, None) if t.name == "ops")
        tokens.revoke_token(s, SYSTEM, row.id)
    assert ops.client.get("/ops", follow_redirects=False).status_code == 303


def test_next_never_leaves_the_dashboard(ops: Ops) -> None:
    fresh = TestClient(ops.client.app)
    form = fresh.get("/ops/login").text
    csrf = form.split('name="csrf" value="')[1].split('"')[0]
    for target, expected in (("//evil.example/x", "/ops"), ("/ops/jobs", "/ops/jobs")):
        r = fresh.post(
            "/ops/login",
            data={"csrf": csrf, "token": ops.api.operator, "next": target},
            follow_redirects=False,
        )
        assert r.headers["location"] == expected
        csrf = fresh.get("/ops/login").text.split('name="csrf" value="')[1].split('"')[0]


def test_actions_are_audited_as_the_operator(ops: Ops) -> None:
    ent, member, proj = ops.api.tenant(grant_pfh=5)
    draft = ops.api.project(ent["id"], approve=False)
    r = ops.post(f"/ops/projects/{draft['id']}/approve", back="/ops/projects")
    assert f"Project {draft['name']} approved." in ops.flashes(r.text)
    r = ops.post(f"/ops/enterprises/{ent['id']}/quota", action="adjust", amount_pfh="-1", memo="")
    assert any("memo" in f for f in ops.flashes(r.text))  # refused, nothing written
    r = ops.post(
        f"/ops/enterprises/{ent['id']}/quota", action="adjust", amount_pfh="-1", memo="typo"
    )
    assert ops.api.get(f"/enterprises/{ent['id']}/balance").json()["granted_pfh"] == 4
    job = ops.api.submit(proj["id"], member).json()
    r = ops.post(f"/ops/jobs/{job['id']}/cancel")
    assert ops.api.get(f"/jobs/{job['id']}").json()["state"] == "cancelled"
    actors = {e.action: e.actor for e in _events(ops, "project.approve")}
    actors |= {e.action: e.actor for e in _events(ops, "ledger.adjust")}
    actors |= {e.action: e.actor for e in _events(ops, "job.cancel")}
    assert actors == dict.fromkeys(
        ["project.approve", "ledger.adjust", "job.cancel"], "operator:ops"
    )


class _FakeAdapter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def drain(self, node: str, reason: str) -> None:
        self.calls.append(("drain", node, reason))

    def resume(self, node: str) -> None:
        self.calls.append(("resume", node))


class _FakePool:
    def __init__(self, adapter: _FakeAdapter) -> None:
        self.adapter = adapter

    def get(self, cluster: str) -> _FakeAdapter:
        return self.adapter


def test_drain_and_resume_call_the_adapter_and_record_the_node(ops: Ops) -> None:
    app: Any = ops.client.app
    with session_scope(app.state.session_factory) as s:
        cluster = s.scalar(
            select(reports.center.Cluster).where(reports.center.Cluster.name == "local")
        )
        assert cluster is not None
        s.add(Node(cluster_id=cluster.id, name="local1", partitions=["default"], state="idle"))
    r = ops.post("/ops/clusters/local/nodes/nowhere/drain", reason="bad DIMM")
    assert "not found" in ops.flashes(r.text)[0]  # an unknown node is refused
    real, fake = app.state.adapters, _FakeAdapter()
    app.state.adapters = _FakePool(fake)
    try:
        r = ops.post("/ops/clusters/local/nodes/local1/drain", reason="bad DIMM")
        assert "Node local1 drained." in ops.flashes(r.text)
        assert "bad DIMM [ops:ops]" in r.text  # listed among drained nodes with its reason
        ops.post("/ops/clusters/local/nodes/local1/resume")
    finally:
        app.state.adapters = real
    assert fake.calls == [("drain", "local1", "bad DIMM [ops:ops]"), ("resume", "local1")]
    assert [e.detail["reason"] for e in _events(ops, "node.drain")] == ["bad DIMM [ops:ops]"]
    assert len(_events(ops, "node.resume")) == 1


def test_job_pages_walk_every_job_once(ops: Ops) -> None:
    ent, member, proj = ops.api.tenant(grant_pfh=50)
    ids = {ops.api.submit(proj["id"], member).json()["id"] for _ in range(7)}
    with session_scope(ops.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        seen: list[uuid.UUID] = []
        cursor = None
        f = reports.JobFilter(enterprise_id=uuid.UUID(ent["id"]))
        while True:
            rows, cursor = reports.job_page(s, f, cursor=cursor, limit=3)
            seen += [r.id for r in rows]
            if cursor is None:
                break
    assert [str(i) for i in seen] == sorted(map(str, seen), key=[str(i) for i in seen].index)
    assert {str(i) for i in seen} == ids and len(seen) == 7
    page = ops.client.get(f"/ops/jobs?enterprise={ent['id']}&state=accepted")
    assert page.text.count("data-job=") == 7
    assert ops.client.get("/ops/jobs?state=bogus").status_code == 422
    assert ops.client.get("/ops/jobs/rows").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/ops/jobs?cluster=a%00b",
        "/ops/jobs?enterprise=%00",
        "/ops/jobs/rows?project=%00",
        "/ops/clusters/a%00b",
        "/ops/clusters/local?node=n%001",
    ],
)
def test_nul_in_a_filter_or_name_is_the_requests_fault(ops: Ops, path: str) -> None:
    """A NUL, which PostgreSQL's text cannot hold, is a 422, not a database error."""
    assert ops.client.get(path).status_code == 422


def test_burn_down_starts_at_the_opening_balance_and_ends_at_today(ops: Ops) -> None:
    ent = ops.api.enterprise(grant_pfh=2)
    ops.post(f"/ops/enterprises/{ent['id']}/quota", action="grant", amount_pfh="1", memo="more")
    now = datetime.now(UTC)
    with session_scope(ops.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        bd = reports.burn_down(s, reports.get_enterprise(s, uuid.UUID(ent["id"])), now)
    assert bd.start <= now < bd.end
    assert bd.points[0].remaining_units == 0  # both grants were made this period
    assert bd.points[-1].remaining_units == 3 * UNITS_PER_PFH
    assert bd.points[-1].at == now and bd.projection.exhaustion_at is None


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [("2026-11", (2026, 11), (2026, 12)), ("2026-12", (2026, 12), (2027, 1)),
     ("2026-Q4", (2026, 10), (2027, 1)), ("2027-Q1", (2027, 1), (2027, 4))],
)  # fmt: skip
def test_period_bounds(period: str, start: tuple[int, int], end: tuple[int, int]) -> None:
    s, e = reports.period_bounds(period)
    assert (s.year, s.month, e.year, e.month) == (*start, *end) and s.tzinfo is UTC


def test_every_page_renders(ops: Ops) -> None:
    ent, _, _ = ops.api.tenant()
    for path in (
        "/ops", "/ops/enterprises", "/ops/enterprises?sort=used&page=2",
        f"/ops/enterprises/{ent['id']}", f"/ops/enterprises/{ent['id']}/ledger?month=2026-01",
        "/ops/jobs", "/ops/clusters", "/ops/clusters/local", "/ops/projects",
    ):  # fmt: skip
        assert ops.client.get(path).status_code == 200, path
    assert ops.client.get(f"/ops/enterprises/{uuid.uuid4()}").status_code == 404
    assert ops.client.get("/ops/enterprises?sort=bogus").status_code == 422
    assert ops.client.get("/ops/static/ops.js").status_code == 200
    assert ops.client.get("/ops/static/../routes.py").status_code == 404


def test_projection_names_a_date_when_burning(ops: Ops) -> None:
    p = reports.quota._project(
        10 * UNITS_PER_PFH, 7 * UNITS_PER_PFH, datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert p.rate_units_per_day == UNITS_PER_PFH
    assert p.exhaustion_at == datetime(2026, 1, 11, tzinfo=UTC)
    assert reports.quota._project(10, 0, datetime.now(UTC)).exhaustion_at is None
    assert timedelta(days=1) == reports.quota.DAY


def _charged_job(ops: Ops) -> tuple[dict[str, Any], str]:
    """A tenant with one settled job on ``local1``: charge lines for this month."""
    ent, member, proj = ops.api.tenant(grant_pfh=5)
    job_id = ops.api.submit(proj["id"], member).json()["id"]
    now = datetime.now(UTC)
    with session_scope(ops.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        job = s.get(Job, uuid.UUID(job_id))
        assert job is not None
        job.node_list = ["local1"]
        assert billing.settle_job(s, job, now - timedelta(minutes=30), 600, "")
    return ent, now.strftime("%Y-%m")


def test_statement_csv_is_the_apis_csv(ops: Ops) -> None:
    ent, month = _charged_job(ops)
    url = f"/ops/enterprises/{ent['id']}/statement.csv?month={month}"
    r = ops.client.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    assert r.headers["cache-control"] == "no-store"
    api = ops.api.client.get(
        f"/api/v1/enterprises/{ent['id']}/usage?month={month}",
        headers=ops.api.h(Accept="text/csv"),
    )
    assert r.text == api.text and r.text.count("\n") == 3  # header, one line, totals
    page = ops.client.get(f"/ops/enterprises/{ent['id']}?month={month}")
    assert f'href="/ops/enterprises/{ent["id"]}/statement.csv?month={month}"' in page.text
    assert page.text.count("data-project=") == 1
    assert ops.client.get(url.replace(month, "2026-13")).status_code == 422
    assert ops.client.get(f"/ops/enterprises/{ent['id']}?month=bogus").status_code == 422
    assert (
        ops.client.get(f"/ops/enterprises/{uuid.uuid4()}/statement.csv?month={month}").status_code
        == 404
    )


def test_statement_csv_refuses_tenants(ops: Ops) -> None:
    ent, month = _charged_job(ops)
    url = f"/ops/enterprises/{ent['id']}/statement.csv?month={month}"
    assert TestClient(ops.client.app).get(url, follow_redirects=False).status_code == 303
    for role in ("member", "admin"):
        fresh = TestClient(ops.client.app)
        assert log_in(fresh, ops.api.token(ent["id"], role)).status_code == 403
        r = fresh.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ops/login")
        # nor does the tenant's bearer token open the dashboard's route
        r = fresh.get(
            url, headers=ops.api.h(ops.api.token(ent["id"], role)), follow_redirects=False
        )
        assert r.status_code == 303


def test_write_handlers_end_their_transaction_before_returning(ops: Ops) -> None:
    """No POST leaves its transaction (and SQLite's write lock) to the dependency's teardown."""
    app: Any = ops.client.app
    ent, member, proj = ops.api.tenant(grant_pfh=5)
    draft = ops.api.project(ent["id"], approve=False)
    job = ops.api.submit(proj["id"], member).json()
    factory, seen = app.state.session_factory, []

    def recording() -> Any:
        session = factory()
        real = session.in_transaction

        def in_transaction() -> bool:  # only get_db's teardown asks
            seen.append(real())
            return bool(seen[-1])

        session.in_transaction = in_transaction  # type: ignore[method-assign]
        return session

    app.state.session_factory = recording
    try:
        quota = f"/ops/enterprises/{ent['id']}/quota"
        ops.post(f"/ops/projects/{draft['id']}/approve")
        ops.post(quota, action="grant", amount_pfh="1", memo="more")
        ops.post(quota, action="adjust", amount_pfh="-1", memo="")  # refused: rolled back
        ops.post(f"/ops/jobs/{job['id']}/cancel")
        ops.post("/ops/logout")
        assert log_in(ops.client, ops.api.operator).status_code == 303
        assert log_in(TestClient(app), member).status_code == 403
    finally:
        app.state.session_factory = factory
    assert len(seen) == 7 and not any(seen)
    assert ops.api.get(f"/enterprises/{ent['id']}/balance").json()["granted_pfh"] == 6


def test_statement_summary_matches_the_statement(ops: Ops) -> None:
    ent, month = _charged_job(ops)
    ent_id = uuid.UUID(ent["id"])
    factory = ops.client.app.state.session_factory  # type: ignore[attr-defined]
    for credit in (False, True):
        with session_scope(factory) as s:
            if credit:  # local1 degraded: its job is credited in full
                assert billing.credit_node(s, SYSTEM, "local", "local1", None, "GEMM low")
            doc = statements.statement(s, SYSTEM, ent_id, month)
            got = reports.statement_summary(s, ent_id, month)
        for key in ("charged_pfh", "credited_pfh", "net_pfh", "net_units", "node_hours"):
            assert getattr(got, key) == doc[key], key
        assert got.price_total == pytest.approx(doc["price_total"], abs=1e-6)
        assert [(p.name, p.jobs, p.net_pfh, p.node_hours) for p in got.projects] == [
            (p["name"], len(p["jobs"]), p["net_pfh"], p["node_hours"]) for p in doc["projects"]
        ]
    assert got.credited_pfh > 0 and got.net_units == 0
    with session_scope(factory) as s:  # credited lines net to zero: nothing left to credit
        assert billing.credit_node(s, SYSTEM, "local", "local1", None, "again") == []


def test_enterprise_page_shows_workspace_use_per_project(ops: Ops) -> None:
    ent, member, proj = ops.api.tenant(grant_pfh=1)
    r = ops.api.client.put(
        f"/api/v1/projects/{proj['id']}/files/inputs/mesh.dat",
        content=b"x" * 2048,
        headers=ops.api.h(member),
    )
    assert r.status_code == 201, r.text
    page = ops.client.get(f"/ops/enterprises/{ent['id']}")
    assert page.status_code == 200
    assert "1 files, 0.0 MiB" in page.text
