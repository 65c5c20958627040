"""Job arrays and dependencies on the live dev clusters: alpha (slurm-cli, one node) and
beta (slurmrestd, two nodes).

A 10-task array with ``%3`` completes on each, every task with its own index in
``SLURM_ARRAY_TASK_ID`` and ``BROKER_ARRAY_TASK_ID``, and the tasks' charges add up to
the job's, to the ledger's CHARGE, to its charge lines and to the month's statement;
cancelling one task leaves the others running; an afterok chain of three jobs across
alpha and beta runs in order; a failed parent makes the broker cancel its afterok child
that Slurm holds with ``--dependency`` (Slurm would keep it pending forever), and the
child's hold is released.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.db import session_scope
from broker.models import ChargeLine, Job, JobTask, LedgerEntry

from .conftest import Api, live_tenant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER = "tenantarray"
ACCOUNT = "e_slurm_arrays"
ENDED = {"completed", "failed", "cancelled", "rejected", "timeout", "node_fail"}
Live = tuple[Api, dict[str, Any], str, dict[str, Any], dict[str, dict[str, str]]]


@pytest.fixture(scope="module")
def live(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Live]:
    with live_tenant(
        slurm_clusters_file,
        tmp_path_factory.mktemp("arrays-live"),
        sqlite_template,
        name="Slurm Arrays",
        user=USER,
        account=ACCOUNT,
        grant_pfh=50,
    ) as t:
        yield t.api, t.enterprise, t.member, t.project, t.envs


def _slurm(env: dict[str, str], *argv: str) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.strip()}"
    return proc.stdout


def _tasks(api: Api, job_id: str, token: str) -> list[dict[str, Any]]:
    r = api.get(f"/jobs/{job_id}/tasks", token)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


@pytest.mark.parametrize("cluster", ["alpha", "beta"])
def test_a_ten_task_array_with_a_throttle_completes_and_its_charges_add_up(
    live: Live, cluster: str
) -> None:
    api, ent, member, project, _ = live
    script = (
        "#!/bin/bash\n"
        "#SBATCH --mail-type=NONE\n"  # an allowed directive, kept above the task wrapper
        'echo "task=$SLURM_ARRAY_TASK_ID broker=$BROKER_ARRAY_TASK_ID job=$BROKER_JOB_ID"\n'
        "sleep 1\n"
    )
    r = api.submit(
        project["id"], member, cluster=cluster, script=script, array="0-9%3", time_limit_minutes=2
    )
    assert r.status_code == 202, r.text
    job = r.json()
    done = api.drive_until(job["id"], ENDED, timeout_s=300)
    assert done["state"] == "completed", done
    tasks = _tasks(api, job["id"], member)
    assert [t["index"] for t in tasks] == list(range(10))
    assert all(t["state"] == "completed" and t["exit_code"] == 0 for t in tasks), tasks
    for t in tasks:
        out = api.get(f"/jobs/{job['id']}/output?task={t['index']}", member).text
        assert out == f"task={t['index']} broker={t['index']} job={job['id']}\n", out
        assert t["node_list"] and t["elapsed_s"] is not None
    with session_scope(api.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None and row.charge_units is not None and row.charge_units > 0
        shares = list(s.scalars(select(JobTask.charge_units).where(JobTask.job_id == row.id)))
        assert sum(x or 0 for x in shares) == row.charge_units
        assert sum(1 for x in shares if x) == 10  # every task ran, every task paid its share
        charge = s.scalar(
            select(LedgerEntry.amount_units).where(
                LedgerEntry.job_id == row.id, LedgerEntry.kind == "CHARGE"
            )
        )
        assert charge == row.charge_units
        lines = s.scalars(select(ChargeLine.units).where(ChargeLine.job_id == row.id))
        assert sum(lines) == row.charge_units
    month = done["ended_at"][:7]
    statement = api.get(f"/enterprises/{ent['id']}/usage?month={month}", member)
    assert statement.status_code == 200, statement.text
    assert job["id"] in statement.text


def test_cancelling_one_task_leaves_the_others_running(live: Live) -> None:
    api, _, member, project, _ = live
    script = "#!/bin/bash\nsleep 12\n"
    job = api.submit(
        project["id"], member, cluster="beta", script=script, array="0-1", time_limit_minutes=2
    ).json()
    deadline = time.monotonic() + 90
    while True:
        api.drive_until(job["id"], {"running"} | ENDED, timeout_s=90)
        states = [t["state"] for t in _tasks(api, job["id"], member)]
        if states == ["running", "running"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == ["running", "running"], states
    assert api.post(f"/jobs/{job['id']}/tasks/1/cancel", member).status_code == 202
    for _ in range(2):  # push the cancel, then see its effect
        api.client.app.state.worker.run_once()  # type: ignore[attr-defined]
        time.sleep(2)
    mid = {t["index"]: t["state"] for t in _tasks(api, job["id"], member)}
    assert mid[0] == "running", mid
    done = api.drive_until(job["id"], ENDED, timeout_s=90)
    tasks = _tasks(api, job["id"], member)
    assert [t["state"] for t in tasks] == ["completed", "cancelled"], tasks
    assert tasks[1]["reason"] == "cancelled by the user"
    assert tasks[0]["elapsed_s"] >= 12 > tasks[1]["elapsed_s"]
    assert done["state"] == "cancelled"


def test_an_afterok_chain_across_alpha_and_beta_runs_in_order(live: Live) -> None:
    api, _, member, project, _ = live
    stamp = "sleep 2; date +%s.%N\n"
    first = api.submit(project["id"], member, cluster="alpha", script=stamp).json()
    second = api.submit(
        project["id"],
        member,
        cluster="beta",
        script=stamp,
        depends_on=[{"job_id": first["id"], "condition": "afterok"}],
    ).json()
    third = api.submit(
        project["id"],
        member,
        cluster="alpha",
        script=stamp,
        depends_on=[{"job_id": second["id"], "condition": "afterok"}],
    ).json()
    api.client.app.state.worker.run_once()  # type: ignore[attr-defined]
    held = api.get(f"/jobs/{second['id']}", member).json()
    assert held["state"] == "pending" and held["scheduler_job_id"] is None, held
    assert held["reason"].startswith("dependency: waiting for"), held
    done = api.drive_until(third["id"], ENDED, timeout_s=180)
    assert done["state"] == "completed", done
    stamps = []
    for j in (first, second, third):
        got = api.get(f"/jobs/{j['id']}", member).json()
        assert got["state"] == "completed", got
        stamps.append(float(api.get(f"/jobs/{j['id']}/output", member).text))
    assert stamps == sorted(stamps), stamps


def test_a_failed_parent_cancels_its_afterok_child_held_by_slurm(live: Live) -> None:
    api, ent, member, project, envs = live
    parent = api.submit(project["id"], member, cluster="alpha", script="sleep 4; exit 1").json()
    api.drive_until(parent["id"], {"pending", "running"} | ENDED, timeout_s=60)
    child = api.submit(
        project["id"],
        member,
        cluster="alpha",
        script="echo never",
        depends_on=[{"job_id": parent["id"], "condition": "afterok"}],
    ).json()
    queued = api.drive_until(child["id"], {"pending", "running"} | ENDED, timeout_s=60)
    # Same cluster, parent in Slurm: Slurm holds the child (--dependency).
    assert queued["scheduler_job_id"] is not None, (queued["state"], queued["reason"])
    if queued["state"] == "pending":
        parent_sched = api.get(f"/jobs/{parent['id']}", member).json()["scheduler_job_id"]
        shown = _slurm(envs["alpha"], "squeue", "-h", "-j", queued["scheduler_job_id"], "-o", "%E")
        assert f"afterok:{parent_sched}" in shown, shown
    done = api.drive_until(child["id"], ENDED, timeout_s=120)
    assert api.get(f"/jobs/{parent['id']}", member).json()["state"] == "failed"
    assert done["state"] == "cancelled", done
    assert done["reason"].startswith("dependency can no longer be met"), done["reason"]
    assert done["charge_pfh"] == 0
    entries = api.get(f"/enterprises/{ent['id']}/ledger?job_id={child['id']}").json()
    assert sorted(e["kind"] for e in entries) == ["CHARGE", "HOLD", "RELEASE"], entries
