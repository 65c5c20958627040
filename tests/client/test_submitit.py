"""The submitit executor ``broker``: a pickled call runs as a broker job and its result,
exception and logs come back; a job can be cancelled; inside, submitit's
JobEnvironment is the broker's; AutoExecutor finds it by name (entry points)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from broker.client import Client
from broker.client.submitit_plugin import BrokerExecutor, BrokerJob

from .conftest import Broker

# The jobs' Python cannot import this test module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def whoami(x: int) -> dict[str, Any]:
    import os

    import submitit as sm

    env = sm.JobEnvironment()
    print(f"task with {x}")
    return {"job_id": env.job_id, "cwd_has_pickles": os.path.isdir(os.environ["SUBMITIT_FOLDER"])}


def explode(msg: str) -> None:
    raise ValueError(msg)


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def test_autoexecutor_finds_broker_by_name() -> None:
    assert submitit.AutoExecutor.which() != "broker"  # never chosen unasked (affinity 0)
    from submitit.core import plugins

    assert plugins.get_executors()["broker"].__name__ == "BrokerExecutor"
    assert "broker" in plugins.get_job_environments()


def test_generic_parameters_are_translated(broker_free_executor: BrokerExecutor) -> None:
    ex = broker_free_executor
    params = ex._convert_parameters({"timeout_min": 7, "mem_gb": 1.5, "tasks_per_node": 2})
    ex.update_parameters(**params, partition="debug", array_parallelism=3)
    assert ex.parameters == {
        "time_limit_minutes": 7,
        "memory_mb": 1536,
        "ntasks": 2,
        "partition": "debug",
        "array_parallelism": 3,
    }
    with pytest.raises(ValueError, match="unknown parameters"):
        ex.update_parameters(slurm_partition="x")


@pytest.fixture
def broker_free_executor(tmp_path: Path) -> BrokerExecutor:
    return BrokerExecutor(tmp_path, client=Client("http://127.0.0.1:9", "t"))


@pytest.fixture
def executor(broker: Broker, job_python: str, tmp_path: Path) -> BrokerExecutor:
    client = Client(broker.url, broker.member, project_id=broker.project_id)
    ex = BrokerExecutor(tmp_path / "logs", client=client, python=job_python)
    ex.update_parameters(time_limit_minutes=5)
    return ex


@pytest.mark.slow
def test_result_logs_and_job_environment(executor: BrokerExecutor) -> None:
    job = executor.submit(whoami, 7)
    assert isinstance(job, BrokerJob)
    got = job.result()
    assert got == {"job_id": job.job_id, "cwd_has_pickles": True}
    assert "task with 7" in (job.stdout() or "")
    assert job.state == "COMPLETED"
    executor.client.close()


@pytest.mark.slow
def test_an_exception_comes_back_with_its_traceback(executor: BrokerExecutor) -> None:
    job = executor.submit(explode, "bad input 42")
    with pytest.raises(FailedJobError, match="bad input 42"):
        job.result()
    assert "ValueError: bad input 42" in (job.stderr() or "")
    executor.client.close()


@pytest.mark.slow
def test_a_job_can_be_cancelled(executor: BrokerExecutor) -> None:
    job = executor.submit(nap, 300)
    c = executor.client
    deadline = time.monotonic() + 120
    while c.job(job.job_id).state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    job.cancel()
    assert c.wait(job.job_id, timeout_s=120).state == "cancelled"
    assert job.done(force_check=True) and job.state == "CANCELLED"
    with pytest.raises(UncompletedJobError, match="cancelled"):
        job.result()
    c.close()


@pytest.mark.slow
def test_map_array_tasks_are_one_array_job(executor: BrokerExecutor) -> None:
    executor.update_parameters(array_parallelism=2)
    jobs = executor.map_array(whoami, [10, 11, 12])
    ids = {j.job_id.split("_")[0] for j in jobs}
    assert len(ids) == 1
    results = [j.result() for j in jobs]
    assert [r["job_id"] for r in results] == [j.job_id for j in jobs]
    assert [j.job_id.split("_")[1] for j in jobs] == ["0", "1", "2"]
    assert "task with 12" in (jobs[2].stdout() or "")
    array = executor.client.job(ids.pop())
    assert array.array == "0-2%2" and array.array_tasks == 3
    executor.client.close()
