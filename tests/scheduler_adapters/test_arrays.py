"""Job arrays at the adapter level: Slurm's array syntax, and one array's records
(squeue and sacct, 22.05 and 25.11 shapes as the dev clusters print them) seen as one
job whose ``tasks`` are its tasks."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler_adapters import JobInfo, JobState, arrays
from scheduler_adapters.base import JobSpec
from scheduler_adapters.slurm.parse import parse_jobs
from scheduler_adapters.slurm.script import build_sbatch, check_dependency, wrap_array_task


@pytest.mark.parametrize(
    ("text", "indices", "throttle"),
    [
        ("0-3", (0, 1, 2, 3), None),
        ("1,3,5-7", (1, 3, 5, 6, 7), None),
        ("0-15:4", (0, 4, 8, 12), None),
        ("0-9%3", tuple(range(10)), 3),
        ("7", (7,), None),
        ("3,1,3", (1, 3), None),
    ],
)
def test_array_syntax(text: str, indices: tuple[int, ...], throttle: int | None) -> None:
    spec = arrays.parse(text)
    assert spec.indices == indices and spec.throttle == throttle
    assert arrays.parse(spec.slurm()) == spec  # its compact form reads back the same
    assert spec.width == min(len(indices), throttle or len(indices))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "names no task indices"),
        ("%3", "names no task indices"),
        ("5-1", "ends before it starts"),
        ("0-4:0", "step below 1"),
        ("a", "is not an index or a range"),
        ("1;2", "is not an index or a range"),
        ("0-9%0", "throttle"),
        ("0-9%x", "throttle"),
        ("0-99999999", "is not an index"),
    ],
)
def test_bad_array_syntax(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        arrays.parse(text)


def test_a_huge_range_is_refused_before_it_is_built() -> None:
    with pytest.raises(ValueError, match="more than 1000 tasks"):
        arrays.parse("0-4000000", max_tasks=1000)


def _num(n: int | None) -> dict[str, Any]:
    return {"set": n is not None, "infinite": False, "number": n or 0}


# squeue --json while array 1 ("0-4%2") runs: tasks 0 and 1 split off as jobs 2 and 3,
# the rest waits as one record under the array's own id.
SQUEUE_2205 = {
    "jobs": [
        {"job_id": 2, "array_job_id": 1, "array_task_id": 0, "array_task_string": "",
         "job_state": "RUNNING", "nodes": "n1", "start_time": 1796394989, "comment": "broker:t"},
        {"job_id": 3, "array_job_id": 1, "array_task_id": 1, "array_task_string": "",
         "job_state": "RUNNING", "nodes": "n2", "start_time": 1796394989, "comment": "broker:t"},
        {"job_id": 1, "array_job_id": 1, "array_task_id": None, "array_task_string": "2-4%2",
         "job_state": "PENDING", "state_reason": "JobArrayTaskLimit", "comment": "broker:t"},
        {"job_id": 9, "array_job_id": 0, "array_task_id": None, "array_task_string": "",
         "job_state": "RUNNING", "nodes": "n3", "start_time": 1796394989},
    ]
}  # fmt: skip
SQUEUE_2511 = {
    "jobs": [
        {"job_id": 2, "array_job_id": _num(1), "array_task_id": _num(0),
         "array_task_string": "", "job_state": ["RUNNING"], "nodes": "n1",
         "start_time": _num(1796394989), "comment": "broker:t"},
        {"job_id": 3, "array_job_id": _num(1), "array_task_id": _num(1),
         "array_task_string": "", "job_state": ["RUNNING"], "nodes": "n2",
         "start_time": _num(1796394989), "comment": "broker:t"},
        {"job_id": 1, "array_job_id": _num(1), "array_task_id": _num(None),
         "array_task_string": "2-4%2", "job_state": ["PENDING"],
         "state_reason": "JobArrayTaskLimit", "comment": "broker:t"},
        {"job_id": 9, "array_job_id": _num(0), "array_task_id": _num(None),
         "array_task_string": "", "job_state": ["RUNNING"], "nodes": "n3",
         "start_time": _num(1796394989)},
    ]
}  # fmt: skip


@pytest.mark.parametrize("doc", [SQUEUE_2205, SQUEUE_2511], ids=["22.05", "25.11"])
def test_a_running_array_is_one_job_with_its_tasks(doc: dict[str, Any]) -> None:
    jobs = parse_jobs(doc)
    assert set(jobs) == {"1", "9"}  # the array under its id; a plain job as before
    info = jobs["1"]
    assert info.state is JobState.RUNNING and info.tag == "t"
    assert [(t.job_id, t.array_task_id, t.state) for t in info.tasks] == [
        ("1_0", 0, JobState.RUNNING),
        ("1_1", 1, JobState.RUNNING),
        ("1_2", 2, JobState.PENDING),
        ("1_3", 3, JobState.PENDING),
        ("1_4", 4, JobState.PENDING),
    ]
    assert info.tasks[2].reason == "JobArrayTaskLimit"
    assert info.nodes == ("n1", "n2")
    assert jobs["9"].tasks == () and jobs["9"].array_task_id is None


def _sacct(task: int, job_id: int, state: str, code: int, new: bool) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "array": {
            "job_id": 1,
            "task_id": _num(task) if new else task,
            "task": "",
            "limits": {"max": {"running": {"tasks": 0}}},
        },
        "state": {"current": [state] if new else state, "reason": "None"},
        "exit_code": {"status": ["SUCCESS"], "return_code": _num(code) if new else code},
        "time": {"submission": 1796394980, "start": 1796394989, "end": 1796394992,
                 "elapsed": 3},
        "nodes": "n1",
        "comment": {"job": "broker:t"},
    }  # fmt: skip


@pytest.mark.parametrize("new", [False, True], ids=["22.05", "25.11"])
def test_an_ended_array_from_accounting(new: bool) -> None:
    doc = {
        "jobs": [
            _sacct(4, 1, "COMPLETED", 0, new),
            _sacct(0, 2, "COMPLETED", 0, new),
            _sacct(1, 3, "COMPLETED", 0, new),
            _sacct(2, 4, "COMPLETED", 0, new),
            _sacct(3, 5, "FAILED", 3, new),
        ]
    }
    info = parse_jobs(doc)["1"]
    assert [t.array_task_id for t in info.tasks] == [0, 1, 2, 3, 4]
    assert info.state is JobState.FAILED  # the first task that did not complete
    assert info.exit_code == 3 and info.tasks[3].exit_code == 3
    assert info.elapsed_s == 15 and all(t.elapsed_s == 3 for t in info.tasks)
    assert info.tag == "t"


def test_merge_keeps_tasks_accounting_knows_and_the_controller_forgot() -> None:
    live = arrays.aggregate(
        "1",
        [
            JobInfo(job_id="1_1", state=JobState.COMPLETED, array_task_id=1),
        ],
    )
    db = arrays.aggregate(
        "1",
        [
            JobInfo(job_id="1_0", state=JobState.COMPLETED, array_task_id=0),
            JobInfo(job_id="1_1", state=JobState.RUNNING, array_task_id=1),
        ],
    )
    merged = arrays.merge(live, db)
    assert [(t.array_task_id, t.state) for t in merged.tasks] == [
        (0, JobState.COMPLETED),
        (1, JobState.COMPLETED),  # the controller's record, fresher than accounting's
    ]
    assert merged.state is JobState.COMPLETED


def test_sbatch_gets_the_array_the_dependency_and_a_task_wrapper() -> None:
    spec = JobSpec(
        name="sweep",
        script="#!/usr/bin/env python3\n#SBATCH --mail-type=END\nprint(1)\n",
        time_limit_minutes=5,
        array="0-9%3",
        dependency="afterok:12:13,afterany:14",
        job_dir="/scratch/e/j",
    )
    req = build_sbatch(spec)
    assert "--array=0-9%3" in req.options
    assert "--dependency=afterok:12:13,afterany:14" in req.options
    lines = req.script.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[1] == "#SBATCH --mail-type=END"
    assert 'export BROKER_ARRAY_TASK_ID="${SLURM_ARRAY_TASK_ID:-}"' in lines
    assert "#!/usr/bin/env python3" in lines  # the script itself, kept whole
    assert "mktemp /scratch/e/j/.broker-task-XXXXXXXX" in req.script


def test_the_task_wrapper_runs_any_interpreter_with_the_index(tmp_path: Any) -> None:
    import subprocess

    script = (
        "#!/usr/bin/env python3\nimport os, sys\n"
        "print(os.environ['BROKER_ARRAY_TASK_ID'])\nsys.exit(4)\n"
    )
    wrapped = wrap_array_task(script, str(tmp_path))
    out = subprocess.run(
        ["bash", "-c", wrapped],
        env={"SLURM_ARRAY_TASK_ID": "7", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout == "7\n" and out.returncode == 4
    assert list(tmp_path.iterdir()) == []  # the task's copy of the script is gone


@pytest.mark.parametrize(
    "bad", ["afterok", "afterok:", "after:1", "afterok:1;id", "afterok:1,", "singleton"]
)
def test_only_the_brokers_dependency_forms_pass(bad: str) -> None:
    with pytest.raises(ValueError, match="dependency"):
        check_dependency(bad)
