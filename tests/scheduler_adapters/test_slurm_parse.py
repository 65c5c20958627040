"""One parser for Slurm JSON: recorded 22.05 output and 24.05-shaped documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_adapters import JobState
from scheduler_adapters.slurm import parse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def load(rel: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / rel).read_text())
    return doc["body"] if "status" in doc and "body" in doc else doc


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        (None, None),
        (2.0, 2),
        ({"set": True, "infinite": False, "number": 7}, 7),
        ({"set": False, "infinite": False, "number": 0}, None),
        ({"set": True, "infinite": True, "number": 0}, None),
        ("12", 12),
        (True, None),
        ("x", None),
        ("\u00b9", None),  # a digit to str.isdigit, not to int(): found by hypothesis
    ],
)
def test_number(value: object, expected: int | None) -> None:
    assert parse.number(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (768, 3),
        (15, 143),
        (9, 137),
        (None, None),
        ({"status": "SUCCESS", "return_code": 0}, 0),
        ({"status": ["EXITED"], "return_code": {"set": True, "number": 3}}, 3),
        (
            {
                "status": ["SIGNALED"],
                "return_code": {"set": False, "number": 0},
                "signal": {"id": {"set": True, "number": 9}, "name": "KILL"},
            },
            137,
        ),
        ({"status": "SIGNALED", "return_code": None, "signal": {"signal_id": 15}}, 143),
    ],
)
def test_exit_code(value: object, expected: int | None) -> None:
    assert parse.exit_code(value) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("localhost", ("localhost",)),
        ("beta[1-2]", ("beta1", "beta2")),
        ("cn[08-10,12],gpu1", ("cn08", "cn09", "cn10", "cn12", "gpu1")),
        ("r[1-2]n[1-2]", ("r1n1", "r1n2", "r2n1", "r2n2")),
        ("", ()),
        (None, ()),
        ("None assigned", ()),
    ],
)
def test_expand_hostlist(spec: str | None, expected: tuple[str, ...]) -> None:
    assert parse.expand_hostlist(spec) == expected


@given(st.text(max_size=40))
def test_expand_hostlist_never_raises(spec: str) -> None:
    assert isinstance(parse.expand_hostlist(spec), tuple)


def test_squeue_2205_recorded() -> None:
    doc = load("22.05/squeue_finished.json")
    assert parse.release(doc) == "22.05.8" and parse.plugin_version(doc) == "v0.0.38"
    jobs = {j.tag: j for j in parse.parse_jobs(doc, "alpha").values() if j.tag}
    ok, failed, cancelled = jobs["fixture-0"], jobs["fixture-1"], jobs["fixture-2"]
    assert ok.state is JobState.COMPLETED and ok.exit_code == 0 and ok.nodes == ("localhost",)
    assert ok.elapsed_s is not None and ok.account == "fixacct" and ok.partition == "debug"
    assert failed.state is JobState.FAILED and failed.exit_code == 3  # raw wait status 768
    assert failed.reason == "NonZeroExitCode"
    assert cancelled.state is JobState.CANCELLED and cancelled.exit_code == 143
    assert parse.parse_jobs(doc, "beta") == {}


def test_squeue_2205_running_job_has_no_end_time() -> None:
    jobs = parse.parse_jobs(load("22.05/squeue_running.json"))
    running = [j for j in jobs.values() if j.state is JobState.RUNNING]
    assert running and all(j.end_time is None and j.exit_code is None for j in running)


def test_sacct_2205_recorded_shows_the_exit_code_bug() -> None:
    doc = load("22.05/sacct.json")
    assert parse.plugin_version(doc) == "dbv0.0.38"
    jobs = {j.tag: j for j in parse.parse_jobs(doc).values()}
    assert jobs["fixture-1"].state is JobState.FAILED
    assert jobs["fixture-1"].exit_code == 0  # what 22.05 says; the CLI adapter fixes it
    assert "|3:0|" in (FIXTURES / "22.05/sacct_exitcode.txt").read_text()
    assert jobs["fixture-0"].elapsed_s == 1 and jobs["fixture-0"].nodes == ("localhost",)


def test_rest_2205_recorded() -> None:
    jobs = parse.parse_jobs(load("22.05/rest_jobs.json"), "beta")
    (job,) = jobs.values()
    assert job.state is JobState.FAILED and job.exit_code == 3 and job.tag == "fixture-rest"
    nodes = parse.parse_nodes(load("22.05/rest_nodes.json"))
    assert [n.name for n in nodes] == ["beta1", "beta2"] and nodes[0].cpus == 4
    errors = parse.envelope_errors(load("22.05/rest_submit_bad_account.json"))
    assert errors == [(2045, "Invalid account or account/partition combination specified")]
    assert parse.envelope_errors(load("22.05/rest_cancel_unknown.json"))[0][0] == 2017


def test_sinfo_2205_nodes() -> None:
    (node,) = parse.parse_nodes(load("22.05/sinfo.json"))
    assert (node.name, node.cpus, node.memory_mb, node.state) == ("localhost", 2, 3000, "idle")
    assert node.partitions == ("debug",) and parse.node_is_idle(node)


def test_jobs_2405_shape() -> None:
    doc = load("24.05/jobs.json")
    assert parse.release(doc) == "24.05.4" and parse.plugin_version(doc) == "v0.0.40"
    jobs = parse.parse_jobs(doc, "gamma")
    assert jobs["101"].state is JobState.COMPLETED and jobs["101"].nodes == ("cn01", "cn02")
    assert jobs["101"].elapsed_s == 120
    assert jobs["101"].tag == "7f0c6a2e-1111-4c1e-9d52-0a0000000101"
    assert jobs["101"].end_time == datetime.fromtimestamp(1732000130, UTC)
    assert (jobs["102"].state, jobs["102"].exit_code) == (JobState.FAILED, 3)
    assert (jobs["103"].state, jobs["103"].exit_code) == (JobState.CANCELLED, 143)
    assert jobs["104"].state is JobState.PENDING
    assert jobs["104"].reason == "AssocGrpBillingMinutes" and jobs["104"].nodes == ()
    assert jobs["105"].state is JobState.RUNNING  # COMPLETING: not final yet
    assert jobs["105"].nodes == ("cn05", "cn07", "cn08") and jobs["105"].end_time is None
    assert jobs["106"].state is JobState.RUNNING and jobs["106"].end_time is None
    assert jobs["107"].state is JobState.PENDING
    assert jobs["108"].state is JobState.OUT_OF_MEMORY  # the job's fault, visible as such
    assert jobs["109"].state is JobState.SUSPENDED
    assert jobs["110"].state is JobState.TIMEOUT


def test_slurmdb_2405_shape_filters_other_clusters() -> None:
    jobs = parse.parse_jobs(load("24.05/slurmdb_jobs.json"), "gamma")
    assert set(jobs) == {"101", "102", "110"}
    assert jobs["101"].nodes == ("cn01", "cn02") and jobs["101"].elapsed_s == 120
    assert jobs["101"].tag == "7f0c6a2e-1111-4c1e-9d52-0a0000000101"
    assert jobs["102"].exit_code == 3 and jobs["110"].exit_code == 143


def test_nodes_2405_shape() -> None:
    nodes = {n.name: n for n in parse.parse_nodes(load("24.05/nodes.json"))}
    assert nodes["cn03"].state == "idle+drain" and nodes["cn03"].reason == "gemm below reference"
    assert parse.node_is_idle(nodes["cn01"]) and not parse.node_is_idle(nodes["cn03"])
    assert nodes["gpu1"].gpus == 4 and nodes["cn01"].features == ("avx512",)
    assert nodes["cn02"].alloc_cpus == 64 and nodes["cn05"].state == "down+not_responding"


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "job_id",
                "job_state",
                "state",
                "time",
                "exit_code",
                "nodes",
                "comment",
                "start_time",
                "submit_time",
                "end_time",
                "cluster",
            ]
        ),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=10),
            st.lists(st.text(max_size=8), max_size=3),
            st.fixed_dictionaries({"set": st.booleans(), "number": st.integers(0, 2**31)}),
        ),
    )
)
def test_parse_job_never_raises(job: dict[str, Any]) -> None:
    assert isinstance(parse.parse_job(job).state, JobState)


@pytest.mark.parametrize(
    "value", [0, None, -1, -62135596801, 2**62, {"set": True, "number": 10**18}, "garbage"]
)
def test_timestamp_rejects_unset_negative_and_out_of_range(value: object) -> None:
    assert parse.timestamp(value) is None


def test_timestamp_reads_epoch_seconds_in_every_slurm_shape() -> None:
    want = datetime.fromtimestamp(1732000130, UTC)
    for value in (1732000130, "1732000130", {"set": True, "infinite": False, "number": 1732000130}):
        assert parse.timestamp(value) == want


def test_expand_hostlist_is_bounded() -> None:
    """A node list naming a hundred million hosts is refused, not expanded into memory."""
    assert parse.expand_hostlist("n[0-99999999]") == ()
    assert parse.expand_hostlist("a[1-2]b[3-4]") == ("a1b3", "a1b4", "a2b3", "a2b4")
