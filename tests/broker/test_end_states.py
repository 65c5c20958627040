"""End states that tell the truth: each state, its reason, its native state and its charge.

The scheduler's answers are ``JobInfo`` records as the adapters make them (see
tests/scheduler_adapters/test_slurm_end_states.py for the Slurm JSON behind them),
applied with ``scheduling.apply_info`` under both ``BROKER_CHARGE_CENTER_FAILURES``
policies; the local adapter's lost runner goes through the worker end to end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import scheduler_adapters as sa_
from broker.app import create_app
from broker.db import session_scope
from broker.models import ChargeLine, EntryKind, Job, JobStatus, LedgerEntry
from broker.services import ledger, scheduling
from broker.services.billing import CenterFailurePolicy

from .conftest import Api, make_settings, operator_token

TIME_LIMIT = 30  # minutes: the hold is 1 node x 1800 s at the partition's rate
START = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
POLICIES: list[CenterFailurePolicy] = ["none", "full"]
CENTER = {sa_.JobState.NODE_FAIL, sa_.JobState.BOOT_FAIL, sa_.JobState.PREEMPTED}


def _factory(api: Api) -> Any:
    return api.client.app.state.session_factory  # type: ignore[attr-defined]


def _submitted_job(api: Api, **spec: Any) -> tuple[dict[str, Any], str]:
    """A job the scheduler took (id ``s-<n>``), without running anything."""
    ent, member, project = api.tenant()
    job = api.submit(project["id"], member, time_limit_minutes=TIME_LIMIT, **spec).json()
    with session_scope(_factory(api)) as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        scheduling.mark_submitted(row, f"s-{uuid.uuid4().hex[:6]}", START)
        row.node_list = ["local1"]
    return ent, job["id"]


def _apply(
    api: Api, job_id: str, info: sa_.JobInfo, policy: CenterFailurePolicy = "none"
) -> dict[str, Any]:
    with session_scope(_factory(api)) as s:
        row = s.get(Job, uuid.UUID(job_id))
        assert row is not None
        scheduling.apply_info(s, row, info, START + timedelta(hours=1), center_failures=policy)
    got: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
    return got


def _ended(state: sa_.JobState, elapsed: int = 600, **kw: Any) -> sa_.JobInfo:
    return sa_.JobInfo(
        job_id="x",
        state=state,
        native_state=kw.pop("native_state", state.name),
        nodes=kw.pop("nodes", ("local1",)),
        start_time=START,
        end_time=START + timedelta(seconds=elapsed),
        elapsed_s=elapsed,
        **kw,
    )


def _ledger(api: Api, ent: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = api.get(
        f"/enterprises/{ent['id']}/ledger?job_id={job_id}"
    ).json()
    return entries


END_STATES = [s for s in sa_.JobState if s.terminal]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("state", END_STATES, ids=lambda s: s.value)
def test_each_end_state_is_visible_with_a_reason_and_charged_by_policy(
    api: Api, state: sa_.JobState, policy: CenterFailurePolicy
) -> None:
    ent, job_id = _submitted_job(api)
    code = {sa_.JobState.COMPLETED: 0, sa_.JobState.FAILED: 3}.get(state)
    done = _apply(api, job_id, _ended(state, exit_code=code), policy)
    assert done["state"] == state.value  # node_fail is node_fail, not "failed"
    assert done["native_state"] == state.name
    assert done["reason"].strip(), done
    assert done["elapsed_s"] == 600
    kinds = sorted(e["kind"] for e in _ledger(api, ent, job_id))
    assert kinds == ["CHARGE", "HOLD", "RELEASE"]  # settled once, hold released
    charge = next(e for e in _ledger(api, ent, job_id) if e["kind"] == "CHARGE")
    if state in CENTER and policy == "none":
        assert done["charge_pfh"] == 0
        assert "not charged: the center's failure" in done["reason"]
        assert "not charged" in charge["memo"]
    else:
        # 600 s of the 1800 the hold covers, at the same (partition) rate.
        assert done["charge_pfh"] == pytest.approx(done["hold_pfh"] / 3, rel=1e-6)
        assert "not charged" not in done["reason"]
    with session_scope(_factory(api)) as s:
        assert ledger.check_invariants(s, uuid.UUID(ent["id"])) == []


@pytest.mark.parametrize(
    ("info", "spec", "expected"),
    [
        (_ended(sa_.JobState.COMPLETED, exit_code=0), {}, "exit code 0"),
        (_ended(sa_.JobState.FAILED, exit_code=3, reason="NonZeroExitCode"), {}, "exit code 3"),
        (
            _ended(sa_.JobState.FAILED, exit_code=137, signal=9, reason="JobLaunchFailure"),
            {},
            "killed by signal 9 (SIGKILL) (JobLaunchFailure)",
        ),
        (_ended(sa_.JobState.TIMEOUT, reason="TimeLimit"), {}, "time limit of 30 minutes reached"),
        (
            _ended(sa_.JobState.TIMEOUT, native_state="DEADLINE"),
            {},
            "deadline reached before the job could finish",
        ),
        (
            _ended(sa_.JobState.CANCELLED, reason="Resources"),
            {},
            "cancelled by the scheduler or an administrator (Resources)",
        ),
        (
            _ended(sa_.JobState.OUT_OF_MEMORY, reason="OutOfMemory"),
            {"memory_mb": 2048},
            "out of memory: used more than the 2048 MB per node it asked for",
        ),
        (
            _ended(sa_.JobState.NODE_FAIL, reason="NodeDown"),
            {},
            "node failure on local1 while the job ran (NodeDown); not charged: the center's"
            " failure",
        ),
        (
            _ended(sa_.JobState.PREEMPTED),
            {},
            "preempted by the scheduler for another job, not requeued; not charged: the"
            " center's failure",
        ),
        (
            _ended(sa_.JobState.BOOT_FAIL),
            {},
            "the job's nodes failed to boot; not charged: the center's failure",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_reasons_say_why_in_words_with_the_schedulers_reason(
    api: Api, info: sa_.JobInfo, spec: dict[str, Any], expected: str
) -> None:
    _, job_id = _submitted_job(api, **spec)
    assert _apply(api, job_id, info)["reason"] == expected


def test_cancelled_by_the_user_says_so(api: Api) -> None:
    _, job_id = _submitted_job(api)
    member_cancel = api.post(f"/jobs/{job_id}/cancel")
    assert member_cancel.status_code == 202, member_cancel.text
    done = _apply(api, job_id, _ended(sa_.JobState.CANCELLED, elapsed=5))
    assert done["state"] == "cancelled" and done["reason"] == "cancelled by the user"


def test_every_terminal_job_state_is_a_public_state_with_a_reason(api: Api) -> None:
    """The broker's own ends too: rejected, cancelled before submission, lost."""
    assert {s.value for s in JobStatus if s.terminal} == {
        "rejected",
        "lost",
        "completed",
        "failed",
        "cancelled",
        "timeout",
        "node_fail",
        "boot_fail",
        "preempted",
        "out_of_memory",
    }
    _, member, project = api.tenant()
    job = api.submit(project["id"], member).json()
    api.post(f"/jobs/{job['id']}/cancel", member)
    assert api.get(f"/jobs/{job['id']}").json()["reason"] == "cancelled before submission"


