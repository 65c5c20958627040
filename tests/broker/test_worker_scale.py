"""The worker at scale, on the local adapter (SQLite and PostgreSQL): a job its scheduler
forgot becomes `lost` after the grace period with its hold released, and an operator
resolves it; one job's failure while polling touches that job only; a stage-out that
hangs or fails holds no transaction (a submit completes meanwhile) and undoes no
settlement; submitters run in parallel yet keep each enterprise's order."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import scheduler_adapters as sa_
from broker.app import create_app
from broker.db import session_scope
from broker.models import Cluster, Node, ValidationRun
from broker.services import collection, scheduling, validation
from broker.worker import PassStats

from .conftest import Api, make_settings, operator_token

SCRAPE = "scrape-token-for-the-tests-0123456789"
ENDED = {"completed", "failed", "cancelled", "rejected", "timeout", "node_fail", "lost"}


@pytest.fixture
def quick_loss(db_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(db_url, tmp_path, lost_grace_s=0.5, metrics_token=SCRAPE)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def _sched_root(api: Api) -> Path:
    cfg = api.client.app.state.settings.load_clusters()[0]  # type: ignore[attr-defined]
    return Path(cfg.options["root_dir"])


def test_a_job_its_scheduler_forgot_is_lost_its_hold_released_then_resolved(
    quick_loss: Api,
) -> None:
    api = quick_loss
    ent, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 30", time_limit_minutes=5).json()
    running = api.drive_until(job["id"], {"running"}, timeout_s=30)
    held = api.get(f"/enterprises/{ent['id']}/balance", member).json()["held_pfh"]
    assert held > 0
    # Its records deleted from the scheduler (as `scontrol`/`sacctmgr` purges would):
    sched_dir = _sched_root(api) / "jobs" / running["scheduler_job_id"]
    shutil.rmtree(sched_dir)
    api.client.app.state.worker.run_once()  # type: ignore[attr-defined]
    first = api.get(f"/jobs/{job['id']}", member).json()
    assert first["state"] == "running"  # unseen once: not lost yet (the grace period)
    time.sleep(0.6)
    lost = api.drive_until(job["id"], ENDED, timeout_s=10)
    assert lost["state"] == "lost", lost
    assert "neither the controller nor the accounting" in lost["reason"]
    balance = api.get(f"/enterprises/{ent['id']}/balance", member).json()
    assert balance["held_pfh"] == 0 and balance["charged_pfh"] == 0
    assert lost["charge_pfh"] is None and lost["settled_at"] is None
    # The alert metric counts it.
    metrics = api.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE}"}).text
    assert 'broker_jobs{state="lost"} 1.0' in metrics
    # Only an operator resolves it, once; a member cannot.
    body = {"charge_elapsed_s": 20, "memo": "node logs show 20 s of work"}
    assert api.post(f"/jobs/{job['id']}/resolve", member, json=body).status_code == 403
    r = api.post(f"/jobs/{job['id']}/resolve", json=body)
    assert r.status_code == 200, r.text
    resolved = r.json()
    assert resolved["charge_pfh"] > 0 and resolved["settled_at"] is not None
    assert "resolved by an operator: charged 20 s from evidence" in resolved["reason"]
    again = api.post(f"/jobs/{job['id']}/resolve", json={"memo": "close"})
    assert again.status_code == 409, again.text
    entries = api.get(f"/enterprises/{ent['id']}/ledger?job_id={job['id']}").json()
    assert sorted(e["kind"] for e in entries) == ["CHARGE", "HOLD", "RELEASE"]


def test_a_lost_job_closed_uncharged(quick_loss: Api) -> None:
    api = quick_loss
    ent, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 30").json()
    running = api.drive_until(job["id"], {"running"}, timeout_s=30)
    shutil.rmtree(_sched_root(api) / "jobs" / running["scheduler_job_id"])
    api.client.app.state.worker.run_once()  # type: ignore[attr-defined]
    time.sleep(0.6)
    assert api.drive_until(job["id"], ENDED, timeout_s=10)["state"] == "lost"
    r = api.post(f"/jobs/{job['id']}/resolve", json={"memo": "no evidence of any work"})
    assert r.status_code == 200 and r.json()["charge_pfh"] == 0, r.text
    assert api.get(f"/enterprises/{ent['id']}/balance", member).json()["held_pfh"] == 0


def test_a_resolution_cannot_charge_past_what_the_enterprise_has_left(quick_loss: Api) -> None:
    api = quick_loss
    ent, member, project = api.tenant(grant_pfh=0.00006)  # one hold of 0.00005
    job = api.submit(project["id"], member, script="sleep 30", time_limit_minutes=60).json()
    running = api.drive_until(job["id"], {"running"}, timeout_s=30)
    shutil.rmtree(_sched_root(api) / "jobs" / running["scheduler_job_id"])
    api.client.app.state.worker.run_once()  # type: ignore[attr-defined]
    time.sleep(0.6)
    assert api.drive_until(job["id"], ENDED, timeout_s=10)["state"] == "lost"
    # Its released hold is spent on another job meanwhile.
    other = api.submit(project["id"], member, script="sleep 30", time_limit_minutes=60)
    assert other.status_code == 202, other.text
    body = {"charge_elapsed_s": 3000, "memo": "the node's logs"}
    r = api.post(f"/jobs/{job['id']}/resolve", json=body)
    assert r.status_code == 409 and "below zero" in r.json()["detail"], r.text
    assert api.get(f"/jobs/{job['id']}", member).json()["settled_at"] is None
    api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 1})
    assert api.post(f"/jobs/{job['id']}/resolve", json=body).status_code == 200
    api.post(f"/jobs/{other.json()['id']}/cancel", member)


def test_a_job_seen_again_within_the_grace_period_is_not_lost(quick_loss: Api) -> None:
    api = quick_loss
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 2").json()
    running = api.drive_until(job["id"], {"running"}, timeout_s=30)
    sched_dir = _sched_root(api) / "jobs" / running["scheduler_job_id"]
    hidden = sched_dir.with_name("hidden")
    sched_dir.rename(hidden)  # the scheduler does not answer for it once...
    api.client.app.state.worker.run_once()  # type: ignore[attr-defined]
    hidden.rename(sched_dir)  # ...then knows it again
    time.sleep(0.6)
    assert api.drive_until(job["id"], ENDED, timeout_s=30)["state"] == "completed"


def test_one_jobs_failure_while_polling_touches_that_job_only(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, member, project = api.tenant()
    bad = api.submit(project["id"], member, script="true").json()
    good = api.submit(project["id"], member, script="true").json()
    real = scheduling.apply_info

    def flaky(session: Any, job: Any, info: Any, now: Any, **kw: Any) -> bool:
        if str(job.id) == bad["id"] and info.state.terminal:
            raise RuntimeError("boom")
        return real(session, job, info, now, **kw)

    monkeypatch.setattr(scheduling, "apply_info", flaky)
    assert api.drive_until(good["id"], ENDED, timeout_s=30)["state"] == "completed"
    assert api.get(f"/jobs/{bad['id']}", member).json()["state"] in ("pending", "running")
    monkeypatch.setattr(scheduling, "apply_info", real)
    assert api.drive_until(bad["id"], ENDED, timeout_s=30)["state"] == "completed"


@pytest.mark.parametrize("how", ["hangs", "fails"])
def test_a_stage_out_that_hangs_or_fails_holds_no_transaction(
    api: Api, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    _, member, project = api.tenant()
    first = api.submit(project["id"], member, script="echo a", outputs=[]).json()
    second = api.submit(project["id"], member, script="echo b").json()
    started = threading.Event()
    release = threading.Event()
    real = collection.fetch

    def slow(plan: Any, **kw: Any) -> Any:
        started.set()
        if how == "fails":
            raise OSError("the mover's storage is gone")
        release.wait(20)
        return real(plan, **kw)

    monkeypatch.setattr(collection, "fetch", slow)
    worker = api.client.app.state.worker  # type: ignore[attr-defined]
    for _ in range(40):  # submit, run, settle (the stage-out is queued at settlement)
        if api.get(f"/jobs/{first['id']}", member).json()["state"] in ENDED:
            break
        worker.run_once()
        time.sleep(0.1)
    settled = api.get(f"/jobs/{first['id']}", member).json()
    assert settled["state"] == "completed" and settled["settled_at"] is not None
    passing = threading.Thread(target=worker.run_once)
    passing.start()
    assert started.wait(20)
    t0 = time.monotonic()
    r = api.submit(project["id"], member, script="echo during the stage-out")
    took = time.monotonic() - t0
    release.set()
    passing.join(30)
    assert r.status_code == 202 and took < 5, (r.status_code, took)
    after = api.get(f"/jobs/{first['id']}", member).json()
    assert after["charge_pfh"] == settled["charge_pfh"] and after["state"] == "completed"
    assert api.drive_until(second["id"], ENDED, timeout_s=30)["state"] == "completed"


@pytest.mark.parametrize("width", [1, 4])
def test_submitters_take_jobs_in_acceptance_order(db_url: str, tmp_path: Path, width: int) -> None:
    settings = make_settings(db_url, tmp_path, submit_concurrency=width)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        tenants = [api.tenant() for _ in range(2)]
        accepted = [
            (member, api.submit(project["id"], member, script="true").json()["id"])
            for _ in range(6)
            for _, member, project in tenants
        ]
        app.state.worker.submit_due(PassStats())
        sched = [int(api.get(f"/jobs/{j}", m).json()["scheduler_job_id"]) for m, j in accepted]
    if width == 1:
        assert sched == sorted(sched)  # strictly in acceptance order
    else:  # a job overtakes at most the width - 1 submitted beside it
        for i, sid in enumerate(sched):
            assert sum(1 for later in sched[i + 1 :] if later < sid) <= width - 1, sched


def test_one_jobs_failure_in_a_batched_round_touches_that_job_only(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs are decided and recorded a round at a time; a job whose decision raises or
    whose submission fails unexpectedly rolls back only itself: the others of its
    round are submitted and recorded, and it is retried on the next pass."""
    settings = make_settings(db_url, tmp_path, submit_concurrency=2)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        _, member, project = api.tenant()
        ids = [api.submit(project["id"], member, script="true").json()["id"] for _ in range(8)]
        bad_decision, bad_call = ids[2], ids[5]
        real_begin = scheduling.begin_submission

        def begin(session: Any, job: Any, *a: Any, **kw: Any) -> Any:
            if str(job.id) == bad_decision:
                raise RuntimeError("decision blew up")
            return real_begin(session, job, *a, **kw)

        adapter = app.state.adapters.get("local")
        real_submit = adapter.submit

        def submit(spec: Any) -> str:
            if spec.broker_job_id == bad_call:
                raise RuntimeError("adapter blew up")
            return real_submit(spec)

        monkeypatch.setattr(scheduling, "begin_submission", begin)
        monkeypatch.setattr(adapter, "submit", submit)
        stats = PassStats()
        app.state.worker.submit_due(stats)
        states = {j: api.get(f"/jobs/{j}", member).json() for j in ids}
        assert stats.submitted == 6, stats
        assert len(stats.errors) == 2 and any("decision blew up" in e for e in stats.errors)
        for j, job in states.items():
            if j in (bad_decision, bad_call):
                assert job["state"] == "accepted" and job["scheduler_job_id"] is None
            else:
                assert job["state"] in ("pending", "running", "completed"), job
                assert job["scheduler_job_id"]
        # Next pass, both succeed (the failed call's job is looked for by its tag first).
        monkeypatch.setattr(scheduling, "begin_submission", real_begin)
        monkeypatch.setattr(adapter, "submit", real_submit)
        app.state.worker.submit_due(PassStats())
        for j in (bad_decision, bad_call):
            assert api.get(f"/jobs/{j}", member).json()["scheduler_job_id"]


