"""The benchmark scripts still run (tiny sizes): a figure nobody can reproduce is no figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL_LOAD = ["--seconds", "1", "--clients", "2", "--api-workers", "1", "2", "--tenants", "2"]


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


@pytest.mark.postgres
def test_submit_load_benchmark_runs() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/submit_load.py", *SMALL_LOAD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("pg api")]
    # closed loop and paced, per process count; every submission accepted
    assert [(r[2], r[4]) for r in rows] == [
        ("x1", "clients"),
        ("x1", "paced"),
        ("x2", "clients"),
        ("x2", "paced"),
    ]
    assert all(float(r[5]) > 0 and r[-1] == "0" for r in rows), out
