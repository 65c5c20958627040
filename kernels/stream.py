"""STREAM triad: a = b + scalar * c, in place, split across threads.

Large arrays are written with non-temporal stores: the destination is not read first,
so the memory system moves the 24 bytes per element that STREAM counts, not 32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from kernels._jit import jit, use_threads
from kernels._simd import fence, misalignment, vfma, vlanes, vload, vsplat, vstore, vstore_stream

STREAMING_BYTES = 4 << 20  # below this per array, ordinary stores (the data fits in cache)


@jit(parallel=True)
def _triad_core(a: Any, b: Any, c: Any, s: float, threads: int, stream: bool) -> None:
    n = a.shape[0]
    w = vlanes(a)
    head = min(misalignment(a), n)
    for i in range(head):
        a[i] = b[i] + s * c[i]
    body = (n - head) // w
    per = (body + threads - 1) // threads
    for t in prange(threads):
        lo = head + t * per * w
        hi = min(head + (t + 1) * per * w, head + body * w)
        sv = vsplat(a, s)
        if stream:
            for i in range(lo, hi, w):
                vstore_stream(a, i, vfma(sv, vload(c, i), vload(b, i)))
        else:
            for i in range(lo, hi, w):
                vstore(a, i, vfma(sv, vload(c, i), vload(b, i)))
    for i in range(head + body * w, n):
        a[i] = b[i] + s * c[i]
    if stream:
        fence()


def triad(
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    c: np.ndarray[Any, Any],
    scalar: float,
    *,
    threads: int | None = None,
) -> np.ndarray[Any, Any]:
    """a[:] = b + scalar * c for 1-D contiguous float32/float64 arrays of one length;
    returns a. The multiply-add is fused (one rounding)."""
    for name, arr in (("a", a), ("b", b), ("c", c)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or not arr.flags.c_contiguous:
            raise ValueError(f"triad needs 1-D contiguous arrays; {name} is not")
    if not (a.dtype == b.dtype == c.dtype) or a.dtype not in (np.float32, np.float64):
        raise TypeError("triad needs three float32 or three float64 arrays")
    if not (a.shape == b.shape == c.shape):
        raise ValueError(f"triad arrays differ in length: {a.shape}, {b.shape}, {c.shape}")
    if not a.flags.writeable:
        raise ValueError("triad writes into a, which is read-only")
    nthreads = use_threads(threads)
    _triad_core(a, b, c, scalar, nthreads, a.nbytes >= STREAMING_BYTES)
    return a
