"""GEMM: C = A @ B for float32/float64, packed and register-tiled (BLIS loop order).

Loop nest, outermost first: jc over NC columns of B; pc over KC rows of B (pack that
KC x NC panel of B, shared by all threads); per thread, ic over MC rows of its share of A
(pack that MC x KC block of A); jr over NR-column strips; ir over MR-row strips; then the
micro-kernel, which keeps an MR x NR tile of C in 24 vector registers for the whole KC loop.
The B micro-panel (KC x NR) stays in L1, the A block in L2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from kernels._jit import jit, use_threads
from kernels._simd import VECTOR_BYTES, prefetch, vadd, vbcast, vfma, vlanes, vload, vstore, vzero

MR = 6  # rows of the micro-tile (broadcast A values)
NV = 4  # vectors per micro-tile row: NR = NV * lanes
VB = VECTOR_BYTES
# Cache blocking (elements); tuned on Zen 5 (48 KiB L1d, 1 MiB L2 per core).
KC = 512
MC = 192
NC = 4096
PACK_GROUP = 8  # strips of B packed together, reading 8 x NR contiguous elements


@jit()
def _put(c: Any, co: int, v: Any, first: bool) -> None:
    if first:
        vstore(c, co, v)
    else:
        vstore(c, co, vadd(vload(c, co), v))


@jit()
def _ukernel(kc: int, ap: Any, ao: int, bp: Any, bo: int, c: Any, co: int, ldc: int,
             first: bool) -> None:  # fmt: skip
    """C[co:...] (+)= A micro-panel (kc x MR) times B micro-panel (kc x NR)."""
    w = vlanes(ap)
    r = co
    for _ in range(MR):  # the C tile is needed only after the k loop: fetch it meanwhile
        prefetch(c, r)
        prefetch(c, r + NV * w - 1)
        r += ldc
    # fmt: off
    c00 = vzero(ap); c01 = vzero(ap); c02 = vzero(ap); c03 = vzero(ap)  # noqa: E702
    c10 = vzero(ap); c11 = vzero(ap); c12 = vzero(ap); c13 = vzero(ap)  # noqa: E702
    c20 = vzero(ap); c21 = vzero(ap); c22 = vzero(ap); c23 = vzero(ap)  # noqa: E702
    c30 = vzero(ap); c31 = vzero(ap); c32 = vzero(ap); c33 = vzero(ap)  # noqa: E702
    c40 = vzero(ap); c41 = vzero(ap); c42 = vzero(ap); c43 = vzero(ap)  # noqa: E702
    c50 = vzero(ap); c51 = vzero(ap); c52 = vzero(ap); c53 = vzero(ap)  # noqa: E702
    for _ in range(kc):
        b0 = vload(bp, bo)
        b1 = vload(bp, bo + w)
        b2 = vload(bp, bo + 2 * w)
        b3 = vload(bp, bo + 3 * w)
        a = vbcast(ap, ao)
        c00 = vfma(a, b0, c00); c01 = vfma(a, b1, c01)  # noqa: E702
        c02 = vfma(a, b2, c02); c03 = vfma(a, b3, c03)  # noqa: E702
        a = vbcast(ap, ao + 1)
        c10 = vfma(a, b0, c10); c11 = vfma(a, b1, c11)  # noqa: E702
        c12 = vfma(a, b2, c12); c13 = vfma(a, b3, c13)  # noqa: E702
        a = vbcast(ap, ao + 2)
        c20 = vfma(a, b0, c20); c21 = vfma(a, b1, c21)  # noqa: E702
        c22 = vfma(a, b2, c22); c23 = vfma(a, b3, c23)  # noqa: E702
        a = vbcast(ap, ao + 3)
        c30 = vfma(a, b0, c30); c31 = vfma(a, b1, c31)  # noqa: E702
        c32 = vfma(a, b2, c32); c33 = vfma(a, b3, c33)  # noqa: E702
        a = vbcast(ap, ao + 4)
        c40 = vfma(a, b0, c40); c41 = vfma(a, b1, c41)  # noqa: E702
        c42 = vfma(a, b2, c42); c43 = vfma(a, b3, c43)  # noqa: E702
        a = vbcast(ap, ao + 5)
        c50 = vfma(a, b0, c50); c51 = vfma(a, b1, c51)  # noqa: E702
        c52 = vfma(a, b2, c52); c53 = vfma(a, b3, c53)  # noqa: E702
        ao += MR
        bo += NV * w
    _put(c, co, c00, first); _put(c, co + w, c01, first)  # noqa: E702
    _put(c, co + 2 * w, c02, first); _put(c, co + 3 * w, c03, first)  # noqa: E702
    co += ldc
    _put(c, co, c10, first); _put(c, co + w, c11, first)  # noqa: E702
    _put(c, co + 2 * w, c12, first); _put(c, co + 3 * w, c13, first)  # noqa: E702
    co += ldc
    _put(c, co, c20, first); _put(c, co + w, c21, first)  # noqa: E702
    _put(c, co + 2 * w, c22, first); _put(c, co + 3 * w, c23, first)  # noqa: E702
    co += ldc
    _put(c, co, c30, first); _put(c, co + w, c31, first)  # noqa: E702
    _put(c, co + 2 * w, c32, first); _put(c, co + 3 * w, c33, first)  # noqa: E702
    co += ldc
    _put(c, co, c40, first); _put(c, co + w, c41, first)  # noqa: E702
    _put(c, co + 2 * w, c42, first); _put(c, co + 3 * w, c43, first)  # noqa: E702
    co += ldc
    _put(c, co, c50, first); _put(c, co + w, c51, first)  # noqa: E702
    _put(c, co + 2 * w, c52, first); _put(c, co + 3 * w, c53, first)  # noqa: E702
    # fmt: on


@jit()
def _pack_b(b: Any, ldb: int, tb: bool, p0: int, kc: int, j0: int, jn: int, nr: int, bp: Any,
            base: int) -> None:  # fmt: skip
    """Pack B[p0:p0+kc, j0:j0+jn] as consecutive kc x nr strips from bp[base], zero-padded.

    ``b`` is the flat C-order buffer of B (or of B transposed when ``tb``), ``ldb`` its row
    length. Whole row segments of the source are read so that it is streamed, not strided.
    """
    w = vlanes(bp)
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
                    for v in range(NV):
                        vstore(bp, o + v * w, vload(b, src + v * w))
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
def _pack_a(a: Any, lda: int, ta: bool, i0: int, mc: int, p0: int, kc: int, ap: Any) -> None:
    """ap[s*kc*MR + p*MR + i] = A[i0 + s*MR + i, p0 + p], zero-padded to whole strips.

    ``a`` is the flat C-order buffer of A (or of A transposed when ``ta``), ``lda`` its row
    length.
    """
    nstrips = (mc + MR - 1) // MR
    for s in range(nstrips):
        base = s * kc * MR
        rows = min(MR, mc - s * MR)
        r0 = i0 + s * MR
        if ta:  # A[i, p] = a[p * lda + i]
            for p in range(kc):
                o = base + p * MR
                src = (p0 + p) * lda + r0
                for i in range(rows):
                    ap[o + i] = a[src + i]
                for i in range(rows, MR):
                    ap[o + i] = 0
        else:
            for i in range(rows):
                src = (r0 + i) * lda + p0
                for p in range(kc):
                    ap[base + p * MR + i] = a[src + p]
            for i in range(rows, MR):
                for p in range(kc):
                    ap[base + p * MR + i] = 0


@jit()
def _macro(mc: int, nc: int, kc: int, ap: Any, bp: Any, c: Any, i0: int, j0: int, n: int,
           nr: int, first: bool, tile: Any) -> None:  # fmt: skip
    """C[i0:i0+mc, j0:j0+nc] (+)= packed A block times packed B panel."""
    for js in range((nc + nr - 1) // nr):
        jj = js * nr
        cols = min(nr, nc - jj)
        bo = js * kc * nr
        for is_ in range((mc + MR - 1) // MR):
            ii = is_ * MR
            rows = min(MR, mc - ii)
            ao = is_ * kc * MR
            if rows == MR and cols == nr:
                _ukernel(kc, ap, ao, bp, bo, c, (i0 + ii) * n + j0 + jj, n, first)
            else:
                _ukernel(kc, ap, ao, bp, bo, tile, 0, nr, True)
                for i in range(rows):
                    co = (i0 + ii + i) * n + j0 + jj
                    for j in range(cols):
                        if first:
                            c[co + j] = tile[i * nr + j]
                        else:
                            c[co + j] += tile[i * nr + j]


@jit(parallel=True)
def _gemm_core(a: Any, lda: int, ta: bool, b: Any, ldb: int, tb: bool, c: Any, m: int, n: int,
               k: int,
               threads: int, mc_blk: int, kc_blk: int, nc_blk: int) -> None:  # fmt: skip
    nr = NV * (VB // c.itemsize)
    mc_blk = max(MR, mc_blk // MR * MR)
    nc_blk = max(nr, nc_blk // nr * nr)
    nc_max = min(nc_blk, (n + nr - 1) // nr * nr)
    bp = np.empty(kc_blk * nc_max, c.dtype)
    share = ((m + threads - 1) // threads + MR - 1) // MR * MR
    for jc in range(0, n, nc_blk):
        nc = min(nc_blk, n - jc)
        for pc in range(0, k, kc_blk):
            kc = min(kc_blk, k - pc)
            ngroups = (nc + PACK_GROUP * nr - 1) // (PACK_GROUP * nr)
            for g in prange(ngroups):
                j0 = g * PACK_GROUP * nr
                jn = min(PACK_GROUP * nr, nc - j0)
                _pack_b(b, ldb, tb, pc, kc, jc + j0, jn, nr, bp, j0 * kc)
            first = pc == 0
            for t in prange(threads):
                r0 = t * share
                r1 = min(m, r0 + share)
                if r0 < r1:
                    ap = np.empty(mc_blk * kc, c.dtype)
                    tile = np.empty(MR * nr, c.dtype)
                    for ic in range(r0, r1, mc_blk):
                        mc = min(mc_blk, r1 - ic)
                        _pack_a(a, lda, ta, ic, mc, pc, kc, ap)
                        _macro(mc, nc, kc, ap, bp, c, ic, jc, n, nr, first, tile)


def _as_operand(x: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], bool]:
    """A C-contiguous array and whether it holds the operand transposed."""
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def gemm(
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    *,
    threads: int | None = None,
    blocking: tuple[int, int, int] | None = None,
) -> np.ndarray[Any, Any]:
    """Return ``a @ b`` for 2-D float32/float64 arrays of any strides, C-contiguous result.

    ``blocking`` = (MC, KC, NC) overrides the cache blocking (for tuning).
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
    if m == 0 or n == 0 or k == 0:
        return np.zeros((m, n), dtype=a.dtype)
    nthreads = use_threads(threads)
    mc, kc, nc = blocking if blocking is not None else (MC, KC, NC)
    av, ta = _as_operand(a)
    bv, tb = _as_operand(b)
    c = np.empty((m, n), dtype=a.dtype)
    _gemm_core(
        av.reshape(-1),
        av.shape[1],
        ta,
        bv.reshape(-1),
        bv.shape[1],
        tb,
        c.reshape(-1),
        m,
        n,
        k,
        nthreads,
        mc,
        kc,
        nc,
    )
    return c