def test_a_requeued_job_is_followed_and_charged_once_for_what_ran(api: Api) -> None:
    ent, job_id = _submitted_job(api)
    running = _apply(api, job_id, _ended(sa_.JobState.RUNNING, elapsed=100))
    assert running["state"] == "running"
    # Its node fails and Slurm requeues it: pending again, same id, nothing settled.
    requeued = sa_.JobInfo(
        job_id="x",
        state=sa_.JobState.PENDING,
        native_state="PENDING+REQUEUED",
        reason="BeginTime",
        restart_count=1,
    )
    pending = _apply(api, job_id, requeued)
    assert pending["state"] == "pending" and pending["charge_pfh"] is None
    assert pending["reason"] == "requeued (1 time), waiting to run again: BeginTime"
    assert pending["native_state"] == "PENDING+REQUEUED"
    assert [e["kind"] for e in _ledger(api, ent, job_id)] == ["HOLD"]
    # It ends after two earlier runs: one the node failure ended, one `scontrol requeue`.
    runs = (
        _ended(sa_.JobState.NODE_FAIL, elapsed=100, nodes=("local2",)),
        sa_.JobInfo(
            job_id="x",
            state=sa_.JobState.PENDING,
            native_state="REQUEUED",
            nodes=("local1",),
            start_time=START + timedelta(minutes=5),
            end_time=START + timedelta(minutes=5, seconds=30),
            elapsed_s=30,
        ),
    )
    final = _ended(sa_.JobState.COMPLETED, elapsed=200, exit_code=0, restart_count=2, runs=runs)
    final = sa_.JobInfo(**{**_asdict(final), "start_time": START + timedelta(minutes=10)})
    done = _apply(api, job_id, final)
    assert done["state"] == "completed"
    assert done["reason"] == "exit code 0; requeued 2 times"
    assert done["elapsed_s"] == 330  # every run's time
    assert done["started_at"].startswith("2026-11-10T09:00:00")  # the first run's start
    # Charged once: the requeued run and the last one, not the node failure's (default).
    entries = _ledger(api, ent, job_id)
    assert sorted(e["kind"] for e in entries) == ["CHARGE", "HOLD", "RELEASE"]
    assert done["charge_pfh"] == pytest.approx(done["hold_pfh"] * 230 / 1800, rel=1e-6)
    memo = next(e["memo"] for e in entries if e["kind"] == "CHARGE")
    assert memo.startswith("run 1 (node_fail): 1 node(s) x 100 s, not charged")
    assert "run 2 (requeued): 1 node(s) x 30 s" in memo
    assert "run 3 (completed): 1 node(s) x 200 s" in memo
    with session_scope(_factory(api)) as s:
        lines = s.scalars(select(ChargeLine).where(ChargeLine.job_id == uuid.UUID(job_id)))
        # local1's two charged runs are one line; local2 (the failed node) has none.
        assert {(ln.node, ln.node_seconds) for ln in lines} == {("local1", 230)}
    # A later poll of the same end charges nothing more.
    _apply(api, job_id, final)
    assert len(_ledger(api, ent, job_id)) == 3


