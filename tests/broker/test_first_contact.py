"""What a team member meets first over HTTP: `/`, offline docs, errors that say where
and which field, strict JSON types, names in any script (issue 21)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.db import session_scope
from broker.models import Job
from broker.schemas.common import NAME_RULE
from broker.services import names
from broker.services.scheduling import spec_for

from .conftest import Api, make_settings, operator_token


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Any:
    app = create_app(make_settings(db_url, tmp_path), run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def test_root_points_to_the_docs(api: Api) -> None:
    links = api.client.get("/").json()
    assert links["docs"] == "/docs" and links["openapi"] == "/openapi.json"
    assert links["api"] == "/api/v1" and links["dashboard"] == "/ops"
    browser = api.client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303 and browser.headers["location"] == "/docs"


def test_docs_and_redoc_load_only_local_assets(api: Api) -> None:
    for page in ("/docs", "/redoc"):
        html = api.client.get(page).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert urls, page
        assert all(u.startswith("/") for u in urls), (page, urls)  # no CDN
        for url in urls:
            assert api.client.get(url).status_code == 200, url
    assert "cdn" not in api.client.get("/docs").text


def test_malformed_json_says_where_it_broke(api: Api) -> None:
    body = b'{\n  "name": "Acme",\n  "period" "month"\n}'
    r = api.client.post(
        "/api/v1/enterprises",
        content=body,
        headers={**api.h(), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert (
        r.json()["detail"] == "body: malformed JSON at line 3, column 12: Expecting ':' delimiter"
    )
    r = api.client.post(
        "/api/v1/enterprises",
        content=b"[1, 2",
        headers={**api.h(), "Content-Type": "application/json"},
    )
    assert "line 1, column 6" in r.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nodes", True),
        ("nodes", "2"),
        ("time_limit_minutes", "5"),
        ("ntasks", False),
        ("memory_mb", "1024"),
        ("gpus_per_node", True),
    ],
)
def test_job_numbers_are_json_numbers(api: Api, field: str, value: Any) -> None:
    _, member, proj = api.tenant()
    r = api.submit(proj["id"], member, **{field: value})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"{field}: Input should be a valid integer"


def test_other_numbers_and_booleans_are_strict(api: Api) -> None:
    ent = api.enterprise(grant_pfh=1)
    cases = [
        ("/enterprises", {"name": "Strict Co", "carry_over": "yes"}, "carry_over", "boolean"),
        ("/enterprises", {"name": "Strict Co", "carry_over": 1}, "carry_over", "boolean"),
        ("/enterprises", {"name": "S", "capacity_cap_pflops": "1"}, "capacity_cap_pflops", "number"),  # noqa: E501
        (f"/enterprises/{ent['id']}/grants", {"amount_pfh": "5"}, "amount_pfh", "number"),
        (f"/enterprises/{ent['id']}/grants", {"amount_pfh": True}, "amount_pfh", "number"),
    ]  # fmt: skip
    for path, body, field, kind in cases:
        r = api.post(path, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"].startswith(f"{field}: Input should be a valid {kind}"), r.text
    # A JSON integer where a number is asked for is still a number.
    assert api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 2}).status_code == 201


def test_names_in_any_script_with_ascii_slugs(api: Api) -> None:
    for name, account in [
        ("Société Générale", "e_societe_generale"),
        ("量子化学研究所", "e_liang_zi_hua_xue_yan_jiu_suo"),
        ("Øresund Energi A/S", "e_oresund_energi_a_s"),
    ]:
        r = api.post("/enterprises", json={"name": name})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name
        assert r.json()["slurm_account"] == account[:26]
        assert re.fullmatch(r"[a-z0-9_]+", r.json()["posix_user"])
    for bad in ("\u202eevil", "-dash first", "tab\there", " "):
        r = api.post("/enterprises", json={"name": bad})
        assert r.status_code == 422, (bad, r.text)
        detail = r.json()["detail"]
        assert detail.startswith("name: ") and "^" not in detail and "[" not in detail, detail
    r = api.post("/enterprises", json={"name": "\u202eevil"})
    assert r.json()["detail"] == f"name: {NAME_RULE}"  # the rule, no regex, no "Value error"


def test_job_names_in_any_script_reach_slurm_as_a_slug(api: Api) -> None:
    _, member, proj = api.tenant()
    r = api.submit(proj["id"], member, name="расчёт-плазмы №2")
    assert r.status_code == 202, r.text
    job = api.get(f"/jobs/{r.json()['id']}", member).json()
    assert job["name"] == "расчёт-плазмы №2"
    plain = api.submit(proj["id"], member, name="dft.run-7").json()
    app: Any = api.client.app
    with session_scope(app.state.session_factory) as s:
        spec = spec_for(s.get(Job, uuid.UUID(job["id"])), "hcb_x")
        assert spec.name == "raschet_plazmy_no2"
        assert spec_for(s.get(Job, uuid.UUID(plain["id"])), "hcb_x").name == "dft.run-7"
    assert re.fullmatch(r"[a-z0-9_]+", names.slurm_job_name("ジョブ"))
    assert names.slurm_job_name("†††") == "job"
    assert api.submit(proj["id"], member, name="\x00null").status_code == 422


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"time_limit_minutes": 60 * 24 * 30}, "time_limit_minutes"),
        ({"memory_mb": 10**9}, "memory_mb"),
        ({"gpus_per_node": 8}, "gpus_per_node"),
        ({"nodes": 5000}, "nodes"),
        ({"cpus_per_task": 4000}, "cpus_per_task"),
        ({"ntasks": 1000}, "ntasks"),
        ({"constraints": ["nvlink"]}, "constraints"),
    ],
)
def test_a_capacity_refusal_names_its_cause(api: Api, spec: dict[str, Any], field: str) -> None:
    _, member, proj = api.tenant()
    r = api.submit(proj["id"], member, **spec)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}: no cluster can run this job"), r.text
