"""End states and requeues as Slurm reports them: recorded 22.05, hand-written 24.05.

22.05 fixtures (``22.05/*_end_*.json``, ``rest_slurmdb_end_requeued.json``) were
recorded on alpha by ``fixtures/slurm/record_end_states.py``: a job requeued by
``scontrol requeue``, a job whose node was set down (not requeueable, then
requeueable), a job killed by SIGKILL. 24.05 ones follow data_parser v0.0.40.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler_adapters import JobState
from scheduler_adapters.slurm import parse
from scheduler_adapters.slurm.cli import SlurmCliAdapter
from scheduler_adapters.slurm.rest import SlurmRestAdapter

from .test_slurm_cli import calls, fake_tool

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def load(rel: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / rel).read_text())
    return doc["body"] if "status" in doc and "body" in doc else doc


# -- 22.05, recorded ------------------------------------------------------------------


def test_2205_node_set_down_under_a_job_that_may_not_requeue_is_node_fail() -> None:
    live = parse.parse_jobs(load("22.05/squeue_end_node_fail.json"))["319"]
    assert live.state is JobState.NODE_FAIL and live.state.terminal
    assert live.native_state == "NODE_FAIL" and live.reason == "NodeDown"
    assert live.nodes == ("localhost",) and live.elapsed_s == 3 and live.restart_count == 0
    done = parse.parse_jobs(load("22.05/sacct_end_node_fail.json"))["319"]
    assert done.state is JobState.NODE_FAIL and done.elapsed_s == 3 and done.runs == ()


def test_2205_a_requeued_job_is_pending_again_not_ended() -> None:
    for rel, job in [
        ("22.05/squeue_end_requeue_pending.json", "318"),  # scontrol requeue
        ("22.05/squeue_end_node_fail_requeued.json", "320"),  # node down, requeue allowed
    ]:
        info = parse.parse_jobs(load(rel))[job]
        # 22.05 prints plain PENDING: restart_cnt is what tells a requeue.
        assert info.state is JobState.PENDING and info.native_state == "PENDING"
        assert info.restart_count == 1 and info.reason == "BeginTime"
        # squeue's start_time of a pending job is an estimate, not a start.
        assert info.start_time is None and info.nodes == () and info.elapsed_s is None


def test_2205_the_end_of_a_requeued_job_counts_its_restarts() -> None:
    info = parse.parse_jobs(load("22.05/squeue_end_requeue_done.json"))["318"]
    assert info.state is JobState.COMPLETED and info.restart_count == 1
    assert info.runs == ()  # squeue knows the last run only; sacct has the others


@pytest.mark.parametrize(
    ("rel", "job", "first_run_state"),
    [
        ("22.05/sacct_end_requeue.json", "318", JobState.PENDING),  # REQUEUED record
        ("22.05/sacct_end_node_fail_requeued.json", "320", JobState.NODE_FAIL),
    ],
)
def test_2205_sacct_duplicates_are_the_runs_of_one_job(
    rel: str, job: str, first_run_state: JobState
) -> None:
    info = parse.parse_jobs(load(rel))[job]
    assert info.state is JobState.COMPLETED and info.elapsed_s == 8
    assert info.restart_count == 1 and len(info.runs) == 1
    (run,) = info.runs
    assert run.state is first_run_state and run.elapsed_s == 2
    assert run.nodes == ("localhost",) and run.start_time is not None
    assert run.end_time is not None and run.start_time < info.start_time  # type: ignore[operator]


def test_2205_slurmrestd_slurmdb_lists_every_run_in_any_order() -> None:
    doc = load("22.05/rest_slurmdb_end_requeued.json")
    # Recorded order: 320's NODE_FAIL run, 318's two runs, 320's last run.
    assert [j["job_id"] for j in doc["jobs"]] == [320, 318, 318, 320]
    jobs = parse.parse_jobs(doc, "alpha")
    assert {j: (i.state, [r.state for r in i.runs]) for j, i in jobs.items()} == {
        "318": (JobState.COMPLETED, [JobState.PENDING]),
        "320": (JobState.COMPLETED, [JobState.NODE_FAIL]),
    }
    reordered = {**doc, "jobs": list(reversed(doc["jobs"]))}
    assert parse.parse_jobs(reordered, "alpha") == jobs


def test_2205_a_signal_is_named_apart_from_the_exit_code() -> None:
    live = parse.parse_jobs(load("22.05/squeue_end_signal.json"))["321"]
    done = parse.parse_jobs(load("22.05/sacct_end_signal.json"))["321"]
    for info in (live, done):
        assert info.state is JobState.FAILED and info.exit_code == 137 and info.signal == 9
    assert live.reason == "JobLaunchFailure"  # what 22.05 says of `kill -9 $$`


def test_a_record_of_another_job_with_the_same_id_is_not_a_run() -> None:
    doc = copy.deepcopy(load("22.05/sacct_end_requeue.json"))
    stranger = copy.deepcopy(doc["jobs"][0])
    stranger["comment"]["job"] = "broker:someone-else"
    stranger["time"]["submission"] -= 86400
    doc["jobs"].append(stranger)
    info = parse.parse_jobs(doc)["318"]
    assert len(info.runs) == 1 and info.restart_count == 1


# -- 24.05+, hand-written ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "state", "reason", "native"),
    [
        ("201", JobState.NODE_FAIL, "NodeDown", "NODE_FAIL"),
        ("202", JobState.BOOT_FAIL, None, "BOOT_FAIL"),
        ("203", JobState.PREEMPTED, None, "PREEMPTED"),
        ("204", JobState.OUT_OF_MEMORY, "OutOfMemory", "OUT_OF_MEMORY"),
        ("205", JobState.PENDING, "BeginTime", "PENDING+REQUEUED"),
        ("206", JobState.COMPLETED, None, "COMPLETED"),
        ("207", JobState.PENDING, "NodeDown", "PENDING+COMPLETING+REQUEUED"),
        ("208", JobState.FAILED, "RaisedSignal:9(Killed)", "FAILED"),
        ("209", JobState.TIMEOUT, "DeadLine", "DEADLINE"),
    ],
)
def test_2405_controller_end_states(
    job: str, state: JobState, reason: str | None, native: str
) -> None:
    info = parse.parse_jobs(load("24.05/jobs_end_states.json"))[job]
    assert (info.state, info.reason, info.native_state) == (state, reason, native)


def test_2405_restarts_signal_and_pending_estimate() -> None:
    jobs = parse.parse_jobs(load("24.05/jobs_end_states.json"))
    assert jobs["205"].restart_count == 2 and jobs["205"].start_time is None
    assert jobs["206"].restart_count == 3
    assert jobs["208"].exit_code == 137 and jobs["208"].signal == 9
    assert jobs["204"].signal is None and jobs["201"].signal is None


def test_2405_slurmdb_runs_keep_their_nodes_and_how_they_ended() -> None:
    jobs = parse.parse_jobs(load("24.05/slurmdb_requeued.json"), "gamma")
    info = jobs["206"]
    assert info.state is JobState.COMPLETED and info.elapsed_s == 200 and info.nodes == ("cn03",)
    assert [(r.state, r.elapsed_s, r.nodes) for r in info.runs] == [
        (JobState.NODE_FAIL, 100, ("cn01",)),
        (JobState.PREEMPTED, 50, ("cn02",)),
        (JobState.PENDING, 30, ("cn01",)),  # ["PENDING", "REQUEUED"]: a plain requeue
    ]
    assert info.restart_count == 3  # the other tenant's old 206 and delta's 206 left out


# -- the adapters follow a requeued job to its runs ---------------------------------------


def test_cli_asks_sacct_duplicates_only_for_a_job_that_ended_after_a_requeue(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "squeue", f"cat {FIXTURES / '22.05/squeue_end_requeue_done.json'}")
    fake_tool(
        bin_dir,
        "sacct",
        f"""echo "$*" >> {bin_dir}/sacct_args
