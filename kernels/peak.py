"""FMA probe: the vector fused multiply-add throughput a node delivers right now.

Each thread runs chains of independent FMAs on registers (no memory traffic), enough of
them to cover the FMA latency on every pipe; the count of floating-point operations
(2 per lane per FMA) over the wall time is the node's FP peak in GFLOP/s.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numba import prange

from kernels._jit import jit, use_threads
from kernels._simd import vadd, vfma, vlanes, vload, vsum, vzero

CHAINS = 12  # independent accumulators: >= latency (4) x pipes (2), with margin
B_VALUE = 2.0**-20  # every partial sum iters * B_VALUE is exact in float32 and float64


@jit()
def _chains(x: Any, iters: int) -> float:
    a = vload(x, 0)
    b = vload(x, vlanes(x))
    # fmt: off
    c0 = vzero(x); c1 = vzero(x); c2 = vzero(x); c3 = vzero(x)  # noqa: E702
    c4 = vzero(x); c5 = vzero(x); c6 = vzero(x); c7 = vzero(x)  # noqa: E702
    c8 = vzero(x); c9 = vzero(x); c10 = vzero(x); c11 = vzero(x)  # noqa: E702
    for _ in range(iters):
        c0 = vfma(a, b, c0); c1 = vfma(a, b, c1); c2 = vfma(a, b, c2)  # noqa: E702
        c3 = vfma(a, b, c3); c4 = vfma(a, b, c4); c5 = vfma(a, b, c5)  # noqa: E702
        c6 = vfma(a, b, c6); c7 = vfma(a, b, c7); c8 = vfma(a, b, c8)  # noqa: E702
        c9 = vfma(a, b, c9); c10 = vfma(a, b, c10); c11 = vfma(a, b, c11)  # noqa: E702
    # fmt: on
    s = vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(c4, c5), vadd(c6, c7)))
    return vsum(vadd(s, vadd(vadd(c8, c9), vadd(c10, c11))))  # type: ignore[no-any-return]


@jit(parallel=True)
def _probe(x: Any, iters: int, threads: int) -> Any:
    out = np.zeros(threads)
    for t in prange(threads):
        out[t] = _chains(x, iters)
    return out


def flops_per_iteration(dtype: Any = np.float64) -> int:
    """Floating-point operations per thread per loop iteration of the probe."""
    from kernels._simd import lanes

    return 2 * CHAINS * lanes(np.dtype(dtype).itemsize)


def fma_probe(
    threads: int | None = None, *, iters: int = 2_000_000, dtype: Any = np.float64
) -> tuple[float, float]:
    """Run the probe once: (seconds, relative error of the accumulated sums)."""
    from kernels._simd import lanes

    nthreads = use_threads(threads)
    w = lanes(np.dtype(dtype).itemsize)
    x = np.concatenate([np.ones(w), np.full(w, B_VALUE)]).astype(dtype)
    t0 = time.perf_counter()
    sums = _probe(x, int(iters), nthreads)
    seconds = time.perf_counter() - t0
    expected = CHAINS * w * iters * B_VALUE
    err = float(np.max(np.abs(sums - expected)) / expected)
    return seconds, err


def fma_peak(threads: int | None = None, *, seconds: float = 0.2, dtype: Any = np.float64) -> float:
    """GFLOP/s of vector FMAs on ``threads`` threads (best of a few runs of ~``seconds``)."""
    nthreads = use_threads(threads)
    fpi = flops_per_iteration(dtype)
    fma_probe(nthreads, iters=1000, dtype=dtype)  # compile / warm up
    t, _ = fma_probe(nthreads, iters=1_000_000, dtype=dtype)
    iters = max(1000, int(1_000_000 * seconds / 3 / max(t, 1e-6)))
    best = 0.0
    for _ in range(3):
        t, _ = fma_probe(nthreads, iters=iters, dtype=dtype)
        best = max(best, fpi * iters * nthreads / t / 1e9)
    return best
