"""The dashboard in headless Chromium: log in, read the charts, act, filter, refuse tenants."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from broker.db import session_scope
from broker.models import Role
from broker.schemas.jobs import JobCreate
from broker.services import jobs, tokens
from broker.services.principal import Principal

from .conftest import LiveServer, login, shot

pytestmark = pytest.mark.browser


def _chart_drawn(page: Any, name: str) -> int:
    """Paths with geometry inside the chart's SVG, as laid out by the browser."""
    return int(
        page.evaluate(
            """(name) => {
                const svg = document.querySelector(`figure[data-chart="${name}"] svg`);
                if (!svg) return 0;
                const box = svg.getBoundingClientRect();
                if (box.width < 100 || box.height < 50) return 0;
                return [...svg.querySelectorAll("path, rect")].filter((el) => {
                    const b = el.getBBox(); return b.width > 0 && b.height > 0;
                }).length;
            }""",
            name,
        )
    )


def test_member_and_admin_tokens_cannot_log_in(page: Any, live_server: LiveServer) -> None:
    page.goto("/ops")
    assert "/ops/login" in page.url
    shot(page, "login")
    for token in (live_server.data.member_token, live_server.data.admin_token):
        login(page, token)
        assert page.get_by_test_id("login-error").inner_text().startswith("Only operator tokens")
        page.goto("/ops/jobs")
        assert "/ops/login" in page.url
    login(page, "hcb_not-a-token")
    assert "Unknown or revoked" in page.get_by_test_id("login-error").inner_text()


def test_overview_draws_its_charts(page: Any, live_server: LiveServer) -> None:
    login(page, live_server.data.operator_token)
    page.wait_for_url(re.compile(r"/ops$"))
    # 0.12 + 0.06 + 0.03 PFlop·h, in the unit that suits the amount
    assert "210 TFlop·h" in page.get_by_test_id("kpi-granted").inner_text()
    for chart in ("quota", "states", "burning"):
        assert _chart_drawn(page, chart) >= 3, chart
    shot(page, "overview")
    page.click("form.logout button")
    page.wait_for_url(re.compile(r"/ops/login"))
    page.goto("/ops")
    assert "/ops/login" in page.url


def test_approve_a_project(page: Any, live_server: LiveServer) -> None:
    login(page, live_server.data.operator_token)
    before = int(page.get_by_test_id("pending-badge").inner_text())
    page.goto("/ops/projects")
    shot(page, "projects")
    draft = live_server.data.drafts["Borealis Bio"]
    page.click(f"tr[data-project='{draft}'] button")
    assert "approved" in page.locator(".flash").inner_text()
    assert page.locator(f"tr[data-project='{draft}']").count() == 0
    assert int(page.get_by_test_id("pending-badge").inner_text()) == before - 1


def test_grant_moves_the_burn_down(page: Any, live_server: LiveServer) -> None:
    login(page, live_server.data.operator_token)
    page.goto("/ops/enterprises")
    shot(page, "enterprises")
    page.click("text=Cirrus CFD")
    burn = page.get_by_test_id("burn-down")
    available = float(burn.get_attribute("data-available-pfh"))
    assert _chart_drawn(page, "burn-down") >= 3
    line = page.locator("figure[data-chart='burn-down'] path.line").nth(1).get_attribute("d")
    shot(page, "enterprise-before-grant")
    form = page.get_by_test_id("quota-form")
    form.locator("select[name=action]").select_option("grant")
    form.locator("input[name=amount_pfh]").fill("0.05")
    form.locator("input[name=memo]").fill("PoC extension")
    form.locator("button[type=submit]").click()
    assert "Granted 0.05" in page.locator(".flash").inner_text()
    after = float(page.get_by_test_id("burn-down").get_attribute("data-available-pfh"))
    assert after == pytest.approx(available + 0.05, abs=1e-3)
    moved = page.locator("figure[data-chart='burn-down'] path.line").nth(1).get_attribute("d")
    assert moved != line
    shot(page, "enterprise")
    page.click("text=Ledger")
    assert "PoC extension" in page.get_by_test_id("ledger").inner_text()
    shot(page, "ledger")


