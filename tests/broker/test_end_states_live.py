"""End states on the live dev cluster alpha (slurm-cli): a node set down under a running
job, and a job requeued while it runs.

alpha has one node, shared with every other live test: the node is set down only while
our own job runs on it (jobs are exclusive, so no other job is there), and resumed in a
``finally`` whatever happens. A requeued job waits about two minutes before it may run
again (Slurm sets its begin time); the test moves that to a few seconds from now.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .conftest import Api, live_tenant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER = "tenantend"
ACCOUNT = "e_slurm_end"
ALPHA_RATE_TFLOPS = 0.05  # the dev clusters' rated speed of alpha's node
Live = tuple[Api, dict[str, Any], str, dict[str, Any], dict[str, str]]


@pytest.fixture(scope="module")
def live(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Live]:
    with live_tenant(
        slurm_clusters_file,
        tmp_path_factory.mktemp("end-live"),
        sqlite_template,
        name="Slurm End States",
        user=USER,
        account=ACCOUNT,
        only="alpha",
    ) as t:
        yield t.api, t.enterprise, t.member, t.project, t.envs["alpha"]


def _slurm(env: dict[str, str], *argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def _running(api: Api, job_id: str, env: dict[str, str]) -> dict[str, Any]:
    """The broker sees the job running, and Slurm has run it for a couple of seconds."""
    job = api.drive_until(job_id, {"running"}, timeout_s=60)
    deadline = time.monotonic() + 30
    while _slurm(env, "squeue", "-h", "-j", job["scheduler_job_id"], "-o", "%T").strip() != (
        "RUNNING"
    ):
        assert time.monotonic() < deadline, "the job never ran"
        time.sleep(0.5)
    time.sleep(2)
    return job


def _ledger(api: Api, ent: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = api.get(
        f"/enterprises/{ent['id']}/ledger?job_id={job_id}"
    ).json()
    return entries


def test_a_node_set_down_under_a_running_job_ends_it_node_fail_not_charged(live: Live) -> None:
    api, ent, member, project, env = live
    job = api.submit(
        project["id"], member, cluster="alpha", script="sleep 120", time_limit_minutes=5
    ).json()
    running = _running(api, job["id"], env)
    sched_id, nodes = running["scheduler_job_id"], running["node_list"]
    assert nodes, running
    # Slurm requeues a requeueable job whose node fails (JobRequeue=1 on alpha): this one
    # may not be, as at a site that forbids requeues, so the failure ends it.
    _slurm(env, "scontrol", "update", f"jobid={sched_id}", "requeue=0")
    try:
        for node in nodes:
            _slurm(env, "scontrol", "update", f"nodename={node}", "state=down", "reason=test")
        done = api.drive_until(
            job["id"], {"node_fail", "failed", "completed", "cancelled"}, timeout_s=60
        )
    finally:
        for node in nodes:
            # ReturnToService=2 may have brought it back already: then resume is refused.
            _slurm(env, "scontrol", "update", f"nodename={node}", "state=resume", check=False)
    assert done["state"] == "node_fail", done
    assert done["native_state"] == "NODE_FAIL"
    assert "node failure" in done["reason"] and "not charged" in done["reason"], done
    assert done["charge_pfh"] == 0 and done["elapsed_s"] >= 2
    kinds = sorted(e["kind"] for e in _ledger(api, ent, job["id"]))
    assert kinds == ["CHARGE", "HOLD", "RELEASE"]
    state = _slurm(env, "sinfo", "-h", "-n", nodes[0], "-o", "%T").strip()
    assert "down" not in state, state


def test_a_requeued_job_is_followed_and_charged_once_for_both_runs(live: Live) -> None:
    api, ent, member, project, env = live
    job = api.submit(
        project["id"], member, cluster="alpha", script="sleep 6", time_limit_minutes=5
    ).json()
    sched_id = _running(api, job["id"], env)["scheduler_job_id"]
    _slurm(env, "scontrol", "requeue", sched_id)
    deadline = time.monotonic() + 60
    while True:
        pending = api.drive_until(job["id"], {"pending", "completed"}, timeout_s=60)
        if "requeued" in pending["reason"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pending["state"] == "pending" and pending["charge_pfh"] is None, pending
    assert pending["reason"].startswith("requeued (1 time)"), pending
    assert [e["kind"] for e in _ledger(api, ent, job["id"])] == ["HOLD"]
    # Not "now": the node's slurmd revoked the first run's credential when it killed it,
    # and refuses (fails) a launch whose credential was made within that same second
    # ("Killing non-startable batch JobId=N: Job credential revoked"): the delay Slurm
    # itself sets after a requeue exists for that. A few seconds are enough.
    _slurm(env, "scontrol", "update", f"jobid={sched_id}", "starttime=now+3")
    done = api.drive_until(job["id"], {"completed", "failed", "cancelled"}, timeout_s=90)
    assert done["state"] == "completed", (done["state"], done["native_state"], done["reason"])
    assert done["reason"] == "exit code 0; requeued 1 time"
    runs = [
        line.split("|")
        for line in _slurm(
            env,
            "sacct",
            "-j",
            sched_id,
            "-X",
            "-n",
            "-P",
            "--duplicates",
            "-o",
            "State,ElapsedRaw,NNodes",
        ).split()
    ]
    assert [r[0] for r in runs] == ["REQUEUED", "COMPLETED"], runs
    seconds = sum(int(r[1]) * int(r[2]) for r in runs)
    assert int(runs[0][1]) >= 1 and done["elapsed_s"] == sum(int(r[1]) for r in runs)
    kinds = sorted(e["kind"] for e in _ledger(api, ent, job["id"]))
    assert kinds == ["CHARGE", "HOLD", "RELEASE"]  # charged once
    expected_pfh = ALPHA_RATE_TFLOPS * seconds / 3600 / 1000
    assert done["charge_pfh"] == pytest.approx(expected_pfh, rel=1e-9)


def test_a_suspended_job_is_charged_without_its_suspended_time(live: Live) -> None:
    # sacct's elapsed and the controller's run time leave out the time suspended, where
    # end - start counts it (alpha: `sleep 10` suspended 6 s: 10 vs 4).
    api, _, member, project, env = live
    job = api.submit(
        project["id"], member, cluster="alpha", script="sleep 12", time_limit_minutes=5
    ).json()
    sched_id = _running(api, job["id"], env)["scheduler_job_id"]
    _slurm(env, "scontrol", "suspend", sched_id)
    suspended = api.drive_until(job["id"], {"suspended"}, timeout_s=30)
    assert suspended["state"] == "suspended"
    time.sleep(8)
    _slurm(env, "scontrol", "resume", sched_id)
    done = api.drive_until(job["id"], {"completed", "failed"}, timeout_s=90)
    assert done["state"] == "completed", (done["state"], done["native_state"], done["reason"])
    wall = (
        datetime.fromisoformat(done["ended_at"]) - datetime.fromisoformat(done["started_at"])
    ).total_seconds()
    assert wall >= 12 and done["elapsed_s"] <= wall - 7, (wall, done["elapsed_s"])
    rate_mflops = ALPHA_RATE_TFLOPS * 1e6
    expected_pfh = rate_mflops * done["elapsed_s"] * len(done["node_list"]) / 3.6e12
    assert done["charge_pfh"] == pytest.approx(expected_pfh, rel=1e-3, abs=2e-9), done
