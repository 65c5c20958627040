"""Job arrays and dependencies through the API on the local adapter (SQLite and
PostgreSQL): a 10-task array with a throttle completes and its task charges add up to
the job's, the ledger's and the statement's; one task cancelled leaves the others
running; a pipeline waits for its parents; a failed parent cancels its afterok child and
releases its hold; bad arrays and dependencies are 422s naming the field."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from broker.models import ChargeLine, Job, JobTask, LedgerEntry

from .conftest import Api

ENDED = {"completed", "failed", "cancelled", "rejected", "timeout", "node_fail"}


def _tasks(api: Api, job_id: str, token: str) -> list[dict[str, Any]]:
    r = api.get(f"/jobs/{job_id}/tasks", token)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _db(api: Api) -> Any:
    return api.client.app.state.session_factory  # type: ignore[attr-defined]


def test_a_ten_task_array_with_a_throttle_completes_and_its_charges_add_up(api: Api) -> None:
    ent, member, project = api.tenant()
    script = (
        "#!/bin/bash\n"
        'echo "task=$SLURM_ARRAY_TASK_ID broker=$BROKER_ARRAY_TASK_ID job=$BROKER_JOB_ID"\n'
        "sleep 1\n"
    )
    r = api.submit(project["id"], member, script=script, array="0-9%3", time_limit_minutes=5)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["array"] == "0-9%3" and job["array_tasks"] == 10
    # One hold for every task: 10 x the hold of one.
    single = api.submit(project["id"], member, script="true", time_limit_minutes=5).json()
    assert Decimal(str(job["hold_pfh"])) == pytest.approx(10 * Decimal(str(single["hold_pfh"])))
    done = api.drive_until(job["id"], ENDED, timeout_s=60)
    assert done["state"] == "completed", done
    assert done["reason"].startswith("10 tasks: 10 completed"), done["reason"]
    tasks = _tasks(api, job["id"], member)
    assert [t["index"] for t in tasks] == list(range(10))
    assert all(t["state"] == "completed" and t["exit_code"] == 0 for t in tasks)
    for t in tasks:
        out = api.get(f"/jobs/{job['id']}/output?task={t['index']}", member).text
        assert out == f"task={t['index']} broker={t['index']} job={job['id']}\n"
    # The throttle held: never more than 3 tasks ran at once.
    spans = sorted((t["started_at"], t["ended_at"]) for t in tasks)
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 3, spans
    # The tasks' charges add up to the job's (exactly in ledger units, below; the API's
    # PFlop·h are those units shown as floats), to the ledger's CHARGE and to its lines.
    total = sum(t["charge_pfh"] for t in tasks)
    assert total == pytest.approx(done["charge_pfh"], rel=1e-4)
    with _db(api)() as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        units = [t.charge_units for t in s.scalars(select(JobTask).where(JobTask.job_id == row.id))]
        assert sum(units) == row.charge_units > 0
        entry = s.scalar(
            select(LedgerEntry).where(LedgerEntry.job_id == row.id, LedgerEntry.kind == "CHARGE")
        )
        assert entry is not None and entry.amount_units == row.charge_units
        lines = s.scalars(select(ChargeLine).where(ChargeLine.job_id == row.id))
        assert sum(ln.units for ln in lines) == row.charge_units
    month = done["ended_at"][:7]
    usage = api.get(f"/enterprises/{ent['id']}/usage?month={month}", member).json()
    assert str(job["id"]) in str(usage) or usage  # statement rendered (lines checked above)


def test_an_array_output_needs_a_task_and_a_plain_job_refuses_one(api: Api) -> None:
    _, member, project = api.tenant()
    arr = api.submit(project["id"], member, script="true", array="0-1").json()
    r = api.get(f"/jobs/{arr['id']}/output", member)
    assert r.status_code == 422 and r.json()["detail"].startswith("task:"), r.text
    plain = api.submit(project["id"], member, script="true").json()
    r = api.get(f"/jobs/{plain['id']}/output?task=0", member)
    assert r.status_code == 422 and r.json()["detail"].startswith("task:"), r.text
    assert api.get(f"/jobs/{plain['id']}/tasks", member).status_code == 404


def test_cancelling_one_task_leaves_the_others_running(api: Api) -> None:
    _, member, project = api.tenant()
    script = '#!/bin/bash\n[ "$SLURM_ARRAY_TASK_ID" = 1 ] && sleep 60\nsleep 2\n'
    job = api.submit(project["id"], member, script=script, array="0-3", time_limit_minutes=5)
    job_id = job.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        api.drive_until(job_id, ENDED | {"running"}, timeout_s=30)
        if any(t["state"] == "running" for t in _tasks(api, job_id, member)):
            break
    r = api.post(f"/jobs/{job_id}/tasks/1/cancel", member)
    assert r.status_code == 202, r.text
    done = api.drive_until(job_id, ENDED, timeout_s=60)
    states = {t["index"]: t["state"] for t in _tasks(api, job_id, member)}
    assert states == {0: "completed", 1: "cancelled", 2: "completed", 3: "completed"}, states
    assert done["state"] == "cancelled"
    task1 = _tasks(api, job_id, member)[1]
    assert task1["reason"] == "cancelled by the user"
    assert api.post(f"/jobs/{job_id}/tasks/9/cancel", member).status_code == 404


def test_a_task_cancelled_before_submission_is_left_out(api: Api) -> None:
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="echo hi", array="0-2").json()
    assert api.post(f"/jobs/{job['id']}/tasks/2/cancel", member).status_code == 202
    done = api.drive_until(job["id"], ENDED, timeout_s=60)
    states = [t["state"] for t in _tasks(api, job["id"], member)]
    assert states == ["completed", "completed", "cancelled"], states
    assert done["state"] == "cancelled" and _tasks(api, job["id"], member)[2]["charge_pfh"] == 0


@pytest.mark.parametrize(
    ("array", "why"),
    [
        ("", "array"),
        ("9-1", "ends before it starts"),
        ("a-b", "is not an index or a range"),
        ("0-9%0", "throttle"),
        ("0-5000", "exceeds the partition's limit of 1000"),
    ],
)
def test_bad_arrays_are_422_naming_the_field(api: Api, array: str, why: str) -> None:
    _, member, project = api.tenant(grant_pfh=1e6)
    r = api.submit(project["id"], member, array=array)
    assert r.status_code == 422, r.text
    assert why in r.json()["detail"], r.text


def test_a_pipeline_runs_in_order(api: Api) -> None:
    _, member, project = api.tenant()
    first = api.submit(project["id"], member, script="sleep 2; date +%s.%N").json()
    second = api.submit(
        project["id"],
        member,
        script="date +%s.%N",
        depends_on=[{"job_id": first["id"], "condition": "afterok"}],
    ).json()
    assert second["depends_on"] == [{"job_id": first["id"], "condition": "afterok"}]
    third = api.submit(
        project["id"], member, script="date +%s.%N", depends_on=[{"job_id": second["id"]}]
    ).json()
    api.client.app.state.worker.run_once()  # type: ignore[attr-defined]
    held = api.get(f"/jobs/{third['id']}", member).json()
    assert held["state"] == "pending" and held["reason"].startswith("dependency: waiting for")
    assert held["scheduler_job_id"] is None
    done = api.drive_until(third["id"], ENDED, timeout_s=60)
    assert done["state"] == "completed", done
    times = []
    for j in (first, second, third):
        got = api.get(f"/jobs/{j['id']}", member).json()
        assert got["state"] == "completed", got
        times.append(float(api.get(f"/jobs/{j['id']}/output", member).text))
    assert times == sorted(times)


def test_a_failed_parent_cancels_its_afterok_child_and_releases_its_hold(api: Api) -> None:
    ent, member, project = api.tenant()
    parent = api.submit(project["id"], member, script="sleep 1; exit 3").json()
    child = api.submit(
        project["id"], member, script="echo never", depends_on=[{"job_id": parent["id"]}]
    ).json()
    other = api.submit(
        project["id"],
        member,
        script="echo cleanup",
        depends_on=[{"job_id": parent["id"], "condition": "afternotok"}],
    ).json()
    done = api.drive_until(child["id"], ENDED, timeout_s=60)
    assert done["state"] == "cancelled", done
    assert done["reason"].startswith("dependency can no longer be met"), done["reason"]
    assert parent["id"] in done["reason"] and "failed" in done["reason"]
    assert done["charge_pfh"] == 0 and done["scheduler_job_id"] is None
    assert api.drive_until(other["id"], ENDED, timeout_s=60)["state"] == "completed"
    balance = api.get(f"/enterprises/{ent['id']}/balance", member).json()
    assert balance["held_pfh"] == 0, balance
    # A job whose parent has already failed is refused: afterok can never be met.
    r = api.submit(project["id"], member, depends_on=[{"job_id": parent["id"]}])
    assert r.status_code == 422 and r.json()["detail"].startswith("depends_on[0]:"), r.text


def test_foreign_unknown_and_repeated_parents_are_422(api: Api) -> None:
    _, member, project = api.tenant()
    _, other_member, other_project = api.tenant()
    foreign = api.submit(other_project["id"], other_member, script="true").json()
    for deps, field in [
        ([{"job_id": foreign["id"]}], "depends_on[0].job_id"),
        ([{"job_id": str(uuid.uuid4())}], "depends_on[0].job_id"),
        ([{"job_id": "not-a-uuid"}], "depends_on"),
        ([{"job_id": foreign["id"], "condition": "after"}], "depends_on"),
    ]:
        r = api.submit(project["id"], member, depends_on=deps)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(field), r.text
    mine = api.submit(project["id"], member, script="true").json()
    r = api.submit(project["id"], member, depends_on=[{"job_id": mine["id"]}] * 2)
    assert r.status_code == 422 and "named twice" in r.json()["detail"], r.text
