"""Amounts at center scale: 1e9 PFlop·h exact through the API, ledger, balance and
statement on SQLite and PostgreSQL; refusals (422 naming the field) beyond the limits;
sums past 64 bits (a center's totals, an enterprise's history) exact."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.app import create_app
from broker.config import Settings
from broker.db import session_scope
from broker.models import ChargeLine, Job, JobStatus, LedgerEntry, Project
from broker.services import billing, ledger, reports, statements
from broker.services.principal import SYSTEM
from broker.units import (
    CEILING_UNITS,
    CHARGE,
    HOLD,
    INT64_MAX,
    MAX_UNITS,
    UNITS_PER_PFH,
    units_to_pfh,
    work_units,
)

from .conftest import Api, make_settings, operator_token

# 0.012345 TFLOP/s = 12,345 MFLOP/s: a node-second is 12.345 GFLOP, so holds and
# charge lines have sub-GFLOP remainders to round.
RATE_MFLOPS = 12_345


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path, default_rate_tflops=RATE_MFLOPS / 1e6)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def _factory(api: Api) -> Any:
    return api.client.app.state.session_factory  # type: ignore[attr-defined]


def _refused(r: Any, field: str) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert field in body["detail"], body


def test_a_grant_of_1e9_pfh_reads_back_exactly(api: Api) -> None:
    ent = api.enterprise()
    r = api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 1e9, "memo": "a year"})
    assert r.status_code == 201, r.text
    assert r.json()["amount_pfh"] == 1e9 and r.json()["kind"] == "GRANT"

    bal = api.get(f"/enterprises/{ent['id']}/balance").json()
    assert bal == {
        "enterprise_id": ent["id"],
        "granted_pfh": 1e9,
        "held_pfh": 0,
        "charged_pfh": 0,
        "available_pfh": 1e9,
    }
    rows = api.get(f"/enterprises/{ent['id']}/ledger").json()
    assert [(e["kind"], e["amount_pfh"]) for e in rows] == [("GRANT", 1e9)]
    with session_scope(_factory(api)) as s:
        view = ledger.balance(s, SYSTEM, uuid.UUID(ent["id"]))
        assert view.granted_units == MAX_UNITS == 10**9 * UNITS_PER_PFH
        assert ledger.check_invariants(s, uuid.UUID(ent["id"])) == []
    month = rows[0]["created_at"][:7]
    doc = api.get(f"/enterprises/{ent['id']}/usage?month={month}").json()
    assert doc["net_units"] == 0 and doc["charged_pfh"] == 0.0

    # An adjustment of 1e9 more: the ceiling (2e9) exactly, still exact.
    r = api.post(f"/enterprises/{ent['id']}/adjustments", json={"amount_pfh": 1e9, "memo": "x"})
    assert r.status_code == 201, r.text
    assert r.json()["amount_pfh"] == 1e9
    bal = api.get(f"/enterprises/{ent['id']}/balance").json()
    assert bal["granted_pfh"] == bal["available_pfh"] == 2e9
    # Past the ceiling: refused, naming the field; nothing changed.
    for path, body in [
        ("grants", {"amount_pfh": 1e-9}),
        ("adjustments", {"amount_pfh": 1.0, "memo": "x"}),
    ]:
        r = api.post(f"/enterprises/{ent['id']}/{path}", json=body)
        _refused(r, "amount_pfh")
        assert "ceiling" in r.json()["detail"]
    # Down is fine, and up again to the ceiling.
    for amount in (-1e9, -1e9, 1e9, 1e9):
        r = api.post(
            f"/enterprises/{ent['id']}/adjustments", json={"amount_pfh": amount, "memo": "x"}
        )
        assert r.status_code == 201, r.text
    with session_scope(_factory(api)) as s:
        view = ledger.balance(s, SYSTEM, uuid.UUID(ent["id"]))
        assert view.granted_units == CEILING_UNITS
        assert ledger.check_invariants(s, uuid.UUID(ent["id"])) == []
    assert api.get(f"/enterprises/{ent['id']}/balance").json()["granted_pfh"] == 2e9


@pytest.mark.parametrize("amount", [1e9 + 1, 1.0000001e9, 1e12, -1e12, 1e300])
def test_amounts_above_the_limit_are_422_naming_the_field(api: Api, amount: float) -> None:
    ent = api.enterprise(grant_pfh=10)
    project = api.project(ent["id"])
    if amount > 0:
        _refused(
            api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": amount}), "amount_pfh"
        )
    _refused(
        api.post(f"/enterprises/{ent['id']}/adjustments", json={"amount_pfh": amount, "memo": "x"}),
        "amount_pfh",
    )
    r = api.client.put(
        f"/api/v1/projects/{project['id']}/allocation",
        headers=api.h(),
        json={"allocation_pfh": amount},
    )
    _refused(r, "allocation_pfh")
    assert api.get(f"/enterprises/{ent['id']}/balance").json()["granted_pfh"] == 10


@pytest.mark.parametrize("amount", [1e-15, 5e-324, 1e-12, 1.3e-10, -1e-15])
def test_amounts_that_round_to_zero_are_422_naming_the_field(api: Api, amount: float) -> None:
    ent = api.enterprise(grant_pfh=10)
    project = api.project(ent["id"])
    if amount > 0:
        r = api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": amount})
        _refused(r, "amount_pfh")
        assert "rounds to zero" in r.json()["detail"]
        r = api.client.put(
            f"/api/v1/projects/{project['id']}/allocation",
            headers=api.h(),
            json={"allocation_pfh": amount},
        )
        _refused(r, "allocation_pfh")
    r = api.post(f"/enterprises/{ent['id']}/adjustments", json={"amount_pfh": amount, "memo": "x"})
    _refused(r, "amount_pfh")
    rows = api.get(f"/enterprises/{ent['id']}/ledger").json()
    assert [e["kind"] for e in rows] == ["GRANT"]
    # The smallest amount that does not: one unit (1 GFLOP).
    r = api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 1.4e-10})
    assert r.status_code == 201, r.text
    with session_scope(_factory(api)) as s:
        assert (
            ledger.balance(s, SYSTEM, uuid.UUID(ent["id"])).granted_units == 10 * UNITS_PER_PFH + 1
        )


def test_an_allocation_of_1e9_pfh(api: Api) -> None:
    ent = api.enterprise(grant_pfh=1e9)
    project = api.project(ent["id"])
    r = api.client.put(
        f"/api/v1/projects/{project['id']}/allocation",
        headers=api.h(),
        json={"allocation_pfh": 1e9},
    )
    assert r.status_code == 200, r.text
    bal = api.get(f"/projects/{project['id']}/balance").json()
    assert bal["allocation_pfh"] == bal["remaining_pfh"] == 1e9
    # The same limit when the project is created with its allocation.
    body = {"enterprise_id": ent["id"], "name": "big", "allocation_pfh": 1e9}
    assert api.post("/projects", json=body).status_code == 201
    _refused(
        api.post("/projects", json={**body, "name": "too-big", "allocation_pfh": 2e9}),
        "allocation_pfh",
    )


def test_a_job_after_a_1e9_grant_is_charged_exactly_its_lines(api: Api) -> None:
    ent, member, project = api.tenant(grant_pfh=1e9)
    job = api.submit(project["id"], member, script="sleep 1", nodes=2, time_limit_minutes=7).json()
    # The hold: 2 nodes × 12,345 MFLOP/s × 420 s = 10,369,800 MFLOP, up to 10,370 GFLOP.
    hold = work_units(RATE_MFLOPS, 420, 2, rounding=HOLD)
    assert hold == 10_370
    assert job["hold_pfh"] == units_to_pfh(hold)
    bal = api.get(f"/enterprises/{ent['id']}/balance", member).json()
    assert bal["held_pfh"] == units_to_pfh(hold)
    assert bal["available_pfh"] == units_to_pfh(10**9 * UNITS_PER_PFH - hold)

    done = api.drive_until(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", (done["reason"], done.get("exit_code"))
    with session_scope(_factory(api)) as s:
        lines = s.scalars(select(ChargeLine).where(ChargeLine.job_id == uuid.UUID(job["id"]))).all()
        assert len(lines) >= 2
        for ln in lines:  # each line: rate × seconds, half-even to whole GFLOP
            assert ln.rate_mflops == RATE_MFLOPS
            assert ln.units == work_units(ln.rate_mflops, ln.node_seconds, rounding=CHARGE)
        charge = sum(ln.units for ln in lines)
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None and row.charge_units == charge <= row.hold_units == hold
        entry = ledger.charge_entry(s, row.id)
        assert entry is not None and entry.amount_units == charge
        assert billing.ledger_charged(s, uuid.UUID(ent["id"])) == charge
        assert ledger.check_invariants(s, uuid.UUID(ent["id"])) == []
    assert charge == 2 * work_units(RATE_MFLOPS, done["elapsed_s"], rounding=CHARGE)
    assert done["charge_pfh"] == units_to_pfh(charge)

    bal = api.get(f"/enterprises/{ent['id']}/balance", member).json()
    assert bal["granted_pfh"] == 1e9 and bal["held_pfh"] == 0
    assert bal["charged_pfh"] == units_to_pfh(charge)
    assert bal["available_pfh"] == units_to_pfh(10**9 * UNITS_PER_PFH - charge)
    rows = api.get(f"/enterprises/{ent['id']}/ledger?job_id={job['id']}", member).json()
    kinds = {e["kind"]: e["amount_pfh"] for e in rows}
    assert kinds == {
        "HOLD": units_to_pfh(hold),
        "RELEASE": units_to_pfh(hold),
        "CHARGE": units_to_pfh(charge),
    }
    month = rows[0]["created_at"][:7]
    doc = api.get(f"/enterprises/{ent['id']}/usage?month={month}", member).json()
    assert doc["net_units"] == charge
    assert doc["charged_pfh"] == doc["net_pfh"] == units_to_pfh(charge)
    (proj_doc,) = doc["projects"]
    (job_doc,) = proj_doc["jobs"]
    assert sum(ln["units"] for ln in job_doc["lines"]) == charge
    assert [ln["pfh"] for ln in job_doc["lines"]] == [
        units_to_pfh(ln["units"]) for ln in job_doc["lines"]
    ]


def test_sums_past_64_bits_stay_exact(api: Api) -> None:
    """Five enterprises at the ceiling: the center's total (3.6e19 units) is past int64;
    one enterprise's HOLDs over time add up past it too. Both sum exactly."""
    ids = []
    for _ in range(5):
        ent = api.enterprise(grant_pfh=1e9)
        r = api.post(f"/enterprises/{ent['id']}/adjustments", json={"amount_pfh": 1e9, "memo": "x"})
        assert r.status_code == 201, r.text
        ids.append(uuid.UUID(ent["id"]))
    assert 5 * CEILING_UNITS > INT64_MAX
    with session_scope(_factory(api)) as s:
        totals = reports.center_totals(s)
        assert totals.granted_units >= 5 * CEILING_UNITS  # and other tests' enterprises
        assert totals.granted_units == sum(
            ledger.balance(s, SYSTEM, e).granted_units
            for e in s.scalars(select(LedgerEntry.enterprise_id).distinct())
        )

    # One enterprise holds its whole budget three times over (each hold settled for 0):
    # its HOLD and RELEASE entries each add up to 3 × 7.2e18 units.
    ent_id = ids[0]
    project = api.project(str(ent_id))
    with session_scope(_factory(api)) as s:
        proj = s.get(Project, uuid.UUID(project["id"]))
        assert proj is not None
        for _ in range(3):
            job = Job(
                enterprise_id=ent_id,
                project_id=proj.id,
                name="big",
                script="true",
                nodes=1,
                time_limit_minutes=1,
                cluster="local",
                partition="default",
                hold_units=CEILING_UNITS,
                state=JobStatus.ACCEPTED,
            )
            s.add(job)
            s.flush()
            ledger.hold(s, job, proj)
            job.state = JobStatus.CANCELLED
            assert ledger.settle(s, job, 0)
        s.flush()
        assert ledger.check_invariants(s, ent_id) == []
        since, until = reports.period_bounds("2000-01")[0], reports.period_bounds("2100-01")[0]
        summary = reports.ledger_summary(s, ent_id, since=since, until=until)
        assert summary["HOLD"] == summary["RELEASE"] == 3 * CEILING_UNITS
        assert summary["GRANT"] == summary["ADJUST"] == MAX_UNITS
        view = ledger.balance(s, SYSTEM, ent_id)
        assert (view.granted_units, view.held_units, view.charged_units) == (CEILING_UNITS, 0, 0)
        assert statements.monthly_totals(s, "2026-01") == {}
