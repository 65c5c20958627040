"""The Slurm CLI adapter treats a controller that does not answer as an outage."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from scheduler_adapters import SchedulerUnavailable
from scheduler_adapters.slurm.cli import SlurmCliAdapter

# What 22.05's `squeue --json` prints, with exit status 0, while slurmctld is down.
DOWN = {
    "meta": {"plugin": {"type": "openapi/v0.0.38"}, "Slurm": {"release": "22.05.8"}},
    "errors": [
        {
            "description": "Failed while looking for jobs",
            "error_number": -1,
            "error": "Unspecified error",
            "source": "slurm_load_jobs",
        }
    ],
    "jobs": [],
}


def test_squeue_errors_with_exit_0_are_an_outage(tmp_path: Path) -> None:
    tool = tmp_path / "squeue"
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(DOWN)}\nEOF\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    adapter = SlurmCliAdapter("alpha", bin_dir=str(tmp_path))
    with pytest.raises(SchedulerUnavailable) as err:
        adapter.ping()
    assert err.value.transient and "Failed while looking for jobs" in str(err.value)
