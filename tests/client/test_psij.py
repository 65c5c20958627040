"""The PSI/J executor ``hpc-broker``: the spec mapping, arguments that never reach a
shell, states, and jobs followed to their end (callbacks from SSE and from polling),
cancelled, failed, fed by stdin, against a running broker."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from psij import (
    InvalidJobException,
    Job,
    JobAttributes,
    JobExecutor,
    JobSpec,
    JobState,
    JobStatus,
    ResourceSpecV1,
)

from broker.client.psij_executor import BrokerJobExecutor, register, spec_from_psij, state_of
from broker.models import JobStatus as BrokerState

from .conftest import Broker

NASTY = ["a b", "$(touch pwned)", "`touch pwned`", "x; touch pwned", "'\"", "new\nline", "*", ""]


def test_arguments_reach_the_program_as_they_are(tmp_path: Path) -> None:
    spec = JobSpec(executable="printf", arguments=["<%s>\\n", *NASTY])
    script = spec_from_psij(spec).script
    (tmp_path / "job.sh").write_text(script)
    out = subprocess.run(
        ["bash", "job.sh"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout == "".join(f"<{a}>\n" for a in NASTY)
    assert not (tmp_path / "pwned").exists()


def test_the_spec_maps_resources_attributes_and_environment() -> None:
    spec = JobSpec(
        executable="/opt/app/bin/solve",
        arguments=["--steps", "10"],
        environment={"OMP_NUM_THREADS": 4, "MODE": "fast"},
        directory=Path("runs/r1"),
        resources=ResourceSpecV1(
            node_count=2,
            processes_per_node=4,
            cpu_cores_per_process=8,
            gpu_cores_per_process=1,
            memory=3 * 2**30,
        ),
        attributes=JobAttributes(
            duration=timedelta(minutes=90, seconds=1),
            queue_name="gpu",
            reservation_id="poc-week",
            custom_attributes={
                "hpc_broker.cluster": "beta",
                "hpc_broker.qos": "high",
                "hpc_broker.constraints": "a100, ib",
            },
        ),
        launcher="srun",
    )
    got = spec_from_psij(spec).body()
    assert got.pop("script") == "#!/bin/bash\nexec srun /opt/app/bin/solve --steps 10\n"
    assert got == {
        "name": "solve",
        "working_directory": "runs/r1",
        "nodes": 2,
        "ntasks": 8,
        "cpus_per_task": 8,
        "gpus_per_node": 4,
        "memory_mb": 3072,
        "environment": {"OMP_NUM_THREADS": "4", "MODE": "fast"},
        "time_limit_minutes": 91,
        "partition": "gpu",
        "reservation": "poc-week",
        "cluster": "beta",
        "qos": "high",
        "constraints": ["a100", "ib"],
    }


def test_stdin_is_staged_and_read_from_the_jobs_directory() -> None:
    spec = JobSpec(executable="wc", arguments=["-l"], directory=Path("a/b"))
    got = spec_from_psij(spec, stdin_rel="psij/1/stdin")
    assert got.inputs == ["psij/1/stdin"]
    assert got.script.endswith("exec wc -l < ../../psij/1/stdin\n")


def test_what_the_broker_cannot_honour_is_refused() -> None:
    with pytest.raises(InvalidJobException, match="relative"):
        spec_from_psij(JobSpec(executable="true", directory=Path("/home/me")))
    with pytest.raises(InvalidJobException, match="launcher"):
        spec_from_psij(JobSpec(executable="true", launcher="aprun"))


def test_every_broker_state_has_its_psij_state() -> None:
    for state in BrokerState:
        if state is BrokerState.UNKNOWN:
            assert state_of(state.value) is None  # nothing to report
        else:
            assert state_of(state.value) is not None, state
    assert state_of("pending") is JobState.QUEUED and state_of("running") is JobState.ACTIVE
    assert state_of("timeout") is JobState.FAILED and state_of("cancelled") is JobState.CANCELED


# -- against a running broker --------------------------------------------------


@pytest.fixture
def executor(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[BrokerJobExecutor]:
    for name, value in broker.env().items():
        if name.startswith("HPC_BROKER_"):
            monkeypatch.setenv(name, value)
    register()  # an editable install: the descriptor is not on sys.path
    ex = JobExecutor.get_instance("hpc-broker")
    # PSI/J loads the class from its file: a copy of broker.client's, same name.
    assert type(ex).__name__ == "BrokerJobExecutor" and ex.name == "hpc-broker"
    yield ex  # type: ignore[misc]
    ex.close()


def _states(job: Job) -> list[JobState]:
    seen: list[JobState] = []
    lock = threading.Lock()

    def cb(_: Job, status: JobStatus) -> None:
        with lock:
            seen.append(status.state)

    job.set_job_status_callback(cb)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("streams", [2, 0], ids=["sse", "polling"])
def test_a_job_followed_to_its_end(
    executor: BrokerJobExecutor, streams: int, tmp_path: Path
) -> None:
    executor.max_streams = streams
    executor.poll_s = 0.3
    out = tmp_path / "out.txt"
    job = Job(
        JobSpec(
            executable="/bin/sh",
            arguments=["-c", "sleep 1; echo ran in $(basename $PWD)"],
            directory=Path("work"),
            stdout_path=out,
        )
    )
    seen = _states(job)
    executor.submit(job)
    status = job.wait(timeout=timedelta(minutes=3))
    assert status is not None and status.state is JobState.COMPLETED, status
    assert status.exit_code == 0 and status.metadata["charge_pfh"] > 0  # type: ignore[index]
    assert seen[0] is JobState.QUEUED and seen[-1] is JobState.COMPLETED
    assert JobState.ACTIVE in seen and len(seen) == len(set(seen))
    assert out.read_text() == "ran in work\n"


@pytest.mark.slow
def test_failed_cancelled_and_stdin(executor: BrokerJobExecutor, tmp_path: Path) -> None:
    failing = Job(JobSpec(executable="/bin/sh", arguments=["-c", "exit 3"]))
    executor.submit(failing)
    st = failing.wait(timeout=timedelta(minutes=3))
    assert st is not None and st.state is JobState.FAILED and st.exit_code == 3
    assert st.message  # the broker's reason

    long = Job(JobSpec(executable="sleep", arguments=["300"]))
    executor.submit(long)
    long.wait(target_states=[JobState.ACTIVE], timeout=timedelta(minutes=3))
    assert long.native_id in executor.list()
    watcher = Job()  # another process's view of the same job, by its native id
    executor.attach(watcher, str(long.native_id))
    executor.cancel(long)
    st = long.wait(timeout=timedelta(minutes=2))
    assert st is not None and st.state is JobState.CANCELED
    seen = watcher.wait(timeout=timedelta(minutes=2))
    assert seen is not None and seen.state is JobState.CANCELED

    data = tmp_path / "in.txt"
    data.write_text("one\ntwo\nthree\n")
    out = tmp_path / "count.txt"
    counting = Job(JobSpec(executable="wc", arguments=["-l"], stdin_path=data, stdout_path=out))
    executor.submit(counting)
    st = counting.wait(timeout=timedelta(minutes=3))
    assert st is not None and st.state is JobState.COMPLETED
    assert out.read_text().strip() == "3"
