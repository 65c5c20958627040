"""GEMM: C = A @ B for float32/float64, packed and register-tiled (BLIS loop order).

Loop nest, outermost first: jc over NC columns of B; pc over KC rows of B (pack that
KC x NC panel of B, shared by all threads); ic over row chunks of A (at most MC rows, taken
by the threads from a shared counter; pack that chunk x KC block of A); jr over NR-column
strips; ir over MR-row strips; then the micro-kernel, which keeps an MR x NR tile of C in
registers for the whole KC loop. The B micro-panel (KC x NR) stays in L1, the A block in L2.
An A-resident kernel (Intel's default, see kernels._cpu) runs OpenBLAS's order instead: each
thread packs a row chunk of A, then B panel by B panel (KC x NC, in L2) with ir outer and jr
inner, so an A micro-panel stays in L1 while the B micro-panels stream past (``_a_resident``).
Threads are Python threads running one compiled worker (see kernels._parallel).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import literally, typeof, types
from numba.extending import overload

from kernels import _cpu
from kernels._cpu import Kernel
from kernels._jit import OPTIONS, jit, use_threads
from kernels._parallel import atomic_add, run, wait_for
from kernels._simd import (
    kern_field,
    prefetch,
    prefetch_l2,
    prefetch_r,
    vadd,
    vfma,
    vstore,
    wbcast,
    wlanes,
    wload,
    wzero,
)

PACK_GROUP = 8  # strips of B packed together, reading 8 x NR contiguous elements


@jit()
def _put(c: Any, co: int, v: Any, first: bool, kern: int) -> None:
    if first:
        vstore(c, co, v)
    else:
        vstore(c, co, vadd(wload(c, co, kern), v))


@jit()
def _put3(c: Any, co: int, w: int, v0: Any, v1: Any, v2: Any, first: bool, kern: int) -> None:
    """One row of a three-vector tile: ``_put`` at co, co + w and co + 2w."""
    _put(c, co, v0, first, kern)
    _put(c, co + w, v1, first, kern)
    _put(c, co + 2 * w, v2, first, kern)


@jit()
def _ukernel_6x2(kc: int, ap: Any, ao: int, bp: Any, bo: int, c: Any, co: int, ldc: int,
                 first: bool, kern: int) -> None:  # fmt: skip
    """C[co:...] (+)= A micro-panel (kc x 6) times B micro-panel (kc x 2 vectors)."""
    w = wlanes(ap, kern)
    r = co
    for _ in range(6):  # the C tile is needed only after the k loop: fetch it meanwhile
        prefetch(c, r)
        prefetch(c, r + 2 * w - 1)
        r += ldc
    # fmt: off
    c00 = wzero(ap, kern); c01 = wzero(ap, kern); c10 = wzero(ap, kern)  # noqa: E702
    c11 = wzero(ap, kern); c20 = wzero(ap, kern); c21 = wzero(ap, kern)  # noqa: E702
    c30 = wzero(ap, kern); c31 = wzero(ap, kern); c40 = wzero(ap, kern)  # noqa: E702
    c41 = wzero(ap, kern); c50 = wzero(ap, kern); c51 = wzero(ap, kern)  # noqa: E702
    nxt = kc * 2 * w  # the next B micro-panel, fetched from L3 while this one is in use
    for _ in range(kc):
        prefetch_r(ap, ao + 64)
        prefetch_l2(bp, bo + nxt)
        b0 = wload(bp, bo, kern)
        b1 = wload(bp, bo + w, kern)
        a = wbcast(ap, ao, kern); c00 = vfma(a, b0, c00); c01 = vfma(a, b1, c01)  # noqa: E702
        a = wbcast(ap, ao + 1, kern); c10 = vfma(a, b0, c10); c11 = vfma(a, b1, c11)  # noqa: E702
        a = wbcast(ap, ao + 2, kern); c20 = vfma(a, b0, c20); c21 = vfma(a, b1, c21)  # noqa: E702
        a = wbcast(ap, ao + 3, kern); c30 = vfma(a, b0, c30); c31 = vfma(a, b1, c31)  # noqa: E702
        a = wbcast(ap, ao + 4, kern); c40 = vfma(a, b0, c40); c41 = vfma(a, b1, c41)  # noqa: E702
        a = wbcast(ap, ao + 5, kern); c50 = vfma(a, b0, c50); c51 = vfma(a, b1, c51)  # noqa: E702
        ao += 6
        bo += 2 * w
    _put(c, co, c00, first, kern); _put(c, co + w, c01, first, kern); co += ldc  # noqa: E702
    _put(c, co, c10, first, kern); _put(c, co + w, c11, first, kern); co += ldc  # noqa: E702
    _put(c, co, c20, first, kern); _put(c, co + w, c21, first, kern); co += ldc  # noqa: E702
    _put(c, co, c30, first, kern); _put(c, co + w, c31, first, kern); co += ldc  # noqa: E702
    _put(c, co, c40, first, kern); _put(c, co + w, c41, first, kern); co += ldc  # noqa: E702
    _put(c, co, c50, first, kern); _put(c, co + w, c51, first, kern)  # noqa: E702
    # fmt: on


@jit()
def _ukernel_6x4(kc: int, ap: Any, ao: int, bp: Any, bo: int, c: Any, co: int, ldc: int,
                 first: bool, kern: int) -> None:  # fmt: skip
    """C[co:...] (+)= A micro-panel (kc x 6) times B micro-panel (kc x 4 vectors)."""
    w = wlanes(ap, kern)
    r = co
    for _ in range(6):  # every line of the tile's row (4 lines, 5 when unaligned)
        prefetch(c, r)
        prefetch(c, r + w)
        prefetch(c, r + 2 * w)
        prefetch(c, r + 3 * w)
        prefetch(c, r + 4 * w - 1)
        r += ldc
    # fmt: off
    z = wzero(ap, kern)
    c00 = z; c01 = z; c02 = z; c03 = z; c10 = z; c11 = z; c12 = z; c13 = z  # noqa: E702
    c20 = z; c21 = z; c22 = z; c23 = z; c30 = z; c31 = z; c32 = z; c33 = z  # noqa: E702
    c40 = z; c41 = z; c42 = z; c43 = z; c50 = z; c51 = z; c52 = z; c53 = z  # noqa: E702
    pf = kern_field(kern, 5) * 4 * w  # B elements ahead (a constant: 0 compiles no fetch)
    for _ in range(kc):
        if pf:
            prefetch_r(bp, bo + pf); prefetch_r(bp, bo + pf + w)  # noqa: E702
            prefetch_r(bp, bo + pf + 2 * w); prefetch_r(bp, bo + pf + 3 * w)  # noqa: E702
            prefetch_r(ap, ao + 64)
        b0 = wload(bp, bo, kern)
        b1 = wload(bp, bo + w, kern)
        b2 = wload(bp, bo + 2 * w, kern)
        b3 = wload(bp, bo + 3 * w, kern)
        a = wbcast(ap, ao, kern)
        c00 = vfma(a, b0, c00); c01 = vfma(a, b1, c01)  # noqa: E702
        c02 = vfma(a, b2, c02); c03 = vfma(a, b3, c03)  # noqa: E702
        a = wbcast(ap, ao + 1, kern)
        c10 = vfma(a, b0, c10); c11 = vfma(a, b1, c11)  # noqa: E702
        c12 = vfma(a, b2, c12); c13 = vfma(a, b3, c13)  # noqa: E702
        a = wbcast(ap, ao + 2, kern)
        c20 = vfma(a, b0, c20); c21 = vfma(a, b1, c21)  # noqa: E702
        c22 = vfma(a, b2, c22); c23 = vfma(a, b3, c23)  # noqa: E702
        a = wbcast(ap, ao + 3, kern)
        c30 = vfma(a, b0, c30); c31 = vfma(a, b1, c31)  # noqa: E702
        c32 = vfma(a, b2, c32); c33 = vfma(a, b3, c33)  # noqa: E702
        a = wbcast(ap, ao + 4, kern)
        c40 = vfma(a, b0, c40); c41 = vfma(a, b1, c41)  # noqa: E702
        c42 = vfma(a, b2, c42); c43 = vfma(a, b3, c43)  # noqa: E702
        a = wbcast(ap, ao + 5, kern)
        c50 = vfma(a, b0, c50); c51 = vfma(a, b1, c51)  # noqa: E702
        c52 = vfma(a, b2, c52); c53 = vfma(a, b3, c53)  # noqa: E702
        ao += 6
        bo += 4 * w
    o = co
    _put(c, o, c00, first, kern); _put(c, o + w, c01, first, kern)  # noqa: E702
    _put(c, o + 2 * w, c02, first, kern); _put(c, o + 3 * w, c03, first, kern)  # noqa: E702
    o += ldc
    _put(c, o, c10, first, kern); _put(c, o + w, c11, first, kern)  # noqa: E702
    _put(c, o + 2 * w, c12, first, kern); _put(c, o + 3 * w, c13, first, kern)  # noqa: E702
    o += ldc
    _put(c, o, c20, first, kern); _put(c, o + w, c21, first, kern)  # noqa: E702
    _put(c, o + 2 * w, c22, first, kern); _put(c, o + 3 * w, c23, first, kern)  # noqa: E702
    o += ldc
    _put(c, o, c30, first, kern); _put(c, o + w, c31, first, kern)  # noqa: E702
    _put(c, o + 2 * w, c32, first, kern); _put(c, o + 3 * w, c33, first, kern)  # noqa: E702
    o += ldc
    _put(c, o, c40, first, kern); _put(c, o + w, c41, first, kern)  # noqa: E702
    _put(c, o + 2 * w, c42, first, kern); _put(c, o + 3 * w, c43, first, kern)  # noqa: E702
    o += ldc
    _put(c, o, c50, first, kern); _put(c, o + w, c51, first, kern)  # noqa: E702
    _put(c, o + 2 * w, c52, first, kern); _put(c, o + 3 * w, c53, first, kern)  # noqa: E702
    # fmt: on


@jit()
def _ukernel_8x3(kc: int, ap: Any, ao: int, bp: Any, bo: int, c: Any, co: int, ldc: int,
                 first: bool, kern: int) -> None:  # fmt: skip
    """C[co:...] (+)= A micro-panel (kc x 8) times B micro-panel (kc x 3 vectors).

    The A-resident order's tile (see ``_a_resident``): its A micro-panel stays in L1 while
    the B micro-panels stream from L2, three lines per k step, fetched ``prefetch`` k steps
    ahead. 8 broadcasts and 3 loads per 24 FMAs (the 6 x 4 tile: 6 and 4).
    """
    w = wlanes(ap, kern)
    r = co
    for _ in range(8):
        prefetch(c, r)
        prefetch(c, r + 3 * w - 1)
        r += ldc
    # fmt: off
    z = wzero(ap, kern)
    c00 = z; c01 = z; c02 = z; c10 = z; c11 = z; c12 = z; c20 = z; c21 = z  # noqa: E702
    c22 = z; c30 = z; c31 = z; c32 = z; c40 = z; c41 = z; c42 = z; c50 = z  # noqa: E702
    c51 = z; c52 = z; c60 = z; c61 = z; c62 = z; c70 = z; c71 = z; c72 = z  # noqa: E702
    pf = kern_field(kern, 5) * 3 * w  # B elements ahead (a constant: 0 compiles no fetch)
    for _ in range(kc):
        if pf:
            prefetch_r(bp, bo + pf); prefetch_r(bp, bo + pf + w)  # noqa: E702
            prefetch_r(bp, bo + pf + 2 * w)
        b0 = wload(bp, bo, kern)
        b1 = wload(bp, bo + w, kern)
        b2 = wload(bp, bo + 2 * w, kern)
        a = wbcast(ap, ao, kern)
        c00 = vfma(a, b0, c00); c01 = vfma(a, b1, c01); c02 = vfma(a, b2, c02)  # noqa: E702
        a = wbcast(ap, ao + 1, kern)
        c10 = vfma(a, b0, c10); c11 = vfma(a, b1, c11); c12 = vfma(a, b2, c12)  # noqa: E702
        a = wbcast(ap, ao + 2, kern)
        c20 = vfma(a, b0, c20); c21 = vfma(a, b1, c21); c22 = vfma(a, b2, c22)  # noqa: E702
        a = wbcast(ap, ao + 3, kern)
        c30 = vfma(a, b0, c30); c31 = vfma(a, b1, c31); c32 = vfma(a, b2, c32)  # noqa: E702
        a = wbcast(ap, ao + 4, kern)
        c40 = vfma(a, b0, c40); c41 = vfma(a, b1, c41); c42 = vfma(a, b2, c42)  # noqa: E702
        a = wbcast(ap, ao + 5, kern)
        c50 = vfma(a, b0, c50); c51 = vfma(a, b1, c51); c52 = vfma(a, b2, c52)  # noqa: E702
        a = wbcast(ap, ao + 6, kern)
        c60 = vfma(a, b0, c60); c61 = vfma(a, b1, c61); c62 = vfma(a, b2, c62)  # noqa: E702
        a = wbcast(ap, ao + 7, kern)
        c70 = vfma(a, b0, c70); c71 = vfma(a, b1, c71); c72 = vfma(a, b2, c72)  # noqa: E702
        ao += 8
        bo += 3 * w
    o = co
    _put3(c, o, w, c00, c01, c02, first, kern)
    o += ldc
    _put3(c, o, w, c10, c11, c12, first, kern)
    o += ldc
    _put3(c, o, w, c20, c21, c22, first, kern)
    o += ldc
    _put3(c, o, w, c30, c31, c32, first, kern)
    o += ldc
    _put3(c, o, w, c40, c41, c42, first, kern)
    o += ldc
    _put3(c, o, w, c50, c51, c52, first, kern)
    o += ldc
    _put3(c, o, w, c60, c61, c62, first, kern)
    o += ldc
    _put3(c, o, w, c70, c71, c72, first, kern)
    # fmt: on


def _ukernel(kc: int, ap: Any, ao: int, bp: Any, bo: int, c: Any, co: int, ldc: int,
             first: bool, kern: int) -> None:  # fmt: skip
    """The micro-kernel of kernel code ``kern`` (typed in jitted code only)."""
    raise NotImplementedError("called from jitted code only")


@overload(_ukernel, prefer_literal=True, inline="always", jit_options=OPTIONS)
def _ukernel_impl(kc: int, ap: Any, ao: int, bp: Any, bo: int, c: Any, co: int, ldc: int,
                  first: bool, kern: int) -> Any:  # fmt: skip
    """Pick the micro-kernel while typing, so a specialisation compiles only its own.

    The micro-kernel's own Python function is the implementation (parameters and their
    annotations alike, as numba requires), inlined into the caller's IR: no call per
    tile and no reference counts taken around it. A wrapper calling the jitted kernel
    was left a call by LLVM, with NRT_incref and NRT_decref around every tile on counts
    the threads share: ~3% of DGEMM on an Emerald Rapids Xeon.
    """
    code: Any = kern  # numba's type of the argument, not an int
    if not isinstance(code, types.IntegerLiteral):
        return None
    shape = (int(code.literal_value) // 10 % 10, int(code.literal_value) % 10)
    if shape == (6, 4):
        return _ukernel_6x4.py_func
    if shape == (6, 2):
        return _ukernel_6x2.py_func
    if shape == (8, 3):
        return _ukernel_8x3.py_func
    raise ValueError(f"no micro-kernel {shape[0]} x {shape[1]} vectors")


@jit()
def _pack_b(b: Any, ldb: int, tb: bool, p0: int, kc: int, j0: int, jn: int, nr: int, bp: Any,
            base: int, kern: int) -> None:  # fmt: skip
    """Pack B[p0:p0+kc, j0:j0+jn] as consecutive kc x nr strips from bp[base], zero-padded.

    ``b`` is the flat C-order buffer of B (or of B transposed when ``tb``), ``ldb`` its row
    length. Whole row segments of the source are read so that it is streamed, not strided.
    """
    w = wlanes(bp, kern)
    nv = kern_field(kern, 0)
    nstrips = (jn + nr - 1) // nr
    if tb:  # b holds B transposed: B[p, j] = b[j * ldb + p]
        for j in range(jn):
            o = base + (j // nr) * kc * nr + j % nr
            src = (j0 + j) * ldb + p0
            for p in range(kc):
                bp[o + p * nr] = b[src + p]
    else:
        for p in range(kc):
            src = (p0 + p) * ldb + j0
            for s in range(nstrips):
                o = base + s * kc * nr + p * nr
                cols = min(nr, jn - s * nr)
                if cols == nr:
                    for v in range(nv):
                        vstore(bp, o + v * w, wload(b, src + v * w, kern))
                else:
                    for j in range(cols):
                        bp[o + j] = b[src + j]
                src += nr
    tail = jn - (nstrips - 1) * nr
    if tail < nr:
        o = base + (nstrips - 1) * kc * nr
        for p in range(kc):
            for j in range(tail, nr):
                bp[o + p * nr + j] = 0


@jit()
def _pack_a(a: Any, lda: int, ta: bool, i0: int, mc: int, p0: int, kc: int, ap: Any,
            kern: int) -> None:  # fmt: skip
    """ap[s*kc*MR + p*MR + i] = A[i0 + s*MR + i, p0 + p], zero-padded to whole strips.

    ``a`` is the flat C-order buffer of A (or of A transposed when ``ta``), ``lda`` its row
    length.
    """
    mr = kern_field(kern, 1)
    nstrips = (mc + mr - 1) // mr
    for s in range(nstrips):
        base = s * kc * mr
        rows = min(mr, mc - s * mr)
        r0 = i0 + s * mr
        if ta:  # A[i, p] = a[p * lda + i]
            for p in range(kc):
                o = base + p * mr
                src = (p0 + p) * lda + r0
                for i in range(rows):
                    ap[o + i] = a[src + i]
                for i in range(rows, mr):
                    ap[o + i] = 0
        elif rows == mr:
            for p in range(kc):
                o = base + p * mr
                src = r0 * lda + p0 + p
                for i in range(mr):
                    ap[o + i] = a[src + i * lda]
        else:
            for i in range(rows):
                src = (r0 + i) * lda + p0
                for p in range(kc):
                    ap[base + p * mr + i] = a[src + p]
            for i in range(rows, mr):
                for p in range(kc):
                    ap[base + p * mr + i] = 0


@jit()
def _macro(mc: int, nc: int, kc: int, ap: Any, bp: Any, c: Any, i0: int, j0: int, n: int,
           nr: int, first: bool, tile: Any, kern: int) -> None:  # fmt: skip
    """C[i0:i0+mc, j0:j0+nc] (+)= packed A block times packed B panel.

    BLIS's order (jr outer, ir inner: one B micro-panel, read by every A strip), or, for
    an A-resident kernel (digit 6 of its code), ir outer and jr inner: one A micro-panel
    stays in L1 while the B micro-panels stream past it from L2.
    """
    mr = kern_field(kern, 1)
    a_outer = kern_field(kern, 6) == 1  # a constant: one order is compiled
    nis = (mc + mr - 1) // mr
    njs = (nc + nr - 1) // nr
    for outer in range(nis if a_outer else njs):
        for inner in range(njs if a_outer else nis):
            is_ = outer if a_outer else inner
            js = inner if a_outer else outer
            jj = js * nr
            cols = min(nr, nc - jj)
            bo = js * kc * nr
            ii = is_ * mr
            rows = min(mr, mc - ii)
            ao = is_ * kc * mr
            if rows == mr and cols == nr:
                _ukernel(kc, ap, ao, bp, bo, c, (i0 + ii) * n + j0 + jj, n, first, kern)
            else:
                _ukernel(kc, ap, ao, bp, bo, tile, 0, nr, True, kern)
                for i in range(rows):
                    co = (i0 + ii + i) * n + j0 + jj
                    for j in range(cols):
                        if first:
                            c[co + j] = tile[i * nr + j]
                        else:
                            c[co + j] += tile[i * nr + j]


@jit()
def _a_resident(a: Any, lda: int, ta: bool, b: Any, ldb: int, tb: bool, c: Any, m: int, n: int,
                k: int, chunk: int, kc_blk: int, nc_blk: int, ws: Any, sync: Any,
                kern: int) -> None:  # fmt: skip
    """One thread's part of C = A @ B in the A-resident order (OpenBLAS's on Skylake-X).

    Each thread takes row chunks of A from the counter ``sync[0]`` and computes those rows
    of C alone: for each KC slice it packs the chunk (``chunk`` x KC, read from L3), then
    for each NC-wide panel of B packs the panel into its own ``ws`` (KC x NC, sized for
    L2) and multiplies, each A micro-panel held in L1 across the panel's B micro-panels.
    Threads share no packed data and never wait for one another (a late or dropped
    thread's chunks go to the others); each packs B once per chunk it takes.
    """
    mr = kern_field(kern, 1)
    nr = wlanes(c, kern) * kern_field(kern, 0)
    nchunks = (m + chunk - 1) // chunk
    asize = chunk * kc_blk
    bsize = kc_blk * min(nc_blk, (n + nr - 1) // nr * nr)
    ap = ws[:asize]
    bp = ws[asize : asize + bsize]
    tile = ws[asize + bsize : asize + bsize + mr * nr]
    i = atomic_add(sync, 0, 1)
    while i < nchunks:
        ic = i * chunk
        mc = min(chunk, m - ic)
        for pc in range(0, k, kc_blk):
            kc = min(kc_blk, k - pc)
            _pack_a(a, lda, ta, ic, mc, pc, kc, ap, kern)
            for jc in range(0, n, nc_blk):
                nc = min(nc_blk, n - jc)
                _pack_b(b, ldb, tb, pc, kc, jc, nc, nr, bp, 0, kern)
                _macro(mc, nc, kc, ap, bp, c, ic, jc, n, nr, pc == 0, tile, kern)
        i = atomic_add(sync, 0, 1)


@jit()
def _gemm_worker(a: Any, lda: int, ta: bool, b: Any, ldb: int, tb: bool, c: Any, m: int, n: int,
                 k: int, chunk: int, kc_blk: int, nc_blk: int, panels: Any, ws: Any, sync: Any,
                 threads: int, kern: int) -> None:  # fmt: skip
    """One thread's part of C = A @ B; every thread of a call runs this with the same
    arguments but its own ``ws`` (a packed A block of ``chunk`` x KC, then an edge tile).

    For each KC x NC panel of B (``it``-th, counters ``sync[4 it ..4 it + 3]``): the
    threads pack its strip groups, taken from the counter ``sync[4 it]`` and counted done
    in ``sync[4 it + 1]``, into one of the two ``panels`` (alternating), wait until every
    group is packed, then take row chunks of A from ``sync[4 it + 2]``, pack each,
    multiply, and count it done in ``sync[4 it + 3]`` and in its own flag (from
    ``4 * panels``: ``nchunks`` per panel). A chunk that adds to C (pc > 0) first waits
    for the flag of the same rows' chunk of the panel before; before packing panel it + 2
    into the buffer of panel it, a thread waits until every chunk of panel it is done. They
    wait only for work another thread has taken, never for a thread to arrive (no
    barrier): a thread that starts late, or not at all, holds no one up, and the first
    can do all the work alone (so ``run`` may drop a late one).
    """
    literally(kern)
    if kern_field(kern, 6) == 1:  # an A-resident kernel: its own order (``panels`` unused)
        _a_resident(a, lda, ta, b, ldb, tb, c, m, n, k, chunk, kc_blk, nc_blk, ws, sync, kern)
        return
    mr = kern_field(kern, 1)
    nr = wlanes(c, kern) * kern_field(kern, 0)
    bsize = panels.shape[0] // 2
    nchunks = (m + chunk - 1) // chunk
    flags = 4 * ((n + nc_blk - 1) // nc_blk) * ((k + kc_blk - 1) // kc_blk)
    it = 0
    for jc in range(0, n, nc_blk):
        nc = min(nc_blk, n - jc)
        ngroups = (nc + PACK_GROUP * nr - 1) // (PACK_GROUP * nr)
        for pc in range(0, k, kc_blk):
            kc = min(kc_blk, k - pc)
            bp = panels[(it % 2) * bsize : (it % 2 + 1) * bsize]
            s0 = 4 * it
            if threads > 1 and it >= 2:  # panel it - 2's buffer: every chunk done with it
                wait_for(sync, s0 - 5, nchunks)
            g = atomic_add(sync, s0, 1)
            while g < ngroups:
                j0 = g * PACK_GROUP * nr
                jn = min(PACK_GROUP * nr, nc - j0)
                _pack_b(b, ldb, tb, pc, kc, jc + j0, jn, nr, bp, j0 * kc, kern)
                atomic_add(sync, s0 + 1, 1)
                g = atomic_add(sync, s0, 1)
            if threads > 1:
                wait_for(sync, s0 + 1, ngroups)
            ap = ws[: chunk * kc]
            tile = ws[chunk * kc_blk : chunk * kc_blk + mr * nr]
            i = atomic_add(sync, s0 + 2, 1)
            while i < nchunks:
                ic = i * chunk
                mc = min(chunk, m - ic)
                _pack_a(a, lda, ta, ic, mc, pc, kc, ap, kern)
                f = flags + it * nchunks + i
                if threads > 1 and pc > 0:  # these rows of C: the panel before done
                    wait_for(sync, f - nchunks, 1)
                _macro(mc, nc, kc, ap, bp, c, ic, jc, n, nr, pc == 0, tile, kern)
                atomic_add(sync, f, 1)
                atomic_add(sync, s0 + 3, 1)
                i = atomic_add(sync, s0 + 2, 1)
            it += 1


_local = threading.local()


def _workspace(size: int, dtype: Any) -> np.ndarray[Any, Any]:
    """Scratch kept per Python thread, so that repeated calls neither allocate nor fault."""
    cache: dict[str, np.ndarray[Any, Any]] | None = getattr(_local, "ws", None)
    if cache is None:
        cache = _local.ws = {}
    key = np.dtype(dtype).char
    have = cache.get(key)
    if have is None or have.size < size:
        have = np.empty(size + 64, key)
        cache[key] = have
    off = (-have.ctypes.data % 64) // have.itemsize  # start on a cache line
    return have[off : off + size]


def _as_operand(x: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], bool]:
    """A C-contiguous array and whether it holds the operand transposed."""
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


@dataclass(frozen=True)
class GemmPlan:
    """The micro-kernel and cache blocking one call uses."""

    kernel: Kernel
    mc: int
    kc: int
    nc: int


def gemm_plan(dtype: Any, kernel: str | None = None) -> GemmPlan:
    """The plan for ``dtype`` on this host (``kernel`` forces a micro-kernel by name)."""
    cpu = _cpu.host()
    kern = _cpu.pick_kernel(cpu, kernel)
    mc, kc, nc = _cpu.blocking(cpu, kern, np.dtype(dtype).itemsize)
    return GemmPlan(kern, mc, kc, nc)


def gemm(
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    *,
    threads: int | None = None,
    blocking: tuple[int, int, int] | None = None,
    kernel: str | None = None,
) -> np.ndarray[Any, Any]:
    """Return ``a @ b`` for 2-D float32/float64 arrays of any strides, C-contiguous result.

    ``blocking`` = (MC, KC, NC) overrides the cache blocking (for tuning); ``kernel``
    ("avx512", "avx2", "sse") overrides the micro-kernel chosen for this CPU (see
    kernels._cpu; the environment variable KERNELS_GEMM_KERNEL does the same).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm needs 2-D arrays, got {a.ndim}-D and {b.ndim}-D")
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm needs two float32 or two float64 arrays, got {a.dtype}, {b.dtype}")
    m, k = a.shape
    k2, n = b.shape
    if k != k2:
        raise ValueError(f"gemm shapes {a.shape} and {b.shape} do not align")
    plan = gemm_plan(a.dtype, kernel)
    if m == 0 or n == 0 or k == 0:
        return np.zeros((m, n), dtype=a.dtype)
    nthreads = use_threads(threads)
    mc, kc, nc = blocking if blocking is not None else (plan.mc, plan.kc, plan.nc)
    kern = plan.kernel
    nr = kern.nr(a.itemsize)
    mc = max(kern.mr, mc // kern.mr * kern.mr)
    nc = max(nr, nc // nr * nr)
    nthreads = min(nthreads, -(-m // kern.mr))
    chunk = _chunk(m, mc, kern.mr, nthreads)
    av, ta = _as_operand(a)
    bv, tb = _as_operand(b)
    c = np.empty((m, n), dtype=a.dtype)
    bpanel = _aligned(kc * min(nc, -(-n // nr) * nr), a.itemsize)
    if kern.a_resident:  # each thread packs its own B panels (see _a_resident)
        bsize, per = 0, _aligned(chunk * kc + bpanel + kern.mr * nr, a.itemsize)
        sync = np.zeros(1, np.int64)
    else:  # two B panels shared by the threads, each thread's A block
        bsize, per = bpanel, _aligned(chunk * kc + kern.mr * nr, a.itemsize)
        panels_n = (-(-n // nc)) * (-(-k // kc))
        sync = np.zeros(panels_n * (4 + -(-m // chunk)), np.int64)
    work = _workspace(2 * bsize + nthreads * per, a.dtype)
    panels = work[: 2 * bsize]
    args = (av.reshape(-1), av.shape[1], ta, bv.reshape(-1), bv.shape[1], tb, c.reshape(-1),
            m, n, k, chunk, kc, nc, panels, work[2 * bsize : 2 * bsize + per], sync,
            nthreads)  # fmt: skip
    entry = _core_entry(args, kern.code)
    calls = []
    for t in range(nthreads):
        ws = work[2 * bsize + t * per : 2 * bsize + (t + 1) * per]
        calls.append((entry, (*args[:14], ws, *args[15:], kern.code)))
    run(calls, skip_late=True)
    return c


def _aligned(size: int, itemsize: int) -> int:
    """``size`` elements rounded up to whole cache lines."""
    q = 64 // itemsize
    return -(-size // q) * q


def _chunk(m: int, mc: int, mr: int, threads: int) -> int:
    """Rows of A a thread takes at a time: at most MC, in whole MR strips, and as many
    chunks as make a multiple of the threads, so that they finish together when no
    thread is held up."""
    per_thread = -(-m // threads)
    q = -(-per_thread // mc)  # chunks per thread
    rows = -(-m // (threads * q))
    return min(mc, -(-rows // mr) * mr)


_ENTRIES: dict[tuple[Any, ...], Any] = {}


def _core_entry(args: tuple[Any, ...], code: int) -> Any:
    """The compiled ``_gemm_worker`` for these arguments and kernel ``code``.

    Called with a plain int, a dispatcher whose code takes ``literally`` retypes the whole
    function on every call to learn that it needs the literal (about 0.2 s here), so the
    specialisation is compiled (or loaded) once by its literal signature, without running
    it (a worker alone would wait at its barrier for the others), and its entry point kept,
    keyed by what decides the argument types (numba's typeof costs ~50 us an array).
    """
    a, b = args[0], args[3]
    key = (code, a.dtype.char, a.flags.writeable, a.flags.aligned, b.flags.writeable,
           b.flags.aligned)  # fmt: skip
    entry = _ENTRIES.get(key)
    if entry is None:
        sig = (*(typeof(x) for x in args), types.literal(code))
        cres = _gemm_worker.overloads.get(sig)
        if cres is None:
            _gemm_worker.compile(sig)  # compiles, or loads from the cache, the specialisation
            cres = _gemm_worker.overloads[sig]
        entry = _ENTRIES[key] = cres.entry_point
    return entry
