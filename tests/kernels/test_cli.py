"""The CLI's JSON contract (hpc-broker/kernels-*/1), exit codes and thread defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kernels import cli

RESULT_FIELDS: dict[str, Any] = {
    "kernel": str, "size": int, "dtype": str, "threads": int, "repeat": int,
    "seconds_best": float, "seconds_median": float, "gflops_best": (float, type(None)),
    "gflops_median": (float, type(None)), "gbs_best": (float, type(None)),
    "gbs_median": (float, type(None)), "residual": (float, type(None)), "residual_ok": bool,
}  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def _check_result(r: dict[str, Any]) -> None:
    for key, typ in RESULT_FIELDS.items():
        assert key in r, key
        assert isinstance(r[key], typ), (key, r[key])
    assert r["kernel"] in {"gemm", "fft", "stream", "peak"}
    assert r["seconds_best"] <= r["seconds_median"]
    if r["kernel"] == "stream":
        assert r["gbs_median"] > 0 and r["gflops_median"] is None
    else:
        assert r["gflops_median"] > 0 and r["gbs_median"] is None
    assert r["residual_ok"], r


def _check_header(doc: dict[str, Any]) -> None:
    assert isinstance(doc["host"], str) and doc["host"]
    assert isinstance(doc["cpu"], str)
    for key in ("python", "numpy", "numba", "kernels"):
        assert isinstance(doc["versions"][key], str)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_quick_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, ["validate", "--quick", "--json", "--threads", "1"])
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "hpc-broker/kernels-validate/1"
    _check_header(doc)
    assert doc["threads"] == 1
    started = datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00"))
    assert started.utcoffset() is not None and started.utcoffset().total_seconds() == 0
    assert isinstance(doc["seconds"], float) and doc["seconds"] > 0
    assert [r["kernel"] for r in doc["results"]] == ["gemm", "fft", "stream", "peak"]
    for r in doc["results"]:
        _check_result(r)
        assert r["threads"] == 1


@pytest.mark.parametrize(
    ("argv", "kernel", "dtype"),
    [(["gemm", "--size", "100", "--dtype", "float32"], "gemm", "float32"),
     (["fft", "--size", "3000"], "fft", "complex128"),
     (["fft", "--size", "1024", "--dtype", "complex64"], "fft", "complex64"),
     (["stream", "--size", "100000"], "stream", "float64"),
     (["peak", "--size", "10000"], "peak", "float64")],
)  # fmt: skip
def test_single_kernel_json(
    capsys: pytest.CaptureFixture[str], argv: list[str], kernel: str, dtype: str
) -> None:
    code, out, _ = _run(capsys, [*argv, "--json", "--repeat", "2", "--threads", "2"])
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "hpc-broker/kernels-result/1"
    _check_header(doc)
    _check_result(doc)
    assert (doc["kernel"], doc["dtype"], doc["repeat"]) == (kernel, dtype, 2)


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, ["gemm", "--size", "64", "--repeat", "1"])
    assert code == 0
    assert out.startswith("gemm") and "GFLOP/s" in out


@pytest.mark.parametrize(
    "argv",
    [["validate", "--threads", "0"], ["fft", "--size", "7"], ["gemm", "--size", "0"],
     ["stream", "--repeat", "0"]],
)  # fmt: skip
def test_bad_arguments_exit_nonzero(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = _run(capsys, argv)
    assert code != 0
    assert out == ""
    assert "error" in err


@pytest.mark.parametrize("argv", [["nosuch"], ["gemm", "--size", "x"], ["fft", "--dtype", "int"]])
def test_argparse_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err


def test_default_threads_follow_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "3")
    assert cli.default_threads() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cli.default_threads() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.delenv("SLURM_CPUS_ON_NODE")
    assert cli.default_threads() == len(os.sched_getaffinity(0))


def test_validate_threads_default_from_slurm(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    code, out, _ = _run(capsys, ["validate", "--quick", "--json", "--repeat", "1"])
    assert code == 0
    doc = json.loads(out)
    assert doc["threads"] == 1
    assert all(r["threads"] == 1 for r in doc["results"])


def test_module_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kernels", "validate", "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "hpc-broker/kernels-validate/1"
    assert len(doc["results"]) == 4
