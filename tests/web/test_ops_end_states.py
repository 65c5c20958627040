"""The dashboard's job list filters by the new end states, colours them, shows the reason."""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime, timedelta

import scheduler_adapters as sa_
from broker.db import session_scope
from broker.models import Job, JobStatus
from broker.services import scheduling
from broker.web.charts import STATE_COLORS

from .conftest import Ops


def test_jobs_page_filters_new_states_and_shows_why(ops: Ops) -> None:
    _, member, proj = ops.api.tenant()
    job = ops.api.submit(proj["id"], member).json()
    now = datetime.now(UTC)
    with session_scope(ops.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        scheduling.mark_submitted(row, "s-1", now)
        info = sa_.JobInfo(
            job_id="s-1",
            state=sa_.JobState.OUT_OF_MEMORY,
            native_state="OUT_OF_MEMORY",
            reason="OutOfMemory",
            nodes=("local1",),
            start_time=now - timedelta(seconds=30),
            end_time=now,
            elapsed_s=30,
        )
        scheduling.apply_info(s, row, info, now)
    page = ops.client.get("/ops/jobs?state=out_of_memory")
    assert page.status_code == 200 and page.text.count("data-job=") == 1
    assert 'class="state state-out_of_memory"' in page.text
    assert html.escape("out of memory: used more than its limit [OUT_OF_MEMORY]") in page.text
    assert ops.client.get("/ops/jobs?state=node_fail").text.count("data-job=") == 0
    options = ops.client.get("/ops/jobs").text
    for state in ("node_fail", "boot_fail", "preempted", "out_of_memory"):
        assert f"<option>{state}</option>" in options
    assert set(STATE_COLORS) == {s.value for s in JobStatus}
    css = ops.client.get("/ops/static/ops.css").text
    assert all(f".state-{s}" in css for s in ("node_fail", "boot_fail", "preempted"))


def test_the_overview_lists_lost_jobs_for_an_operator(ops: Ops) -> None:
    assert "Lost jobs to resolve" not in ops.client.get("/ops/").text
    _, member, proj = ops.api.tenant()
    job = ops.api.submit(proj["id"], member).json()
    now = datetime.now(UTC)
    with session_scope(ops.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        scheduling.mark_submitted(row, "s-9", now)
        row.unseen_since = now - timedelta(hours=1)
        assert scheduling.mark_unseen(s, row, now, grace_s=600)
    page = ops.client.get("/ops/").text
    assert "Lost jobs to resolve" in page and 'href="/ops/jobs?state=lost"' in page
    listed = ops.client.get("/ops/jobs?state=lost").text
    assert listed.count("data-job=") == 1 and 'class="state state-lost"' in listed