if [[ "$*" == *--json* ]]; then cat {FIXTURES / "22.05/sacct_end_requeue.json"}
else echo '318|0:0'; fi""",
    )
    adapter = SlurmCliAdapter("alpha", bin_dir=str(bin_dir))
    info = adapter.status(["318"])["318"]
    assert info.state is JobState.COMPLETED and info.restart_count == 1
    assert [(r.state, r.elapsed_s) for r in info.runs] == [(JobState.PENDING, 2)]
    assert info.elapsed_s == 8  # the last run, as squeue says
    json_call = (bin_dir / "sacct_args").read_text().splitlines()[0]
    assert "--duplicates" in json_call.split() and json_call.endswith("-j 318")
    # While it is pending again, squeue is enough.
    fake_tool(bin_dir, "squeue", f"cat {FIXTURES / '22.05/squeue_end_requeue_pending.json'}")
    (bin_dir / "calls.log").unlink()
    assert adapter.status(["318"])["318"].state is JobState.PENDING
    assert calls(bin_dir) == ["squeue"]


def test_rest_reads_earlier_runs_from_slurmdb(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    paths: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/slurm/v0.0.38/jobs":
            return httpx.Response(200, json=load("22.05/squeue_end_requeue_done.json"))
        if request.url.path == "/slurmdb/v0.0.38/jobs":
            return httpx.Response(200, json=load("22.05/rest_slurmdb_end_requeued.json"))
        return httpx.Response(404)

    rest = SlurmRestAdapter(
        "alpha",
        url="http://rest.test",
        jwt_key_file=str(key),
        api_version="v0.0.38",
        transport=httpx.MockTransport(handle),
    )
    info = rest.status(["318"])["318"]
    assert [(r.state, r.elapsed_s) for r in info.runs] == [(JobState.PENDING, 2)]
    assert paths == ["/slurm/v0.0.38/jobs", "/slurmdb/v0.0.38/jobs"]
