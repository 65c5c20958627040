"""The local adapter runs scripts as detached processes and survives a new adapter object."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler_adapters import JobSpec, JobState, SubmitRejected, create_adapter
from scheduler_adapters.local import LocalAdapter


def _wait(adapter: LocalAdapter, job_id: str, timeout_s: float = 15) -> JobState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = adapter.status([job_id])[job_id]
        if info.state.terminal:
            return info.state
        time.sleep(0.05)
    raise AssertionError("job did not finish")


@pytest.fixture
def adapter(tmp_path: Path) -> LocalAdapter:
    made = create_adapter("local", "local", {"root_dir": str(tmp_path), "node_names": ["n1", "n2"]})
    assert isinstance(made, LocalAdapter)
    return made


def test_runs_and_reports(adapter: LocalAdapter, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    job_id = adapter.submit(
        JobSpec(
            name="t",
            script="#!/bin/bash\necho hi $SLURM_JOB_NUM_NODES",
            time_limit_minutes=1,
            nodes=2,
            tag="broker:x",
            stdout_path=str(out),
        )
    )
    assert _wait(adapter, job_id) is JobState.COMPLETED
    info = adapter.status([job_id])[job_id]
    assert info.exit_code == 0 and info.nodes == ("n1", "n2") and info.tag == "broker:x"
    assert info.start_time is not None and info.end_time is not None
    assert out.read_text() == "hi 2\n"
    # A fresh adapter over the same directory (a broker restart) sees the same job.
    again = LocalAdapter("local", root_dir=str(tmp_path), node_names=["n1", "n2"])
    assert again.status([job_id])[job_id].state is JobState.COMPLETED
    tagged = again.list_tagged(datetime.now(UTC) - timedelta(minutes=1))
    assert set(tagged) == {"broker:x"}


def test_exit_code_cancel_timeout(adapter: LocalAdapter) -> None:
    failing = adapter.submit(JobSpec(name="f", script="exit 3", time_limit_minutes=1))
    assert _wait(adapter, failing) is JobState.FAILED
    assert adapter.status([failing])[failing].exit_code == 3

    sleeper = adapter.submit(JobSpec(name="s", script="sleep 30", time_limit_minutes=1))
    time.sleep(0.3)
    adapter.cancel(sleeper)
    adapter.cancel(sleeper)  # idempotent
    assert _wait(adapter, sleeper) is JobState.CANCELLED
    adapter.cancel("999")  # unknown: no error
    assert adapter.status(["999", "x"]) == {}


def test_rejects_too_many_nodes(adapter: LocalAdapter) -> None:
    with pytest.raises(SubmitRejected) as err:
        adapter.submit(JobSpec(name="big", script="true", time_limit_minutes=1, nodes=3))
    assert not err.value.transient


def test_ping_and_nodes(adapter: LocalAdapter) -> None:
    info = adapter.ping()
    assert info.partitions[0].total_nodes == 2
    assert [n.name for n in adapter.nodes()] == ["n1", "n2"]


def test_gpus_are_handed_to_the_job_and_reported(tmp_path: Path) -> None:
    adapter = LocalAdapter(
        "local", root_dir=str(tmp_path), node_names=["n1", "n2"], gpus_per_node=2, gpu_type="h200"
    )
    assert [(n.gpus, n.gpu_type) for n in adapter.nodes()] == [(2, "h200"), (2, "h200")]
    out = tmp_path / "gpus.txt"
    job_id = adapter.submit(
        JobSpec(
            name="g",
            script="#!/bin/bash\necho $CUDA_VISIBLE_DEVICES $SLURM_GPUS_ON_NODE",
            time_limit_minutes=1,
            nodes=2,
            gpus_per_node=2,
            stdout_path=str(out),
        )
    )
    assert _wait(adapter, job_id) is JobState.COMPLETED
    assert out.read_text() == "0,1 2\n"
    assert adapter.status([job_id])[job_id].alloc_gpus == 4
    plain = adapter.submit(JobSpec(name="c", script="true", time_limit_minutes=1))
    assert _wait(adapter, plain) is JobState.COMPLETED
    assert adapter.status([plain])[plain].alloc_gpus == 0
    with pytest.raises(SubmitRejected, match=r"gpus_per_node: requested 3, .* have 2"):
        adapter.submit(JobSpec(name="g3", script="true", time_limit_minutes=1, gpus_per_node=3))


def test_gpus_unchecked_without_the_option(adapter: LocalAdapter, tmp_path: Path) -> None:
    assert [n.gpus for n in adapter.nodes()] == [0, 0]
    job_id = adapter.submit(JobSpec(name="g", script="true", time_limit_minutes=1, gpus_per_node=1))
    assert _wait(adapter, job_id) is JobState.COMPLETED
    assert adapter.status([job_id])[job_id].alloc_gpus == 1
    none = LocalAdapter("local", root_dir=str(tmp_path / "none"), gpus_per_node=0)
    with pytest.raises(SubmitRejected, match=r"gpus_per_node: requested 1, .* have 0"):
        none.submit(JobSpec(name="g", script="true", time_limit_minutes=1, gpus_per_node=1))
