"""The local adapter's end states: a lost runner is the machine's failure, not the job's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from scheduler_adapters import JobSpec, JobState
from scheduler_adapters.local import LocalAdapter


def _state(tmp_path: Path, job_id: str) -> dict[str, object]:
    path = tmp_path / "jobs" / job_id / "state.json"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            state: dict[str, object] = json.loads(path.read_text())
            if state.get("state") == "running" and "pid" in state:
                return state
        time.sleep(0.05)
    raise AssertionError("the job did not start")


def test_a_runner_killed_under_its_job_is_node_fail(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", root_dir=str(tmp_path), node_names=["n1"])
    job_id = adapter.submit(JobSpec(name="s", script="sleep 30", time_limit_minutes=1))
    state = _state(tmp_path, job_id)
    runner, script = int(state["runner_pid"]), int(state["pid"])  # type: ignore[call-overload]
    try:
        os.kill(runner, signal.SIGKILL)
        deadline = time.monotonic() + 10
        info = adapter.status([job_id])[job_id]
        while info.state is JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
            info = adapter.status([job_id])[job_id]
        assert info.state is JobState.NODE_FAIL and info.state.terminal
        assert info.native_state == "lost" and "runner" in str(info.reason)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script, signal.SIGKILL)


def test_a_job_that_ended_is_not_lost_when_its_runner_is_gone(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", root_dir=str(tmp_path), node_names=["n1"])
    job_id = adapter.submit(JobSpec(name="q", script="exit 3", time_limit_minutes=1))
    deadline = time.monotonic() + 15
    while not (info := adapter.status([job_id])[job_id]).state.terminal:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert info.state is JobState.FAILED and info.native_state == "failed"
