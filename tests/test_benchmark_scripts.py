"""The benchmark scripts still run (tiny sizes): a figure nobody can reproduce is no figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_statements_benchmark_runs_and_checks_its_totals() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/statements_1m.py", "--records", "3000", "--baseline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("head", "0005"))]
    assert [r[0] for r in rows] == ["head", "0005"]
    assert all(r[-1] == "True" for r in rows)  # statement totals equal the priced lines