def test_filter_jobs_and_live_refresh(page: Any, live_server: LiveServer) -> None:
    login(page, live_server.data.operator_token)
    page.goto("/ops/jobs")
    page.select_option("select[name=enterprise]", label="Borealis Bio")  # submits itself
    page.wait_for_url(re.compile(r"enterprise="))
    page.select_option("select[name=state]", "completed")
    page.click("[data-testid=job-filters] button[type=submit]")
    page.wait_for_url(re.compile(r"state=completed"))
    rows = page.locator("#job-rows tr[data-job]")
    assert rows.count() > 0
    for text in rows.all_inner_texts():
        assert "Borealis Bio" in text and "completed" in text
    shot(page, "jobs-filtered")

    page.goto("/ops/jobs")
    data = live_server.data
    with session_scope(live_server.app.state.session_factory) as s:
        who = tokens.authenticate(s, data.member_token)
        assert who.role is Role.MEMBER
        req = JobCreate(name="live-refresh-probe", script="true", nodes=1, time_limit_minutes=5)
        project = data.projects["plasma-sim"]
        new = jobs.submit(
            s, Principal(who.token_id, who.name, who.role, who.enterprise_id), project, req,
            idempotency_key=None, max_script_bytes=65536,
        ).job.id  # fmt: skip
    page.wait_for_selector(f"tr[data-job='{new}']", timeout=5000)
    shot(page, "jobs")


def test_clusters_and_nodes(page: Any, live_server: LiveServer) -> None:
    login(page, live_server.data.operator_token)
    page.goto("/ops/clusters")
    shot(page, "clusters")
    page.click("text=alpha")
    assert "GEMM 1.40" in page.get_by_test_id("drained").inner_text()
    assert page.locator("[data-testid=heatmap] .cell.v-degraded").count() >= 1
    for chart in ("busy", "billed-rate", "node-rates", "rate-history"):
        assert _chart_drawn(page, chart) >= 2, chart
    lines = page.locator("figure[data-chart='rate-history'] g.series path.line")
    assert lines.count() == 6  # a rate line per measured node: a01-a05, a07
    runs = page.get_by_test_id("validation-runs")
    assert "failed" in runs.locator("tr[data-node='a03']").inner_text()
    assert "below 1.8e+03" in runs.locator("tr[data-node='a03']").inner_text()
    assert "passed" in runs.locator("tr[data-node='a01']").inner_text()
    shot(page, "cluster")
    page.click("[data-testid=heatmap] >> text=a03")
    history = page.get_by_test_id("node-history")
    assert history.locator("tbody tr").count() == 3
    assert history.locator(".run-failed").count() == 1
    shot(page, "cluster-node-history")


def test_enterprise_statement(page: Any, live_server: LiveServer) -> None:
    login(page, live_server.data.operator_token)
    page.goto(f"/ops/enterprises/{live_server.data.enterprises['Acme Fusion']}")
    section = page.get_by_test_id("statement")
    rows = section.locator("[data-testid=statement-projects] tbody tr[data-project]")
    assert sorted(rows.all_inner_texts())[0].startswith("plasma-sim")
    assert rows.count() == 2
    assert float(page.get_by_test_id("statement-net").inner_text()) > 0
    section.scroll_into_view_if_needed()
    shot(page, "enterprise-statement")
    with page.expect_download() as info:
        page.get_by_test_id("statement-csv").click()
    body = Path(info.value.path()).read_text()
    assert body.startswith("month,project,job_id") and ",TOTAL," in body
    section.locator("input[name=month]").fill("2020-01")
    section.locator("button[type=submit]").click()
    assert "No charges in 2020-01" in page.get_by_test_id("statement").inner_text()
