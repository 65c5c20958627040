"""Operator self-service and the job page over HTTP, in-process, on SQLite and PostgreSQL:
the same services and audit trail as the API, refusals as flash messages (issue 21)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import select

from broker.db import session_scope
from broker.models import AuditEvent, Job
from broker.schemas.jobs import JobDetail
from broker.web.deps import fmt_amount

from .conftest import Ops


def _audit(ops: Ops, enterprise_id: str) -> list[tuple[str, str]]:
    app: Any = ops.client.app
    with session_scope(app.state.session_factory) as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.enterprise_id == uuid.UUID(enterprise_id))
        )
        return [(a.action, a.actor) for a in rows]


def test_enterprise_token_project_allocation_cap_and_suspension(ops: Ops) -> None:
    r = ops.post("/ops/enterprises", name="Müller & Söhne Simulation", grant_pfh="3")
    assert r.status_code == 200
    ent_id = re.search(r"/ops/enterprises/([0-9a-f-]{36})", str(r.url))
    assert ent_id is not None, r.url
    eid = ent_id.group(1)
    ent = ops.api.get(f"/enterprises/{eid}").json()
    assert ent["name"] == "Müller & Söhne Simulation"
    assert ent["slurm_account"] == "e_muller_sohne_simulation"
    assert ops.api.get(f"/enterprises/{eid}/balance").json()["granted_pfh"] == 3

    again = ops.post("/ops/enterprises", name="Müller & Söhne Simulation")
    assert "already exists" in ops.flashes(again.text)[0]
    bad = ops.post("/ops/enterprises", name="\u202eevil")
    assert ops.flashes(bad.text)[0].startswith("name: must start with a letter")

    page = ops.post(f"/ops/enterprises/{eid}/tokens", name="jan", role="admin", expires_days="30")
    token = re.search(r'data-testid="new-token">([^<]+)<', page.text)
    assert token is not None and "shown once" in page.text
    assert page.headers["cache-control"] == "no-store"
    me = ops.api.get("/me", token.group(1)).json()
    assert me["role"] == "admin" and me["expires_at"] is not None
    assert token.group(1) not in ops.client.get(f"/ops/enterprises/{eid}").text

    r = ops.post(
        f"/ops/enterprises/{eid}/projects",
        name="Strömung",
        description="CFD",
        allocation_pfh="1.5",
        approve="1",
    )
    flash = ops.flashes(r.text)[0]
    assert flash.startswith("Project Strömung created (active)")
    pid = re.search(r"its id is ([0-9a-f-]{36})", flash)
    assert pid is not None
    project = pid.group(1)
    assert ops.api.get(f"/projects/{project}").json()["allocation_pfh"] == 1.5
    r = ops.post(f"/ops/projects/{project}/allocation", allocation_pfh="0.5")
    assert "allocated 0.5 PFlop·h" in ops.flashes(r.text)[0]
    assert ops.api.get(f"/projects/{project}").json()["allocation_pfh"] == 0.5
    r = ops.post(f"/ops/projects/{project}/allocation", allocation_pfh="")
    assert "no allocation limit" in ops.flashes(r.text)[0]

    r = ops.post(f"/ops/enterprises/{eid}/capacity", capacity_cap_pflops="abc")
    assert ops.flashes(r.text)[0].startswith("capacity_cap_pflops: is not a number")
    r = ops.post(f"/ops/enterprises/{eid}/capacity", capacity_cap_pflops="0.25")
    assert ops.api.get(f"/enterprises/{eid}").json()["capacity_cap_pflops"] == 0.25
    assert "250 TFLOP/s" in r.text  # the KPI, by its magnitude

    member = ops.api.token(eid)
    spec = {"name": "run-1", "script": "true", "nodes": 1, "time_limit_minutes": 5}
    ops.post(f"/ops/enterprises/{eid}/status", status="suspended")
    assert ops.api.get(f"/enterprises/{eid}").json()["status"] == "suspended"
    refused = ops.api.post(f"/projects/{project}/jobs", member, json=spec)
    assert refused.status_code in (403, 409), refused.text
    ops.post(f"/ops/enterprises/{eid}/status", status="active")
    assert ops.api.post(f"/projects/{project}/jobs", member, json=spec).status_code == 202
    r = ops.post(f"/ops/enterprises/{eid}/status", status="gone")
    assert "must be &#39;active&#39; or &#39;suspended&#39;" in ops.flashes(r.text)[0]

    tokens_now = ops.api.get(f"/enterprises/{eid}/tokens").json()
    jan = next(t for t in tokens_now if t["name"] == "jan")
    ops.post(f"/ops/enterprises/{eid}/tokens/{jan['id']}/revoke")
    assert ops.api.get("/me", token.group(1)).status_code == 401

    done = _audit(ops, eid)
    for action in (
        "enterprise.create",
        "ledger.grant",
        "token.create",
        "project.create",
        "project.approve",
        "project.allocate",
        "enterprise.capacity_cap",
        "enterprise.suspended",
        "enterprise.active",
        "token.revoke",
    ):
        assert (action, "operator:ops") in done, (action, done)


def test_self_service_needs_the_forms_csrf_token(ops: Ops) -> None:
    r = ops.client.post("/ops/enterprises", data={"name": "No Csrf"})
    assert r.status_code == 403
    assert ops.api.get("/enterprises").json() == []


def test_job_page_by_id_or_prefix_with_every_api_field(ops: Ops) -> None:
    _, member, proj = ops.api.tenant()
    job = ops.api.submit(proj["id"], member, name="σ-scan", environment={"MODE": "fast"}).json()
    page = ops.client.get(f"/ops/jobs/{job['id'][:8]}")
    assert page.status_code == 200 and str(page.url).endswith(f"/ops/jobs/{job['id']}")
    html = page.text
    own = {"script", "routing", "environment", "warnings", "inputs", "outputs"}
    for name in set(JobDetail.model_fields) - own:
        assert f'data-field="{name}"' in html, name
    assert "σ-scan" in html and "MODE" in html and "fast" in html
    assert "node rate" in html  # the routing decision's reasons
    assert 'data-state="accepted"' in html  # the timeline's first step
    assert ops.client.get(f"/ops/jobs/{job['id']}/output?stream=stdout").text == ""
    assert ops.client.get(f"/ops/jobs/{uuid.uuid4()}").status_code == 404
    assert ops.client.get("/ops/jobs/zz").status_code == 422
    # /ops/jobs/rows stays the table's refresh, not a job called "rows"
    assert ops.client.get("/ops/jobs/rows").status_code == 200
    app: Any = ops.client.app
    with session_scope(app.state.session_factory) as s:
        assert s.get(Job, uuid.UUID(job["id"])) is not None


def test_amounts_are_formatted_by_magnitude() -> None:
    assert fmt_amount(15.5) == "15.5 PFlop·h"
    assert fmt_amount(1.24e-6) == "1.24 GFlop·h"
    assert fmt_amount(0.21) == "210 TFlop·h"
    assert fmt_amount(1250) == "1,250 PFlop·h"
    assert fmt_amount(0) == "0 PFlop·h"
    assert fmt_amount(-0.003) == "-3.00 TFlop·h"
    assert fmt_amount(None) == "—"


def test_array_job_page_lists_its_tasks_and_their_output(ops: Ops) -> None:
    _, member, proj = ops.api.tenant()
    script = '#!/bin/bash\necho "task=$SLURM_ARRAY_TASK_ID"\n'
    job = ops.api.submit(proj["id"], member, script=script, array="0-2").json()
    assert job["array"] == "0-2"
    done = ops.api.drive_until(job["id"], {"completed", "failed"}, timeout_s=60)
    assert done["state"] == "completed", done
    api_tasks = ops.api.get(f"/jobs/{job['id']}/tasks", member).json()["items"]
    html = ops.client.get(f"/ops/jobs/{job['id']}").text
    assert 'data-testid="tasks"' in html
    rows = re.findall(r'<tr data-task="(\d+)">(.*?)</tr>', html, re.S)
    assert [int(i) for i, _ in rows] == [t["index"] for t in api_tasks] == [0, 1, 2]
    assert all("completed" in row for _, row in rows)
    assert 'data-field="array"' in html and 'data-field="depends_on"' in html
    assert "task=0" in html  # the first task's output by default
    page = ops.client.get(f"/ops/jobs/{job['id']}?task=2").text
    assert "task=2" in page and "of task 2" in page
    tail = ops.client.get(f"/ops/jobs/{job['id']}/output?stream=stdout&task=1").text
    assert tail == "task=1\n"
    plain = ops.api.submit(proj["id"], member).json()
    assert 'data-testid="tasks"' not in ops.client.get(f"/ops/jobs/{plain['id']}").text


def test_an_empty_center_shows_empty_states_not_empty_frames(ops: Ops) -> None:
    overview = ops.client.get("/ops").text
    for chart in ("quota", "states", "burning"):
        figure = overview.split(f'data-chart="{chart}"', 1)[1].split("</figure>", 1)[0]
        assert 'class="empty-chart"' in figure and "<svg" not in figure, chart
    cluster = ops.client.get("/ops/clusters/local").text
    for chart in ("billed-rate", "rate-history", "node-rates"):
        figure = cluster.split(f'data-chart="{chart}"', 1)[1].split("</figure>", 1)[0]
        assert 'class="empty-chart"' in figure and "<svg" not in figure, chart
    assert "No measured rate yet" in cluster and "01 Jan" not in cluster