def test_a_quiet_cluster_is_polled_less_and_a_cancel_is_seen_at_once(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(db_url, tmp_path, worker_interval_s=0.05, poll_max_interval_s=0.4)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        _, member, project = api.tenant()
        job = api.submit(project["id"], member, script="sleep 60").json()
        api.drive_until(job["id"], {"running"}, timeout_s=30)
        worker = app.state.worker
        adapter = app.state.adapters.get("local")
        calls: list[float] = []
        real = adapter.status
        monkeypatch.setattr(adapter, "status", lambda ids: calls.append(1) or real(ids))
        worker.poll_backoff = True
        t0 = time.monotonic()
        passes = 0
        while time.monotonic() - t0 < 2.0:
            worker.run_once()
            passes += 1
            time.sleep(0.05)
        # Unchanged: gaps of 0.1, 0.2, 0.4, 0.4... instead of a status call every pass.
        assert passes >= 15 and len(calls) <= 9, (passes, len(calls))
        api.post(f"/jobs/{job['id']}/cancel", member)
        for _ in range(40):  # the cancel is pushed, then its cluster polled at once
            worker.run_once()
            if api.get(f"/jobs/{job['id']}", member).json()["state"] == "cancelled":
                break
            time.sleep(0.05)
        assert api.get(f"/jobs/{job['id']}", member).json()["state"] == "cancelled"


def test_one_status_call_per_cluster_serves_its_jobs_and_its_validation_jobs(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass asks each cluster once, for its live jobs and its node-validation jobs
    together (there used to be a second squeue for the validation jobs), and a
    validation job that ended is judged from that answer."""
    app = api.client.app
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 60").json()
    running = api.drive_until(job["id"], {"running"}, timeout_s=30)
    app.state.worker.refresh_clusters()  # type: ignore[attr-defined]
    with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
        node = s.scalars(select(Node).join(Cluster).where(Cluster.name == "local")).first()
        assert node is not None
        s.add(
            ValidationRun(
                node_id=node.id, cluster="local", partition="local", campaign="c",
                scheduler_job_id="validation-7",
            )
        )  # fmt: skip
    adapter = app.state.adapters.get("local")  # type: ignore[attr-defined]
    real = adapter.status
    asked: list[list[str]] = []

    def status(ids: list[str]) -> dict[str, sa_.JobInfo]:
        asked.append(list(ids))
        found = real([i for i in ids if i != "validation-7"])
        found["validation-7"] = sa_.JobInfo(job_id="validation-7", state=sa_.JobState.COMPLETED)
        return found

    judged: list[str] = []
    monkeypatch.setattr(adapter, "status", status)
    monkeypatch.setattr(
        validation, "ingest", lambda s, pool, settings, run, info, now: judged.append(info.job_id)
    )
    app.state.worker.poll(PassStats())  # type: ignore[attr-defined]
    assert asked == [[running["scheduler_job_id"], "validation-7"]]
    assert judged == ["validation-7"]
    api.post(f"/jobs/{job['id']}/cancel", member)
