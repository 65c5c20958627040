"""The device code of kernels.gpu (numba-cuda), kept apart so that the CUDA simulator can
swap its ``cuda`` global: it replaces module globals bound to numba.cuda, not closures."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from numba import cuda

from kernels.gpu_config import BK, BM, BN, PROBE_THREADS, RM, RN, TX, TY

__all__ = ["PROBE_THREADS", "gemm_kernel", "probe_kernel", "triad_kernel"]


@lru_cache(maxsize=4)
def gemm_kernel(dtype_name: str) -> Any:
    """The tiled GEMM kernel for one dtype (shared-array dtypes are compile-time)."""
    from numba import float32, float64

    nb_t = float64 if dtype_name == "float64" else float32

    @cuda.jit(fastmath=False)  # type: ignore[misc]
    def gemm_tiled(a: Any, b: Any, c: Any) -> None:  # pragma: no cover - runs on the device
        m, k = a.shape
        n = b.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        row0 = cuda.blockIdx.y * BM
        col0 = cuda.blockIdx.x * BN
        a_s = cuda.shared.array((BK, BM), nb_t)  # A slice, transposed: a_s[p, i] = A[i, p]
        b_s = cuda.shared.array((BK, BN), nb_t)
        acc = cuda.local.array((RM, RN), nb_t)
        af = cuda.local.array(RM, nb_t)
        bf = cuda.local.array(RN, nb_t)
        for i in range(RM):
            for j in range(RN):
                acc[i, j] = 0
        for p0 in range(0, k, BK):
            for e in range(tid, BM * BK, TX * TY):  # A[row0 + i, p0 + p], p fastest
                i = e // BK
                p = e % BK
                r = row0 + i
                q = p0 + p
                a_s[p, i] = a[r, q] if r < m and q < k else 0
            for e in range(tid, BK * BN, TX * TY):  # B[p0 + p, col0 + j], j fastest
                p = e // BN
                j = e % BN
                q = p0 + p
                col = col0 + j
                b_s[p, j] = b[q, col] if q < k and col < n else 0
            cuda.syncthreads()
            for p in range(BK):
                for i in range(RM):
                    af[i] = a_s[p, ty * RM + i]
                for j in range(RN):
                    bf[j] = b_s[p, tx * RN + j]
                for i in range(RM):
                    for j in range(RN):
                        acc[i, j] += af[i] * bf[j]
            cuda.syncthreads()
        for i in range(RM):
            r = row0 + ty * RM + i
            if r < m:
                for j in range(RN):
                    col = col0 + tx * RN + j
                    if col < n:
                        c[r, col] = acc[i, j]

    return gemm_tiled


@lru_cache(maxsize=1)
def triad_kernel() -> Any:

    @cuda.jit  # type: ignore[misc]
    def triad(a: Any, b: Any, c: Any, s: float) -> None:  # pragma: no cover - device code
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        while i < a.shape[0]:
            a[i] = b[i] + s * c[i]
            i += stride

    return triad


@lru_cache(maxsize=1)
def probe_kernel() -> Any:

    @cuda.jit  # type: ignore[misc]
    def probe(x: Any, iters: int, out: Any) -> None:  # pragma: no cover - device code
        a = x[0]
        b = x[1]
        c0 = x[2]
        c1 = c0
        c2 = c0
        c3 = c0
        c4 = c0
        c5 = c0
        c6 = c0
        c7 = c0
        for _ in range(iters):
            c0 = cuda.fma(a, b, c0)
            c1 = cuda.fma(a, b, c1)
            c2 = cuda.fma(a, b, c2)
            c3 = cuda.fma(a, b, c3)
            c4 = cuda.fma(a, b, c4)
            c5 = cuda.fma(a, b, c5)
            c6 = cuda.fma(a, b, c6)
            c7 = cuda.fma(a, b, c7)
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7))

    return probe
