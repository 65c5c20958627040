"""Measurement: run a kernel with warm-up and repeats, score it (HPCC counting) and check it.

Each ``run_*`` returns one result dict of the ``hpc-broker/kernels-result/1`` contract:
kernel, size, dtype, threads, repeat, best/median seconds, GFLOP/s or GB/s, and the
numerical residual scaled like HPCC with ``residual_ok`` saying it is under its threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from statistics import median
from typing import Any

import numpy as np

from kernels._jit import use_threads
from kernels._parallel import run
from kernels.fourier import aligned_empty, factor, fft
from kernels.matmul import gemm
from kernels.peak import flops_per_iteration, fma_probe
from kernels.stream import fill_streamed, triad

# Scaled-residual thresholds (HPL/HPCC use 16 for their scaled residuals).
GEMM_THRESHOLD = 16.0
FFT_THRESHOLD = 16.0
STREAM_THRESHOLD = 4.0  # in units of eps * |a|: the fused multiply-add rounds once
PEAK_THRESHOLD = 0.0  # the probe's sums are exact


def _times(fn: Callable[[], object], repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _result(
    kernel: str, size: int, dtype: str, threads: int, times: list[float], work: float,
    rate: str, residual: float, threshold: float,
) -> dict[str, Any]:  # fmt: skip
    best, med = min(times), median(times)
    r = {
        "kernel": kernel,
        "size": int(size),
        "dtype": dtype,
        "threads": int(threads),
        "repeat": len(times),
        "seconds_best": best,
        "seconds_median": med,
        "gflops_best": None,
        "gflops_median": None,
        "gbs_best": None,
        "gbs_median": None,
        "residual": residual if math.isfinite(residual) else None,
        "residual_ok": bool(math.isfinite(residual) and residual <= threshold),
        "residual_threshold": threshold,
    }
    r[f"{rate}_best"] = work / best / 1e9
    r[f"{rate}_median"] = work / med / 1e9
    return r


def _rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


def run_gemm(size: int, dtype: str, threads: int, repeat: int) -> dict[str, Any]:
    """C = A @ B for n x n; residual by Freivalds' check ||C x - A (B x)|| in HPL scaling."""
    dt = np.dtype(dtype)
    rng = _rng()
    a = rng.uniform(-0.5, 0.5, (size, size)).astype(dt)
    b = rng.uniform(-0.5, 0.5, (size, size)).astype(dt)
    times = _times(lambda: gemm(a, b, threads=threads), repeat)
    c = gemm(a, b, threads=threads).astype(np.float64)
    x = rng.uniform(-0.5, 0.5, size)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    r = np.abs(c @ x - a64 @ (b64 @ x)).max()
    norm_a = np.abs(a64).sum(axis=1).max()
    norm_b = np.abs(b64).sum(axis=1).max()
    eps = float(np.finfo(dt).eps)
    residual = float(r / (eps * size * norm_a * norm_b * np.abs(x).max()))
    return _result("gemm", size, dt.name, threads, times, 2.0 * size**3, "gflops", residual,
                   GEMM_THRESHOLD)  # fmt: skip


def run_fft(size: int, dtype: str, threads: int, repeat: int) -> dict[str, Any]:
    """One length-N transform; residual of the round trip as in HPCC's FFT test."""
    factor(size)
    dt = np.dtype(dtype)
    rng = _rng()
    x = (rng.uniform(-0.5, 0.5, size) + 1j * rng.uniform(-0.5, 0.5, size)).astype(dt)
    out = aligned_empty(size, dt).reshape(x.shape)  # as fft() allocates its output
    times = _times(lambda: fft(x, threads=threads, out=out), repeat)
    back = fft(fft(x, threads=threads), inverse=True, threads=threads)
    eps = float(np.finfo(dt).eps)
    residual = float(np.abs(back - x).max() / (eps * max(math.log2(size), 1.0)))
    return _result("fft", size, dt.name, threads, times, 5.0 * size * math.log2(max(size, 2)),
                   "gflops", residual, FFT_THRESHOLD)  # fmt: skip


def run_stream(size: int, dtype: str, threads: int, repeat: int) -> dict[str, Any]:
    """Triad a = b + 3c on arrays of ``size`` elements; 24 bytes moved per element."""
    dt = np.dtype(dtype)
    rng = _rng()
    b = rng.uniform(0.5, 1.0, size).astype(dt)
    c = rng.uniform(0.5, 1.0, size).astype(dt)
    a = np.zeros(size, dt)
    scalar = 3.0
    times = _times(lambda: triad(a, b, c, scalar, threads=threads), repeat)
    ref = b.astype(np.float64) + scalar * c.astype(np.float64)
    eps = float(np.finfo(dt).eps)
    residual = float(np.abs(a - ref).max() / (eps * np.abs(ref).max()))
    nbytes = 3.0 * dt.itemsize * size
    return _result("stream", size, dt.name, threads, times, nbytes, "gbs", residual,
                   STREAM_THRESHOLD)  # fmt: skip


def run_peak(size: int, dtype: str, threads: int, repeat: int) -> dict[str, Any]:
    """FMA probe, ``size`` loop iterations per thread; residual: error of its exact sums."""
    dt = np.dtype(dtype)
    fma_probe(threads, iters=1000, dtype=dt)
    times = []
    worst = 0.0
    fma_probe(threads, iters=size, dtype=dt)
    for _ in range(repeat):
        t, err = fma_probe(threads, iters=size, dtype=dt)
        times.append(t)
        worst = max(worst, err)
    work = float(flops_per_iteration(dt) * size * threads)
    return _result("peak", size, dt.name, threads, times, work, "gflops", worst, PEAK_THRESHOLD)


RUNNERS: dict[str, Callable[[int, str, int, int], dict[str, Any]]] = {
    "gemm": run_gemm,
    "fft": run_fft,
    "stream": run_stream,
    "peak": run_peak,
}


def store_rate(a: np.ndarray[Any, Any], *, threads: int | None = None, calls: int = 15) -> float:
    """GB/s at which ``threads`` threads, each an equal part, write ``a`` with non-temporal
    stores alone (median of ``calls`` back-to-back calls after three): the rate the memory
    system takes a streamed triad's output at, a third of the bytes the triad counts, so a
    bound on it. Writes 1.5 everywhere: streamed zeros ran at 89 GB/s on a 2-vCPU AMD EPYC
    Zen 4 KVM guest where other values ran at 28, as the triad's own output did."""
    if (not isinstance(a, np.ndarray) or a.ndim != 1 or not a.flags.c_contiguous
            or a.dtype not in (np.float32, np.float64) or not a.flags.writeable):  # fmt: skip
        raise ValueError("store_rate needs a writeable 1-D contiguous float32/float64 array")
    if calls < 1:
        raise ValueError(f"store_rate needs calls >= 1, got {calls}")
    nthreads = use_threads(threads)
    parts = [(fill_streamed, (part, 1.5)) for part in np.array_split(a, nthreads)]
    return a.nbytes / median(_times(lambda: run(parts), calls, warmup=3)) / 1e9
