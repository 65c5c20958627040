"""STREAM triad: a = b + scalar * c, in place, split across threads.

Large arrays are written with non-temporal stores: the destination is not read first,
so the memory system moves the 24 bytes per element that STREAM counts, not 32. Threads
take chunks from a shared counter (kernels._parallel): on a busy host a thread that
starts late takes fewer, and one that has not started when the rest is done is dropped.
fill_streamed makes those stores alone, for kernels.measure.store_rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels._jit import jit, use_threads
from kernels._parallel import atomic_add, run
from kernels._simd import fence, misalignment, vfma, vlanes, vload, vsplat, vstore, vstore_stream

STREAMING_BYTES = 4 << 20  # below this per array, ordinary stores (the data fits in cache)
CHUNK_BYTES = 256 << 10  # of each array: the unit threads take from a shared counter
# Bytes moved by one call (three arrays) below which one thread does it all: a second
# thread that the OS preempts while it holds a chunk holds the call up for a time slice,
# milliseconds beside a 24 MiB triad's 0.3-0.5. 2-vCPU AMD EPYC (Zen 4) VM under others'
# load (2-5), GB/s, 1 thread vs 2, eight interleaved runs at 1M doubles (24 MiB): 45.6 vs
# 43.4, 48.0 vs 44.0, 62.6 vs 38.2, 74.8 vs 31.6, 30.0 vs 25.4, 41.0 vs 33.6, 20.7 vs
# 20.1, 46.5 vs 42-44; at 2M (48 MiB) 31.4 vs 30.4, 32.4 vs 29.5, 31.4 vs 30.7; at load
# 0.5-0.8, each call after a 0.15 s pause as the benchmark's threaded rows: 1M 35.6 vs
# 32.6, 37.1 vs 33.8, 39.3 vs 37.3; 2M 32.6 vs 30.6, 26.3 vs 27.1, 35.8 vs 34.4. From 4M
# on it was mixed (two threads ahead in three runs of six), so two threads stay there.
PARALLEL_BYTES = 64 << 20
# Successive calls sweep the arrays in opposite directions, so that a call first reads
# the lines the previous call read last, those most likely still in cache: swept one way
# only, arrays a little larger than the cache left them are evicted, least recently used
# first, just before they are read again. Flipped per call, shared by the threads.
_sweep = [False]


@jit()
def _triad_part(a: Any, b: Any, c: Any, s: float, sync: Any, threads: int, stream: bool,
                chunk: int, edges: bool, back: bool) -> None:  # fmt: skip
    """The vector-aligned body in chunks of ``chunk`` elements (a multiple of the lanes):
    all of them (``threads`` 1) or those this thread takes from the counter ``sync[0]``;
    with ``edges``, the unaligned head and the tail too. ``back``: from the last chunk to
    the first, each from its end."""
    n = a.shape[0]
    w = vlanes(a)
    head = min(misalignment(a), n)
    body = (n - head) // w * w
    if edges:
        for i in range(head):
            a[i] = b[i] + s * c[i]
        for i in range(head + body, n):
            a[i] = b[i] + s * c[i]
    sv = vsplat(a, s)
    nchunks = (body + chunk - 1) // chunk
    k = 0 if threads == 1 else atomic_add(sync, 0, 1)
    while k < nchunks:
        lo = head + (nchunks - 1 - k if back else k) * chunk
        hi = min(lo + chunk, head + body)
        first, stop, step = (hi - w, lo - 1, -w) if back else (lo, hi, w)
        if stream:
            for i in range(first, stop, step):
                vstore_stream(a, i, vfma(sv, vload(c, i), vload(b, i)))
        else:
            for i in range(first, stop, step):
                vstore(a, i, vfma(sv, vload(c, i), vload(b, i)))
        k = k + 1 if threads == 1 else atomic_add(sync, 0, 1)
    if stream:
        fence()


@jit()
def fill_streamed(a: Any, x: float) -> None:
    """a[:] = x, the vector-aligned body with non-temporal stores (as the triad writes a):
    kernels.measure.store_rate times it."""
    n = a.shape[0]
    w = vlanes(a)
    head = min(misalignment(a), n)
    body = (n - head) // w * w
    for i in range(head):
        a[i] = x
    for i in range(head + body, n):
        a[i] = x
    v = vsplat(a, x)
    for i in range(head, head + body, w):
        vstore_stream(a, i, v)
    fence()


def triad_threads(nbytes: int, threads: int) -> int:
    """The threads a triad of arrays of ``nbytes`` each runs on when given ``threads``:
    one below PARALLEL_BYTES moved."""
    return 1 if 3 * nbytes < PARALLEL_BYTES else threads


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
    nthreads = triad_threads(a.nbytes, use_threads(threads))
    stream = a.nbytes >= STREAMING_BYTES
    chunk = CHUNK_BYTES // a.itemsize
    sync = np.zeros(1, np.int64)
    back = _sweep[0] = not _sweep[0]
    run([(_triad_part, (a, b, c, float(scalar), sync, nthreads, stream, chunk, t == 0, back))
         for t in range(nthreads)], skip_late=True)  # fmt: skip
    return a
