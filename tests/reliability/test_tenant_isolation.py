"""Tenant isolation: a matrix generated from the app's routes proves no cross-tenant access.

Every route the app serves (``/api/v1``, the root probes, ``/ops``) is called with its
path parameters filled with the *victim* enterprise's real ids (enterprise, project,
job, token), query filters pointing at the victim, and a valid body, by:

* another enterprise's member and admin: never a 2xx on a route that names a victim
  object, and no victim id in any answer;
* no token, a revoked token, a made-up token: 401 (the dashboard: a redirect to login);
* the victim's own member where an admin is needed, its admin where an operator is:
  403 (or 404), never 2xx.

A snapshot of every table (audit log aside) before and after shows nothing changed.
A new route needs no change here unless it takes a body of a new schema or a path
parameter of a new name: the test fails and says so.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from broker.db import Base
from broker.models import ApiToken

from ..broker.conftest import Api

pytestmark = pytest.mark.filterwarnings("ignore:PluginImportFixer:ImportWarning")

#: Answer to anyone: no tenant data behind them.
PUBLIC = {
    "/",  # the API's name, version and links to its docs
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/healthz",
    "/readyz",
    "/api/v1/healthz",
    "/api/v1/readyz",
    "/metrics",
    "/ops/login",
    "/ops/static/{name}",
}
#: Writes a member of the enterprise may do; every other write needs an admin or more.
MEMBER_WRITES = {
    ("POST", "/api/v1/projects/{project_id}/jobs"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    # Project workspaces: members upload inputs and register their job webhooks.
    ("PUT", "/api/v1/projects/{project_id}/files/{path:path}"),
    ("DELETE", "/api/v1/projects/{project_id}/files/{path:path}"),
    ("POST", "/api/v1/projects/{project_id}/webhooks"),
    ("POST", "/api/v1/projects/{project_id}/webhooks/secret"),
}
#: Writes only an operator may do (an enterprise admin gets 403).
OPERATOR_WRITES = {
    ("POST", "/api/v1/enterprises"),
    ("PUT", "/api/v1/enterprises/{enterprise_id}/capacity"),
    ("POST", "/api/v1/enterprises/{enterprise_id}/grants"),
    ("POST", "/api/v1/enterprises/{enterprise_id}/adjustments"),
    ("POST", "/api/v1/projects/{project_id}/approve"),
}
DENIED = {401, 403, 404}
#: Values for required query parameters that name no tenant object.
QUERY_FILL = {"month": "2026-01"}


@dataclass
class Victim:
    enterprise: str
    project: str
    draft_project: str
    job: str
    member: str
    admin: str
    admin_token_id: str

    def ids(self) -> list[str]:
        return [self.enterprise, self.project, self.draft_project, self.job, self.admin_token_id]


@dataclass
class Call:
    method: str
    template: str
    path: str
    params: dict[str, str]
    body: Any
    names_victim: bool  # a victim id is in the path or the body


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path template) for every route, included routers flattened."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.130
    except ImportError:  # pragma: no cover - older FastAPI lists routes flat
        found = [(r, r) for r in app.routes]
    else:
        found = [(c, c.route) for c in iter_route_contexts(app.routes)]
    for ctx, _route in found:
        for method in sorted(getattr(ctx, "methods", None) or ()):
            if method != "HEAD":
                yield method, ctx.path


def bodies(victim: Victim) -> dict[str, Any]:
    """A valid body for each request schema (by its OpenAPI name)."""
    return {
        "EnterpriseCreate": {"name": "Intruder"},
        "CapacitySet": {"capacity_cap_pflops": 1.0},
        "TokenCreate": {"name": "stolen", "role": "admin"},
        "GrantCreate": {"amount_pfh": 5.0},
        "AdjustCreate": {"amount_pfh": 5.0, "memo": "steal"},
        "ProjectCreate": {"enterprise_id": victim.enterprise, "name": "intrude"},
        "AllocationSet": {"allocation_pfh": 1.0},
        "JobCreate": {"name": "x", "script": "id", "nodes": 1, "time_limit_minutes": 1},
        "LostResolution": {"charge_elapsed_s": 1, "memo": "steal"},
        "WebhookCreate": {"url": "http://127.0.0.1:9/hook"},
    }


def build_calls(app: FastAPI, victim: Victim) -> list[Call]:
    fill = {
        "enterprise_id": victim.enterprise,
        "project_id": victim.project,
        "job_id": victim.job,
        "token_id": victim.admin_token_id,
        "name": "local",
        "cluster": "local",
        "path": "notes.txt",
        "webhook_id": str(uuid.uuid4()),
        "index": "0",  # /jobs/{job_id}/tasks/{index}/cancel
    }
    ops_fill = {**fill, "name": "local1"}  # /ops/clusters/{cluster}/nodes/{name}
    # /clusters/{name}/nodes/{node}/rates: the cluster and one of its nodes
    node_fill = {**fill, "node": "local1"}
    spec = app.openapi()
    known_bodies = bodies(victim)
    calls = []
    for method, template in routes(app):
        names = re.findall(r"{(\w+)(?::\w+)?}", template)
        source = node_fill if "{node}" in template else ops_fill if "/nodes/" in template else fill
        missing = [n for n in names if n not in source]
        assert not missing, f"{method} {template}: no victim value for {missing}: extend `fill`"
        path = re.sub(r"{(\w+)(?::\w+)?}", lambda m, src=source: src[m.group(1)], template)
        op = spec["paths"].get(template, {}).get(method.lower(), {})
        params = {
            p["name"]: fill[p["name"]]
            for p in op.get("parameters", [])
            if p["in"] == "query" and p["name"] in ("enterprise_id", "project_id", "job_id")
        }
        params.update(
            {
                p["name"]: QUERY_FILL[p["name"]]
                for p in op.get("parameters", [])
                if p["in"] == "query" and p.get("required") and p["name"] in QUERY_FILL
            }
        )
        body = None
        ref = (
            op.get("requestBody", {})
            .get("content", {})
            .get("application/json", {})
            .get("schema", {})
            .get("$ref")
        )
        if ref:
            schema = ref.rsplit("/", 1)[1]
            assert schema in known_bodies, f"{method} {template}: add a body for {schema}"
            body = known_bodies[schema]
        victim_named = any(
            n in ("enterprise_id", "project_id", "job_id", "token_id", "webhook_id") for n in names
        ) or (isinstance(body, dict) and victim.enterprise in body.values())
        calls.append(Call(method, template, path, params, body, victim_named))
    return calls


def snapshot(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the audit log."""
    factory = api.client.app.state.read_session_factory  # type: ignore[attr-defined]
    out = {}
    with factory() as s:
        for table in Base.metadata.sorted_tables:
            if table.name in ("audit_event", "alembic_version"):
                continue
            rows = s.execute(text(f"SELECT * FROM {table.name}")).all()
            out[table.name] = sorted(tuple(map(str, r)) for r in rows)
    return out


