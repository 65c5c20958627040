"""GPU kernels against numpy under numba's CUDA simulator (no GPU needed), and the
``validate --gpu`` document. Each case runs in a subprocess with NUMBA_ENABLE_CUDASIM=1:
the simulator is chosen when numba.cuda is first imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("numba.cuda")

CHECK = r"""
import json, numpy as np
from kernels import gpu
out = {}
rng = np.random.default_rng(0)
for dt in ("float64", "float32"):
    errs = []
    # one partial tile; K not a multiple of BK; several blocks in both directions, M != N
    for m, k, n in ((5, 3, 7), (66, 20, 65)):
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        c = gpu.gemm(a, b)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        scale = np.abs(a).max() * np.abs(b).max() * k * np.finfo(dt).eps
        errs.append(float(np.abs(c - ref).max() / scale))
        assert c.dtype == np.dtype(dt) and c.shape == (m, n)
    out["gemm_" + dt] = errs
b = rng.random(1000); c = rng.random(1000)
out["triad"] = float(np.abs(gpu.triad(b, c, 2.5) - (b + 2.5 * c)).max())
sums, exact = gpu.probe(1, 30)
out["probe"] = [float(np.abs(sums - exact).max()), float(exact), int(sums.size)]
out["devices"] = gpu.devices()
print(json.dumps(out))
"""


def _sim(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def test_gpu_kernels_match_numpy_under_the_simulator() -> None:
    proc = _sim(["-c", CHECK])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    for dt in ("float64", "float32"):
        assert all(e <= 4.0 for e in out[f"gemm_{dt}"]), out
    assert out["triad"] <= 1e-15 * 4
    err, exact, threads = out["probe"]
    assert err == 0.0 and exact > 0 and threads == 256
    assert len(out["devices"]) == 1 and out["devices"][0]["index"] == 0


def _check_result(r: dict[str, Any]) -> None:
    assert r["kernel"] in {"gemm", "stream", "peak"}
    assert r["residual_ok"], r
    assert r["threads"] >= 1 and r["repeat"] == 1
    assert (r["gflops_median"] or r["gbs_median"]) > 0


def test_validate_gpu_document() -> None:
    proc = _sim(["-m", "kernels", "validate", "--quick", "--gpu", "--json", "--repeat", "1",
                 "--threads", "1"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "hpc-broker/kernels-validate/1"
    assert [r["kernel"] for r in doc["results"]] == ["gemm", "fft", "stream", "peak"]
    (g,) = doc["gpus"]
    assert g["index"] == 0 and g["simulated"] is True and g["uuid"]
    assert [(r["kernel"], r["dtype"]) for r in g["results"]] == [
        ("gemm", "float64"),
        ("gemm", "float32"),
        ("stream", "float64"),
        ("peak", "float64"),
    ]
    for r in g["results"]:
        _check_result(r)
    assert set(g["peak_gflops"]) == {"fp64", "fp32"}


def test_peak_from_the_architecture() -> None:
    from kernels.gpu import peak_gflops

    h200 = {"compute_capability": "9.0", "sms": 132, "clock_khz": 1_980_000}
    peak = peak_gflops(h200)
    assert peak["fp64"] == pytest.approx(33_454, rel=1e-3)  # 33.5 TFLOP/s vector FP64
    assert peak["fp32"] == pytest.approx(2 * peak["fp64"])  # type: ignore[operator]
    assert peak_gflops({"compute_capability": "5.2", "sms": 0, "clock_khz": 0}) == {
        "fp64": None, "fp32": None}  # fmt: skip


def test_import_kernels_loads_no_cuda() -> None:
    code = "import sys, kernels, kernels.cli; print('numba.cuda' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "False"


def test_the_simulator_stands_in_for_each_listed_gpu() -> None:
    """On a fake-GPU node the allocation lists several GPUs: the simulator measures each."""
    code = "import json; from kernels import gpu; print(json.dumps(gpu.devices()))"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "CUDA_VISIBLE_DEVICES": "3,5"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [d["index"] for d in json.loads(proc.stdout)] == [0, 1]
