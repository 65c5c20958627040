"""slurm-cli asks sacct for times that do not depend on the broker's or the host's zone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler_adapters.slurm.cli import SlurmCliAdapter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm" / "22.05"


@pytest.fixture
def far_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The broker process runs in a zone far from UTC (and from the host's)."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_list_tagged_asks_sacct_in_utc(tmp_path: Path, far_zone: None) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, fixture in (("sacct", "sacct.json"), ("squeue", "squeue_finished.json")):
        path = bin_dir / tool
        path.write_text(
            f'#!/bin/bash\necho "$0 TZ=$TZ $*" >> {bin_dir}/calls.log\ncat {FIXTURES / fixture}\n'
        )
        path.chmod(0o755)
    adapter = SlurmCliAdapter("alpha", bin_dir=str(bin_dir))
    adapter.list_tagged(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    sacct = next(ln for ln in (bin_dir / "calls.log").read_text().splitlines() if "sacct" in ln)
    argv = sacct.split()
    assert "TZ=UTC" in argv
    assert argv[argv.index("-S") + 1] == "2026-01-02T03:04:05"
