"""The pyslurm adapter against a fake module shaped like pyslurm 25.11's API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_adapters import (
    AdapterConfigError,
    JobSpec,
    JobState,
    SubmitRejected,
    create_adapter,
)
from scheduler_adapters.slurm.pyslurm import PySlurmAdapter
from tests.scheduler_adapters import fake_pyslurm

MODULE = "tests.scheduler_adapters.fake_pyslurm"


@pytest.fixture
def adapter() -> Iterator[PySlurmAdapter]:
    fake_pyslurm.reset()
    made = create_adapter("pyslurm", "omega", {"module": MODULE})
    assert isinstance(made, PySlurmAdapter)
    yield made


def spec(script: str = "true", **kw: object) -> JobSpec:
    fields: dict[str, object] = {
        "name": "p",
        "script": script,
        "time_limit_minutes": 4,
        "user": "alice",
        "account": "acme",
        "tag": "tg",
    }
    fields.update(kw)
    return JobSpec(**fields)  # type: ignore[arg-type]


def test_missing_module_is_a_config_error() -> None:
    with pytest.raises(AdapterConfigError, match="pyslurm"):
        PySlurmAdapter("x", module="no_such_pyslurm_module")


def test_submit_maps_fields(adapter: PySlurmAdapter) -> None:
    job_id = adapter.submit(spec(nodelist=("n1",), memory_mb=512, gpus_per_node=1))
    fields = fake_pyslurm.SUBMITTED[-1]
    assert job_id == "100" and fields["user_id"] == "alice" and fields["comment"] == "broker:tg"
    assert fields["required_nodes"] == ["n1"] and fields["memory_per_node"] == "512M"
    assert fields["gres_per_node"] == {"gpu": 1} and fields["resource_sharing"] == "exclusive"
    assert fields["environment"]["USER"] == "alice"


def test_allocated_gpus(adapter: PySlurmAdapter) -> None:
    with_gpus = adapter.submit(spec(gpus_per_node=2))
    in_db = adapter.submit(spec(gpus_per_node=1, tag="t2"))  # odd id: only in the db
    without = adapter.submit(spec(tag="t3"))
    answer = adapter.status([with_gpus, in_db, without])
    assert answer[with_gpus].alloc_gpus == 4  # two nodes, two GPUs each
    assert answer[in_db].alloc_gpus == 2 and answer[without].alloc_gpus == 0


def test_rejection(adapter: PySlurmAdapter) -> None:
    with pytest.raises(SubmitRejected) as caught:
        adapter.submit(spec(account="bad"))
    assert caught.value.code == 2045


def test_status_live_and_from_db(adapter: PySlurmAdapter) -> None:
    ok = adapter.submit(spec())
    failed = adapter.submit(spec("exit 3", tag="t2"))  # odd id: only in the db
    answer = adapter.status([ok, failed, "5"])
    assert answer[ok].state is JobState.COMPLETED and answer[ok].nodes == ("n1", "n2")
    assert (answer[failed].state, answer[failed].exit_code) == (JobState.FAILED, 3)
    assert answer[ok].tag == "tg" and "5" not in answer
    tagged = adapter.list_tagged(datetime.now(UTC) - timedelta(minutes=1))
    assert set(tagged) == {"tg", "t2"}


def test_cancel_is_idempotent(adapter: PySlurmAdapter) -> None:
    job_id = adapter.submit(spec())
    adapter.cancel(job_id)
    adapter.cancel("424242")


def test_nodes_ping_drain(adapter: PySlurmAdapter) -> None:
    nodes = adapter.nodes()
    assert [(n.name, n.cpus, n.gpus, n.gpu_type) for n in nodes] == [
        ("n1", 8, 1, None),
        ("n2", 8, 2, "h200"),
    ]
    info = adapter.ping()
    assert info.version == "25.11.0" and info.partitions[0].idle_nodes == 2
    adapter.drain("n1", "slow")
    assert adapter.nodes()[0].state == "idle+drain" and adapter.nodes()[0].reason == "slow"
    adapter.resume("n1")
    assert adapter.nodes()[0].state == "idle"
