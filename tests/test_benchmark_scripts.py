"""The benchmark scripts still run (tiny sizes): a figure nobody can reproduce is no figure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL_LOAD = [
    *("--seconds", "1", "--paced-seconds", "1", "--repeat", "1", "--paced", "0.5"),
    *("--api-workers", "1", "2", "--tenants", "1", "3", "--no-slurmrestd"),
]


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
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (deploy/test.sh)")
def test_submit_load_benchmark_runs() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/submit_load.py", *SMALL_LOAD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    ).stdout
    assert out.startswith("CPU: ")
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("broker x")]
    # closed loop per process count and tenant count, every submission accepted, and
    # CPU per accepted job of the API processes and PostgreSQL
    labels = [" ".join(r[:4]) for r in rows if r[4].isdigit()]
    assert labels == ["broker x1 1 ent", "broker x1 3 ent", "broker x2 1 ent", "broker x2 3 ent"]
    for r in (r for r in rows if r[4].isdigit()):
        assert float(r[5]) > 0 and r[8] == "0", out
    assert "api" in out and "postgres" in out
    # of the API processes' CPU, their batch writer threads' (the rest their event loops')
    split = re.findall(r"^broker x.* api ([\d.]+), api writer thread ([\d.]+),", out, re.M)
    assert len(split) == 4 and all(0 < float(w) < float(a) for a, w in split), out
    # each broker row: the API processes' batches (from their /metrics)
    per_batch = re.findall(r"^broker x.*; batches: ([\d.]+) jobs, writer ([\d.]+) ms$", out, re.M)
    assert len(per_batch) == 4 and all(float(j) >= 1 and float(ms) > 0 for j, ms in per_batch), out
    paced = [ln.split() for ln in out.splitlines() if ln.startswith("50% of peak")]
    assert len(paced) == 1 and float(paced[0][4]) > 0, out
