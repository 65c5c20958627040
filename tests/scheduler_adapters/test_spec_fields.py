"""The spec's own fields on every adapter: environment (the broker's job id, refused
names), working directory inside the job's directory, QOS, reservation and constraints
as options, and the local adapter running a script by its ``#!`` line."""

from __future__ import annotations

import os
import pwd
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler_adapters import JobSpec, JobState, SubmitRejected, env_name_refusal
from scheduler_adapters.local import LocalAdapter
from scheduler_adapters.slurm.pyslurm import PySlurmAdapter
from scheduler_adapters.slurm.rest_body import job_description
from scheduler_adapters.slurm.script import build_environment, build_sbatch
from tests.scheduler_adapters import fake_pyslurm

BROKER_ID = "0b7c56a3-6c0e-4d5e-9a37-3f1d2f0c9e11"


def _spec(**kw: Any) -> JobSpec:
    fields: dict[str, Any] = {"name": "t", "script": "#!/bin/bash\ntrue\n", "time_limit_minutes": 5}
    return JobSpec(**(fields | kw))


# -- environment names ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "SLURM_CONF",
        "SLURM_JOB_ID",
        "SBATCH_FOO",
        "SBATCH_QOS",
        "SALLOC_X",
        "SRUN_CPUS_PER_TASK",
        "SPANK_X",
        "_SLURM_SPANK_OPTION_x",
        "PMI_RANK",
        "PMIX_RANK",
        "BROKER_X",
        "BROKER_JOB_ID",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "ROCR_VISIBLE_DEVICES",
        "1X",
        "A-B",
        "A B",
        "",
    ],
)
def test_steering_or_malformed_names_are_refused_everywhere(name: str) -> None:
    assert env_name_refusal(name) is not None
    with pytest.raises(ValueError, match="^" + re.escape(f"environment.{name}: ")):
        build_environment(_spec(environment={name: "v"}))
    with pytest.raises(ValueError, match="^" + re.escape(f"environment.{name}: ")):
        job_description(_spec(environment={name: "v"}), "v0.0.38")


@pytest.mark.parametrize("name", ["FOO", "PATH", "HOME", "OMP_NUM_THREADS", "_x", "slurm_conf"])
def test_the_jobs_own_names_pass(name: str) -> None:
    assert env_name_refusal(name) is None
    assert build_environment(_spec(environment={name: "a b\nc"}))[name] == "a b\nc"


def test_environment_carries_the_brokers_job_id_and_the_spec_cannot_forge_it() -> None:
    env = build_environment(_spec(environment={"FOO": "1"}, broker_job_id=BROKER_ID))
    assert env["BROKER_JOB_ID"] == BROKER_ID and env["FOO"] == "1"
    assert "BROKER_JOB_ID" not in build_environment(_spec())


# -- sbatch options and the REST body --------------------------------------------------


def test_qos_reservation_constraints_and_chdir_reach_sbatch() -> None:
    req = build_sbatch(
        _spec(
            qos="high",
            reservation="maint",
            constraints="avx512&ib",
            working_dir="/scratch/e/j/run",
            job_dir="/scratch/e/j",
            stdout_path="/scratch/e/j/stdout.txt",
        )
    )
    assert {"--qos=high", "--reservation=maint", "--constraint=avx512&ib"} <= set(req.options)
    assert "--chdir=/scratch/e/j/run" in req.options
    assert "--output=/scratch/e/j/stdout.txt" in req.options  # the logs stay at the root
    plain = build_sbatch(_spec())
    assert not [o for o in plain.options if o.startswith(("--qos", "--reservation", "--constr"))]


@pytest.mark.parametrize("version", ["v0.0.38", "v0.0.39", "v0.0.40", "v0.0.42"])
def test_rest_body_carries_the_spec_fields(version: str) -> None:
    body = job_description(
        _spec(
            qos="high",
            reservation="maint",
            constraints="avx512",
            working_dir="/scratch/e/j/run",
            job_dir="/scratch/e/j",
            environment={"FOO": "bar"},
            broker_job_id=BROKER_ID,
        ),
        version,
    )
    job = body["job"]
    assert job["qos"] == "high" and job["reservation"] == "maint"
    assert job["constraints"] == "avx512"
    assert job["current_working_directory"] == "/scratch/e/j/run"
    env = job["environment"]
    pairs = env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)
    assert pairs["FOO"] == "bar" and pairs["BROKER_JOB_ID"] == BROKER_ID
    assert pairs["HOME"] == "/scratch/e/j"  # the job's directory, not where it starts


@pytest.fixture
def fake() -> Iterator[None]:
    fake_pyslurm.reset()
    yield
    fake_pyslurm.reset()


def test_pyslurm_gets_the_spec_fields(fake: None) -> None:
    adapter = PySlurmAdapter("omega", module="tests.scheduler_adapters.fake_pyslurm")
    adapter.submit(
        _spec(
            user="alice",
            qos="high",
            reservation="maint",
            constraints="a&b",
            working_dir="/s/j/run",
            job_dir="/s/j",
            environment={"FOO": "bar"},
            broker_job_id=BROKER_ID,
        )
    )
    sent = fake_pyslurm.SUBMITTED[-1]
    assert sent["qos"] == "high" and sent["reservations"] == "maint"
    assert sent["constraints"] == "a&b" and sent["working_directory"] == "/s/j/run"
    assert sent["environment"]["FOO"] == "bar"
    assert sent["environment"]["BROKER_JOB_ID"] == BROKER_ID
    assert sent["environment"]["HOME"] == "/s/j"