def call(api: Api, c: Call, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return api.client.request(
        c.method,
        c.path,
        params=c.params,
        json=c.body,
        headers=headers,
        follow_redirects=False,
    )


@pytest.fixture
def world(api: Api) -> tuple[Victim, dict[str, str]]:
    """The victim enterprise with real objects, and the attackers' tokens."""
    ent = api.enterprise(grant_pfh=10)
    member = api.token(ent["id"], "member")
    r = api.post(f"/enterprises/{ent['id']}/tokens", json={"name": "adm", "role": "admin"})
    admin, admin_id = r.json()["token"], r.json()["id"]
    project = api.project(ent["id"])
    draft = api.project(ent["id"], approve=False)
    job = api.submit(project["id"], member)
    assert job.status_code == 202, job.text
    victim = Victim(
        ent["id"], project["id"], draft["id"], job.json()["id"], member, admin, admin_id
    )
    other = api.enterprise(grant_pfh=10)
    api.project(other["id"])
    revoked = api.token(other["id"], "admin")
    with api.client.app.state.read_session_factory() as s:  # type: ignore[attr-defined]
        rid = s.scalars(select(ApiToken.id).order_by(ApiToken.created_at.desc())).first()
    assert api.post(f"/tokens/{rid}/revoke").status_code == 200
    attackers = {
        "other member": api.token(other["id"], "member"),
        "other admin": api.token(other["id"], "admin"),
        "revoked": revoked,
        "made-up": "hcb_" + uuid.uuid4().hex,
    }
    return victim, attackers


def _leaks(victim: Victim, text_: str) -> list[str]:
    return [i for i in victim.ids() if i in text_]


def test_no_route_crosses_a_tenant(api: Api, world: tuple[Victim, dict[str, str]]) -> None:
    victim, attackers = world
    app = api.client.app
    calls = build_calls(app, victim)  # type: ignore[arg-type]
    assert len(calls) >= 40, [f"{c.method} {c.template}" for c in calls]
    before = snapshot(api)
    failures = []
    checked = 0
    for c in calls:
        if c.template in PUBLIC:
            r = call(api, c, None)
            if r.status_code >= 500 or _leaks(victim, r.text):
                failures.append(f"{c.method} {c.path} public: {r.status_code} leaks")
            continue
        for who, token in [("no token", None), *attackers.items()]:
            r = call(api, c, token)
            checked += 1
            code = r.status_code
            authless = who in ("no token", "revoked", "made-up")
            if c.template.startswith("/ops"):
                # The dashboard knows only operator sessions: bearer tokens get the login.
                ok = code in DENIED or (
                    code == 303 and r.headers["location"].startswith("/ops/login")
                )
                if c.method == "POST" and code == 403:
                    ok = True  # CSRF check comes first
            elif authless:
                ok = code == 401 and r.json()["error"] == "Unauthenticated"
            elif c.names_victim:
                ok = code in DENIED
            else:
                ok = code < 300 or code in DENIED
            leaked = _leaks(victim, r.text)
            if not ok or leaked or code >= 500:
                failures.append(f"{who}: {c.method} {c.path} -> {code} {r.text[:120]} {leaked}")
    assert checked >= 5 * 40
    assert not failures, "\n".join(failures)
    assert snapshot(api) == before, "a refused request changed the database"


def test_no_route_crosses_a_role(api: Api, world: tuple[Victim, dict[str, str]]) -> None:
    """The victim's member where an admin is needed, its admin where an operator is."""
    victim, _ = world
    calls = [
        c
        for c in build_calls(api.client.app, victim)  # type: ignore[arg-type]
        if c.template.startswith("/api/v1") and c.method != "GET"
    ]
    before = snapshot(api)
    failures = []
    for c in calls:
        key = (c.method, c.template)
        if key in MEMBER_WRITES:
            continue
        r = call(api, c, victim.member)
        if r.status_code not in (403, 404):
            failures.append(f"member: {c.method} {c.path} -> {r.status_code} {r.text[:120]}")
        if key in OPERATOR_WRITES:
            r = call(api, c, victim.admin)
            if r.status_code not in (403, 404):
                failures.append(f"admin: {c.method} {c.path} -> {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)
    assert snapshot(api) == before, "a refused request changed the database"
    # The matrix covered what it should: every write that needs more than a member.
    assert len(calls) - len(MEMBER_WRITES) >= 10
    # And the victim's own tokens still work: nothing was revoked along the way.
    assert api.get(f"/jobs/{victim.job}", victim.member).status_code == 200
    assert api.get(f"/enterprises/{victim.enterprise}/tokens", victim.admin).status_code == 200
