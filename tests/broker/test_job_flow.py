"""The walking skeleton end to end: submit, run on the local adapter, settle once."""

from __future__ import annotations

from typing import Any

import pytest

from broker.db import session_scope
from broker.services import ledger
from broker.units import CHARGE, units_to_pfh, work_units

from .conftest import Api


def test_job_runs_and_is_charged_once(api: Api) -> None:
    ent, member, project = api.tenant(grant_pfh=10)
    r = api.submit(project["id"], member, key="k1", name="hello", script="echo hello; sleep 1")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "accepted"
    assert job["cluster"] == "local" and job["partition"] == "default"
    assert job["hold_pfh"] > 0
    assert job["routing"]["cluster"] == "local" and job["routing"]["reasons"]

    done = api.drive_until(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert done["exit_code"] == 0
    assert done["charge_pfh"] > 0
    assert done["elapsed_s"] >= 1
    # charge = nodes x rate x elapsed, here 1 node at the configured 0.05 TFLOP/s:
    # 50,000 MFLOP/s x s = 50 GFLOP (ledger units) a second, exactly
    charge_units = work_units(50_000, done["elapsed_s"], rounding=CHARGE)
    assert charge_units == 50 * done["elapsed_s"]
    assert done["charge_pfh"] == units_to_pfh(charge_units)
    out = api.client.get(f"/api/v1/jobs/{job['id']}/output", headers=api.h(member))
    assert out.status_code == 200 and "hello" in out.text

    bal = api.get(f"/enterprises/{ent['id']}/balance", member).json()
    assert bal["held_pfh"] == 0
    assert bal["charged_pfh"] == pytest.approx(done["charge_pfh"], abs=1e-12)
    assert bal["available_pfh"] == pytest.approx(
        bal["granted_pfh"] - bal["held_pfh"] - bal["charged_pfh"], abs=1e-12
    )

    # More worker passes (a duplicate poll, a restart) never charge again.
    worker = api.client.app.state.worker  # type: ignore[attr-defined]
    for _ in range(3):
        worker.run_once()
    kinds = [
        e["kind"]
        for e in api.get(f"/enterprises/{ent['id']}/ledger?job_id={job['id']}", member).json()
    ]
    assert sorted(kinds) == ["CHARGE", "HOLD", "RELEASE"]
    with session_scope(api.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        import uuid

        assert ledger.check_invariants(s, uuid.UUID(ent["id"])) == []


def test_idempotency_key_returns_same_job(api: Api) -> None:
    _, member, project = api.tenant()
    first = api.submit(project["id"], member, key="same", script="echo a")
    again = api.submit(project["id"], member, key="same", script="echo a")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = api.submit(project["id"], member, key="same", script="echo b")
    assert other.status_code == 422
    assert other.json()["error"] == "IdempotencyMismatch"
    assert "Idempotency-Key" in other.json()["detail"]
    jobs = api.get(f"/jobs?project_id={project['id']}", member).json()["items"]
    assert len(jobs) == 1


def test_submit_over_quota_is_409(api: Api) -> None:
    _, member, project = api.tenant(grant_pfh=0.000001)
    r = api.submit(project["id"], member, nodes=2, time_limit_minutes=600)
    assert r.status_code == 409
    assert r.json()["error"] == "QuotaExceeded"
    assert "available" in r.json()["detail"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"time_limit_minutes": -5}, "time_limit_minutes"),
        ({"script": None}, "script"),
        ({"partition": "nope"}, "partition"),
        ({"cluster": "nowhere"}, "cluster"),
        ({"nodes": 3}, "nodes"),
        ({"cpus_per_task": 64}, "nodes"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_spec_is_422_naming_the_field(api: Api, spec: dict[str, Any], field: str) -> None:
    _, member, project = api.tenant()
    body: dict[str, Any] = {"name": "j", "script": "echo", "nodes": 1, "time_limit_minutes": 5}
    body.update(spec)
    body = {k: v for k, v in body.items() if v is not None}
    r = api.post(f"/projects/{project['id']}/jobs", member, json=body)
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error", "detail"}
    assert field in r.json()["detail"]


def test_inactive_project_refuses_jobs(api: Api) -> None:
    ent = api.enterprise(grant_pfh=1)
    member = api.token(ent["id"])
    draft = api.project(ent["id"], approve=False)
    r = api.submit(draft["id"], member)
    assert r.status_code == 409 and "draft" in r.json()["detail"]
    assert api.post(f"/projects/{draft['id']}/approve").json()["status"] == "active"
    assert api.submit(draft["id"], member).status_code == 202
    assert api.post(f"/projects/{draft['id']}/close").json()["status"] == "closed"
    assert api.submit(draft["id"], member).status_code == 409


def test_failing_and_cancelled_jobs(api: Api) -> None:
    ent, member, project = api.tenant()
    failing = api.submit(project["id"], member, script="echo oops >&2; exit 3").json()
    done = api.drive_until(failing["id"], {"failed", "completed"})
    assert done["state"] == "failed" and done["exit_code"] == 3
    err = api.client.get(
        f"/api/v1/jobs/{failing['id']}/output?stream=stderr", headers=api.h(member)
    )
    assert "oops" in err.text

    long = api.submit(project["id"], member, script="sleep 60").json()
    api.drive_until(long["id"], {"running"})
    assert api.post(f"/jobs/{long['id']}/cancel", member).status_code == 202
    cancelled = api.drive_until(long["id"], {"cancelled"})
    assert cancelled["charge_pfh"] is not None

    queued = api.submit(project["id"], member, script="sleep 60").json()
    r = api.post(f"/jobs/{queued['id']}/cancel", member)
    assert r.json()["state"] == "cancelled" and r.json()["charge_pfh"] == 0
    bal = api.get(f"/enterprises/{ent['id']}/balance", member).json()
    assert bal["held_pfh"] == 0


def test_other_tenant_gets_404(api: Api) -> None:
    _, member_a, project_a = api.tenant()
    ent_b, member_b, project_b = api.tenant()
    job_b = api.submit(project_b["id"], member_b).json()
    assert api.get(f"/jobs/{job_b['id']}", member_a).status_code == 404
    assert api.get(f"/projects/{project_b['id']}", member_a).status_code == 404
    assert api.get(f"/enterprises/{ent_b['id']}/balance", member_a).status_code == 404
    assert api.get(f"/jobs/{job_b['id']}/output", member_a).status_code == 404
    assert api.post(f"/jobs/{job_b['id']}/cancel", member_a).status_code == 404
    assert api.submit(project_b["id"], member_a).status_code == 404
    listed = api.get("/jobs", member_a).json()["items"]
    assert all(j["project_id"] == project_a["id"] for j in listed)
    assert [e["id"] for e in api.get("/enterprises", member_a).json()] != [ent_b["id"]]


def test_roles(api: Api) -> None:
    ent = api.enterprise()
    member = api.token(ent["id"])
    admin = api.token(ent["id"], "admin")
    assert api.post("/enterprises", member, json={"name": "X"}).status_code == 403
    assert (
        api.post(f"/enterprises/{ent['id']}/grants", admin, json={"amount_pfh": 1}).status_code
        == 403
    )
    assert (
        api.post(f"/enterprises/{ent['id']}/tokens", member, json={"name": "n"}).status_code == 403
    )
    assert (
        api.post(f"/enterprises/{ent['id']}/tokens", admin, json={"name": "n"}).status_code == 201
    )
    p = api.post("/projects", admin, json={"enterprise_id": ent["id"], "name": "mine"})
    assert p.status_code == 201 and p.json()["status"] == "draft"
    assert api.post(f"/projects/{p.json()['id']}/approve", admin).status_code == 403
    assert api.client.get("/api/v1/jobs").status_code == 401
    bad = api.client.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "Unauthenticated"


def test_revoked_token_is_refused_at_once(api: Api) -> None:
    ent = api.enterprise()
    r = api.post(f"/enterprises/{ent['id']}/tokens", json={"name": "m", "role": "member"})
    token, token_id = r.json()["token"], r.json()["id"]
    assert api.get("/jobs", token).status_code == 200
    assert api.post(f"/tokens/{token_id}/revoke").status_code == 200
    assert api.get("/jobs", token).status_code == 401


def test_health(api: Api) -> None:
    assert api.client.get("/api/v1/healthz").json() == {"status": "ok"}
    ready = api.client.get("/api/v1/readyz").json()
    assert ready["database"] == "ok" and "local" in ready["clusters"]
