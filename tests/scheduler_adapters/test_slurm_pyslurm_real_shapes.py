"""The pyslurm adapter on the shapes of the real pyslurm 25.11 (seen live on gamma).

Its collections (Jobs, Nodes, db.Jobs) are MultiClusterMaps: not Mappings, iterating them
yields keys, ``values()`` the objects. ``Job.exit_code`` is already decoded (3 for
``exit 3``) with the signal in ``exit_code_signal``. libslurm reads ``SLURM_CONF`` once,
when pyslurm is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler_adapters import AdapterConfigError, JobState
from scheduler_adapters.slurm import pyslurm as adapter_module
from scheduler_adapters.slurm.pyslurm import PySlurmAdapter


class MultiClusterMap:
    def __init__(self, items: dict[Any, Any]) -> None:
        self._items = items

    def __iter__(self) -> Any:
        return iter(self._items)  # keys, like pyslurm's

    def values(self) -> list[Any]:
        return list(self._items.values())


def job(job_id: int, state: str, exit_code: int, signal: int) -> SimpleNamespace:
    return SimpleNamespace(
        id=job_id,
        state=state,
        cluster="gamma",
        comment="broker:t",
        exit_code=exit_code,
        exit_code_signal=signal,
        start_time=100,
        end_time=103,
        run_time=3,
        allocated_nodes="gamma[1-2]",
        state_reason="None",
        submit_time=99,
        name="n",
        account="a",
        partition="batch",
        user_name="u",
    )


def test_multicluster_maps_and_decoded_exit_codes() -> None:
    jobs = MultiClusterMap(
        {1: job(1, "FAILED", 3, 0), 2: job(2, "CANCELLED", 0, 15), 3: job(3, "COMPLETED", 0, 0)}
    )
    # Ended jobs are looked up in accounting too; slurmdbd has no record of them yet
    # here, so each is settled from the controller's record.
    asked: list[Any] = []
    db = SimpleNamespace(
        JobFilter=lambda **kw: kw,
        Jobs=SimpleNamespace(load=lambda flt: asked.append(flt) or MultiClusterMap({})),
    )
    fake = SimpleNamespace(Jobs=SimpleNamespace(load=lambda: jobs), db=db)
    adapter = PySlurmAdapter.__new__(PySlurmAdapter)
    adapter.cluster, adapter.slurm_cluster, adapter._ps = "gamma", "gamma", fake  # type: ignore[assignment]
    found = adapter.status(["1", "2", "3"])
    assert found["1"].state is JobState.FAILED and found["1"].exit_code == 3
    assert found["2"].exit_code == 128 + 15
    assert found["3"].exit_code == 0 and found["3"].nodes == ("gamma1", "gamma2")
    assert asked == [{"ids": [1, 2, 3]}]


def test_slurm_conf_is_set_for_the_first_import_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_libslurm_reader.py").write_text(
        "import os\nCONF = os.environ.get('SLURM_CONF')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/other.conf")
    monkeypatch.setattr(adapter_module, "_LOADED_CONF", {})
    monkeypatch.delitem(sys.modules, "fake_libslurm_reader", raising=False)
    made = PySlurmAdapter("g", module="fake_libslurm_reader", slurm_conf="/etc/g/slurm.conf")
    assert made._ps.CONF == "/etc/g/slurm.conf"
    assert os.environ["SLURM_CONF"] == "/etc/slurm/other.conf"  # restored
    PySlurmAdapter("g2", module="fake_libslurm_reader", slurm_conf="/etc/g/slurm.conf")
    with pytest.raises(AdapterConfigError, match="one pyslurm cluster per broker process"):
        PySlurmAdapter("h", module="fake_libslurm_reader", slurm_conf="/etc/h/slurm.conf")
    sys.modules.pop("fake_libslurm_reader", None)