def test_with_policy_full_every_run_is_charged(api: Api) -> None:
    _, job_id = _submitted_job(api)
    runs = (_ended(sa_.JobState.PREEMPTED, elapsed=100),)
    final = _ended(sa_.JobState.COMPLETED, elapsed=200, exit_code=0, restart_count=1, runs=runs)
    done = _apply(api, job_id, final, "full")
    assert done["charge_pfh"] == pytest.approx(done["hold_pfh"] * 300 / 1800, rel=1e-6)


def test_requeues_never_cost_more_than_the_hold(api: Api) -> None:
    _, job_id = _submitted_job(api)
    runs = tuple(
        sa_.JobInfo(
            job_id="x",
            state=sa_.JobState.PENDING,
            native_state="REQUEUED",
            nodes=("local1",),
            start_time=START + timedelta(hours=i),
            elapsed_s=1700,
        )
        for i in range(3)
    )
    final = _ended(sa_.JobState.COMPLETED, elapsed=1700, exit_code=0, restart_count=3, runs=runs)
    done = _apply(api, job_id, final)
    assert done["charge_pfh"] == done["hold_pfh"]


def _asdict(info: sa_.JobInfo) -> dict[str, Any]:
    return {f: getattr(info, f) for f in sa_.JobInfo.__dataclass_fields__}


@pytest.mark.parametrize("state", ["node_fail", "boot_fail", "preempted", "out_of_memory"])
def test_the_api_filters_by_the_new_states(api: Api, state: str) -> None:
    _, job_id = _submitted_job(api)
    _apply(api, job_id, _ended(sa_.JobState(state)))
    listed = api.get(f"/jobs?state={state}").json()["items"]
    assert [j["id"] for j in listed] == [job_id]
    assert listed[0]["native_state"] == state.upper()
    assert api.get("/jobs?state=failed").json()["items"] == []


def test_events_and_webhook_payloads_carry_the_end_state(api: Api) -> None:
    _, job_id = _submitted_job(api)
    _apply(api, job_id, _ended(sa_.JobState.NODE_FAIL, reason="NodeDown"))
    with session_scope(_factory(api)) as s:
        from broker.models import JobEvent

        last = s.scalars(
            select(JobEvent).where(JobEvent.job_id == uuid.UUID(job_id)).order_by(JobEvent.id)
        ).all()[-1]
        assert (last.previous_state, last.state) == ("pending", "node_fail")
        assert last.payload["native_state"] == "NODE_FAIL"
        assert "NodeDown" in last.payload["reason"]


# -- through the worker: the local adapter's lost runner, both policies ------------------


def _lost_runner_job(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    ent, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 60", time_limit_minutes=5).json()
    running = api.drive_until(job["id"], {"running"})
    adapter = api.client.app.state.adapters.get("local")  # type: ignore[attr-defined]
    state_file = Path(adapter.jobs_dir) / running["scheduler_job_id"] / "state.json"
    deadline = time.monotonic() + 15
    while "pid" not in (state := json.loads(state_file.read_text())):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        time.sleep(1.1)  # a second of run time to charge
        os.kill(state["runner_pid"], signal.SIGKILL)
        done = api.drive_until(job["id"], {"node_fail", "failed", "completed"})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state["pid"], signal.SIGKILL)
    return ent, done


@pytest.mark.parametrize("policy", POLICIES)
def test_worker_settles_a_lost_local_runner_as_node_fail_by_the_policy(
    tmp_path: Path, db_url: str, policy: CenterFailurePolicy
) -> None:
    settings = make_settings(db_url, tmp_path, charge_center_failures=policy)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        ent, done = _lost_runner_job(api)
        assert done["state"] == "node_fail" and done["native_state"] == "lost"
        assert "runner" in done["reason"]
        if policy == "none":
            assert done["charge_pfh"] == 0 and "not charged" in done["reason"]
        else:
            assert done["charge_pfh"] > 0 and "not charged" not in done["reason"]
        with session_scope(app.state.session_factory) as s:
            charges = s.scalars(
                select(LedgerEntry).where(
                    LedgerEntry.job_id == uuid.UUID(done["id"]),
                    LedgerEntry.kind == EntryKind.CHARGE,
                )
            ).all()
            assert len(charges) == 1
            assert ledger.check_invariants(s, uuid.UUID(ent["id"])) == []
