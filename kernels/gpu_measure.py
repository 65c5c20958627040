"""Per-GPU validation: every visible GPU runs the GPU kernels, scored like the CPU ones.

Each GPU's entry in ``validate --gpu``'s ``gpus`` list: index, name, uuid, compute
capability, SM count, clock, the vector FP64/FP32 peak derived from them, and ``results``
in the ``hpc-broker/kernels-result/1`` shape (kernel gemm/stream/peak, size, dtype,
``threads`` = GPU threads launched, seconds, GFLOP/s or GB/s, residual and verdict).
"""

from __future__ import annotations

import math
from typing import Any

from kernels import gpu
from kernels.measure import GEMM_THRESHOLD, PEAK_THRESHOLD, STREAM_THRESHOLD, _result

# (full, quick) sizes: GEMM n, triad elements, FMA-probe blocks per SM and iterations.
# Quick sizes are what the CUDA simulator can run in seconds.
GEMM_N = (8192, 48)
TRIAD_N = (1 << 28, 2048)
PROBE = ((16, 100_000), (1, 20))


def _gemm_threads(n: int) -> int:
    return math.ceil(n / gpu.BN) * math.ceil(n / gpu.BM) * gpu.TX * gpu.TY


def measure_device(info: dict[str, Any], quick: bool, repeat: int) -> list[dict[str, Any]]:
    """Run every GPU kernel on the current device."""
    idx = 1 if quick else 0
    out = []
    n = GEMM_N[idx]
    for dtype in ("float64", "float32"):
        times, work, residual = gpu.run_gemm(n, dtype, repeat)
        out.append(_result("gemm", n, dtype, _gemm_threads(n), times, work, "gflops", residual,
                           GEMM_THRESHOLD))  # fmt: skip
    size = TRIAD_N[idx]
    times, work, residual = gpu.run_triad(size, "float64", repeat)
    threads = min(math.ceil(size / gpu.TRIAD_THREADS), 65535) * gpu.TRIAD_THREADS
    out.append(_result("stream", size, "float64", threads, times, work, "gbs", residual,
                       STREAM_THRESHOLD))  # fmt: skip
    per_sm, iters = PROBE[idx]
    blocks = max(1, per_sm * int(info.get("sms") or 1)) if not quick else 1
    times, work, err = gpu.run_peak(blocks, "float64", repeat, iters)
    out.append(_result("peak", iters, "float64", blocks * gpu.PROBE_THREADS, times, work,
                       "gflops", err, PEAK_THRESHOLD))  # fmt: skip
    return out


def validate_gpus(quick: bool, repeat: int) -> list[dict[str, Any]]:
    """Every GPU this process may use, each with its results."""
    docs = []
    for info, dev in zip(gpu.devices(), gpu.contexts(), strict=True):
        with dev:
            results = measure_device(info, quick, repeat)
        docs.append({**info, "simulated": gpu.simulated(),
                     "peak_gflops": gpu.peak_gflops(info), "results": results})  # fmt: skip
    return docs