# -- the local adapter -------------------------------------------------------------------


def _wait(adapter: LocalAdapter, job_id: str) -> tuple[JobState, str | None]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = adapter.status([job_id])[job_id]
        if info.state.terminal:
            return info.state, info.reason
        time.sleep(0.05)
    raise AssertionError("job did not finish")


@pytest.fixture
def adapter(tmp_path: Path) -> LocalAdapter:
    return LocalAdapter("local", root_dir=str(tmp_path / "sched"))


def _job_dir(tmp_path: Path) -> Path:
    job = tmp_path / "scratch" / "job"
    job.mkdir(parents=True)
    return job


def test_local_job_starts_in_its_working_directory_with_its_variables(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    job = _job_dir(tmp_path)
    (job / "run" / "here").mkdir(parents=True)
    script = (
        "#!/bin/bash\n"
        'echo "FOO=$FOO"\n'
        "pwd -P\n"
        'echo "HOME=$HOME"\n'
        'echo "$BROKER_JOB_ID $BROKER_SCHEDULER_JOB_ID $SLURM_JOB_ID"\n'
        "touch made-here\n"
    )
    job_id = adapter.submit(
        _spec(
            script=script,
            working_dir=str(job / "run" / "here"),
            job_dir=str(job),
            stdout_path=str(job / "stdout.txt"),
            environment={"FOO": "two words"},
            broker_job_id=BROKER_ID,
        )
    )
    assert _wait(adapter, job_id)[0] is JobState.COMPLETED
    lines = (job / "stdout.txt").read_text().splitlines()
    assert lines == [
        "FOO=two words",
        str((job / "run" / "here").resolve()),
        f"HOME={job}",
        f"{BROKER_ID} {job_id} {job_id}",
    ]
    assert (job / "run" / "here" / "made-here").exists()


def test_local_refuses_steering_names(adapter: LocalAdapter, tmp_path: Path) -> None:
    with pytest.raises(SubmitRejected, match=r"environment\.SLURM_CONF"):
        adapter.submit(_spec(environment={"SLURM_CONF": "/tmp/evil.conf"}))


def test_local_runs_a_script_by_its_shebang_line(adapter: LocalAdapter, tmp_path: Path) -> None:
    job = _job_dir(tmp_path)
    script = (
        "#!/usr/bin/env python3\n"
        "import os, sys\n"
        "print(os.path.basename(sys.executable).startswith('python'), os.getcwd())\n"
    )
    job_id = adapter.submit(
        _spec(script=script, working_dir=str(job), stdout_path=str(job / "out"))
    )
    assert _wait(adapter, job_id)[0] is JobState.COMPLETED, (job / "out").read_text()
    assert (job / "out").read_text() == f"True {job.resolve()}\n"


def test_local_script_without_shebang_runs_under_bash(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    job = _job_dir(tmp_path)
    job_id = adapter.submit(
        _spec(
            script='echo "$BASH_VERSION" | cut -c1',
            working_dir=str(job),
            stdout_path=str(job / "o"),
        )
    )
    assert _wait(adapter, job_id)[0] is JobState.COMPLETED
    assert (job / "o").read_text().strip().isdigit()


def test_local_working_directory_behind_a_link_is_refused(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    """A link planted where the working directory should be (the job's directory is the
    tenant's) is not followed by the runner, which runs as root until the job starts."""
    job = _job_dir(tmp_path)
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    secret.chmod(0o777)  # whoever the job runs as could write there, if it got there
    (job / "run").symlink_to(secret)
    job_id = adapter.submit(
        _spec(
            script="#!/bin/bash\ntouch planted\n",
            working_dir=str(job / "run"),
            job_dir=str(job),
            stdout_path=str(job / "stdout.txt"),
        )
    )
    state, reason = _wait(adapter, job_id)
    assert state is JobState.FAILED and "not a directory" in (reason or ""), reason
    assert not (secret / "planted").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_as_root_the_fallback_user_gets_the_whole_job_directory(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    """The job's directory (not only where it starts) is handed to the account it runs
    as, so a job started in a subdirectory can still write beside its outputs."""
    tmp_path.chmod(0o711)  # pytest's 0700 parents would stop nobody in the path itself
    job = _job_dir(tmp_path)
    for p in (tmp_path / "scratch",):
        p.chmod(0o711)
    (job / "run").mkdir()
    job_id = adapter.submit(
        _spec(
            script="#!/bin/bash\ntouch ../beside-outputs\nid -un\n",
            user="nosuchuser",
            working_dir=str(job / "run"),
            job_dir=str(job),
            stdout_path=str(job / "stdout.txt"),
        )
    )
    assert _wait(adapter, job_id)[0] is JobState.COMPLETED, (job / "stdout.txt").read_text()
    nobody = pwd.getpwnam("nobody").pw_uid
    assert job.stat().st_uid == nobody and (job / "run").stat().st_uid == nobody
    assert (job / "beside-outputs").stat().st_uid == nobody
