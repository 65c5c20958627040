"""FFT: complex64/complex128, 1-D or batched along the last axis, N = 2^a 3^b 5^c.

Four-step (Bailey) algorithm: N = N1 * N2 viewed as an N2 x N1 matrix. Step 1 takes
blocks of B columns, runs B interleaved length-N2 transforms on them in a cache-resident
buffer (Stockham passes, one SIMD vector per B/lanes columns), multiplies by the twiddles
W_N^(n1 k2) and writes them transposed into a split re/im workspace Z (N1 x N2). Step 2
does the same for blocks of Z's columns (length-N1 transforms) and writes the result in
natural order. Each step reads and writes the data once, so large N costs two sweeps of
memory instead of log4 N. Threads share out the column blocks (one transform) or the rows
(batched).
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numba import typeof
from numba.extending import overload

from kernels import _cpu
from kernels._fft_passes import _pass, last_out, last_tw, pass_from, stockham
from kernels._jit import OPTIONS, jit, max_threads, use_threads
from kernels._parallel import atomic_add, run
from kernels._simd import (
    fence,
    lanes,
    misalignment,
    vbcast,
    vfma,
    vfnma,
    vlanes,
    vload,
    vload_even,
    vload_odd,
    vmul,
    vsplat,
    vstore,
    vstore_interleaved,
    vtranspose,
    vtranspose_in,
    vtranspose_nt,
    vtranspose_out,
)


def factor(n: int) -> list[int]:
    """Radices for a length-n transform (4s first, then 2, 3, 5); ValueError otherwise."""
    if n < 1:
        raise ValueError(f"FFT length must be >= 1, got {n}")
    out: list[int] = []
    m = n
    for r in (4, 2, 3, 5):
        while m % r == 0:
            out.append(r)
            m //= r
    if m != 1:
        raise ValueError(f"FFT length {n} is not of the form 2^a * 3^b * 5^c")
    return out


def pass_radices(n: int) -> list[int]:
    """The passes for length n: radix 8 where it can, then 4 (last, where its pass needs no
    twiddles), 2 only for 2^1, then 3 and 5."""
    fs = factor(n)
    a = 2 * fs.count(4) + fs.count(2)
    if a == 1:
        twos = [2]
    elif a % 3 == 1:
        twos = [8] * (a // 3 - 1) + [4, 4]
    else:
        twos = [8] * (a // 3) + [4] * (a % 3 // 2)
    return twos + [r for r in fs if r in (3, 5)]


def _stage_tables(n: int, dtype: Any) -> tuple[np.ndarray[Any, Any], ...]:
    radices = pass_radices(n)
    offsets = []
    chunks = []
    L = n
    pos = 0
    for r in radices:
        m = L // r
        p = np.arange(m)[:, None]
        j = np.arange(1, r)[None, :]
        chunks.append(np.exp(-2j * np.pi * (p * j) / L).reshape(-1))
        offsets.append(pos)
        pos += m * (r - 1)
        L = m
    tw = np.concatenate(chunks) if chunks else np.zeros(1, np.complex128)
    return (
        np.array(radices, dtype=np.int64),
        np.array(offsets, dtype=np.int64),
        np.ascontiguousarray(tw.real, dtype=dtype),
        np.ascontiguousarray(tw.imag, dtype=dtype),
    )


ALIGN = 64  # bytes: every table and buffer starts on a cache line


def _round(k: int, itemsize: int) -> int:
    q = ALIGN // itemsize
    return -(-k // q) * q


def aligned_empty(size: int, dtype: Any) -> np.ndarray[Any, Any]:
    """An uninitialised 1-D array whose first element sits on a 64-byte boundary.

    Called for every fft() output: its address is read through ctypes.addressof (0.36 us
    on an Emerald Rapids Xeon) rather than ndarray.ctypes.data (1.1 us), a twentieth of a
    2^12-point transform's call on its own.
    """
    item = np.dtype(dtype).itemsize
    buf = np.empty(size + ALIGN // item, dtype)
    off = (-ctypes.addressof(ctypes.c_char.from_buffer(buf)) % ALIGN) // item
    return buf[off : off + size]


def _pack(arrays: list[np.ndarray[Any, Any]], dtype: Any) -> tuple[np.ndarray[Any, Any], ...]:
    """Concatenate 1-D tables into one aligned array; return it and the (start, end) pairs."""
    item = np.dtype(dtype).itemsize
    seg = np.zeros(2 * len(arrays), np.int64)
    pos = 0
    for i, a in enumerate(arrays):
        seg[2 * i] = pos
        seg[2 * i + 1] = pos + a.size
        pos += _round(max(a.size, 1), item)
    blob = aligned_empty(max(pos, 1), dtype)
    blob[:] = 0
    for i, a in enumerate(arrays):
        blob[seg[2 * i] : seg[2 * i + 1]] = a
    return blob, seg


@dataclass(frozen=True)
class Plan:
    """Tables of one length, packed so that a call passes two arrays, not sixteen.

    ``fb``: the float tables (twiddles of the n1, n2 and whole-row passes, the four-step
    twiddles); ``meta``: n, n1, n2, block (step 1's columns), the pass-buffer lengths
    without and with row blocks, block2 (step 2's columns), tile (Z's tile width, see
    Z_TILED), rows (rows per row block), zlen (from Z's real to imaginary parts), then
    (from HEAD) the (start, end) of each float table in ``fb`` (10 pairs), of each int
    table (6 pairs), then (from META) the int tables: radices and twiddle offsets of each
    pass list, then 1 where step 2 may write the output with non-temporal stores
    (STREAM_OUT).
    """

    n: int
    n1: int
    n2: int
    block: int
    fb: np.ndarray[Any, Any]
    meta: np.ndarray[Any, Any]
    bufsize: int  # the longer of the two pass-buffer lengths
    work1: int  # scratch for one thread: four pass buffers of bufsize, then Z (re, im)
    block2: int = 0  # step 2's column block
    tile: int = 0  # Z's tile width (n2: Z row-major; see Z_TILED)
    rows: int = 0  # rows per row block (see row_block)
    zlen: int = 0  # from Z's real parts to its imaginary parts (see Z_SKEW)


HEAD = 10  # where the table offsets start in Plan.meta
META = HEAD + 32  # where the int tables start in Plan.meta

# n1 of the four-step split of these powers of two, where measured faster than the
# square-root rule (1 thread, complex128, GF/s): tall splits, whose short columns keep step
# 1's tile in L1. Zen 5: 2^14 256x64 29.4 vs 128x128 25.6; 2^15 512x64 27.4 vs 128x256 19.7;
# 2^16 1024x64 29.3 vs 256x256 20.5; 2^17 1024x128 23.3 vs 256x512 17.9; 2^18 1024x256
# 20.1 vs 512x512 15.3; 2^19 1024x512 15.1 vs 512x1024 13.1. Zen 4 (load 2-3; 2^17 up
# with WIDE_BLOCK): 2^13 128x64 23.7 vs 64x128 19.2; 2^17 512x256 18.2 vs 1024x128 < 16.4;
# 2^18 512x512 16.0 vs 1024x256 15.4; 2^20 2048x512 11.1 vs 1024x1024 10.0.
POW2_N1 = {1 << 13: 128, 1 << 14: 256, 1 << 15: 512, 1 << 16: 1024, 1 << 17: 512,
           1 << 18: 512, 1 << 19: 1024, 1 << 20: 2048}  # fmt: skip
# Where Intel's AVX-512 cores measured another split fastest (Xeon, KVM, 2 vCPUs, L1d 48
# KiB, L2 2 MiB; 1 thread, complex128, GF/s, medians of 25 interleaved rounds, three
# runs): 2^16 256x256 19.1-19.3 vs 1024x64 16.9-17.0 (512x128 18.4-18.6; complex64 even,
# 39-43 for all three). The table's other splits were the fastest there too: 2^13 128x64
# 19.0 (256x32 18.7-18.9), 2^15 512x64 22.7-23.0 (256x128 20.0-20.7), 2^17 512x256
# 17.1-17.4 (256x512 16.5-17.2).
POW2_N1_INTEL_AVX512 = {1 << 16: 256}
# From this length on, column blocks of four vectors, not two: the strided rows of step 1
# and the output rows of step 2 then move 8 cache lines at a time, which the L3 and memory
# stream better (Zen 4, 1 thread, complex128, GF/s, 32 vs 16 columns: 2^17 512x256 18.2
# vs 17.2, 2^18 1024x256 15.4 vs 14.0, 2^19 1024x512 12.1 vs 10.6, 2^20 1024x1024 10.0 vs
# 9.4, 2^22 2048x2048 11.0 vs 9.5; at 2^14..2^16 16 columns were as fast or faster).
WIDE_BLOCK = 1 << 17
# The same from 2^11 on Intel's AVX-512 cores, where four vectors' columns ran faster at
# every length measured from there but one (Xeon, Emerald Rapids, KVM, 2 vCPUs, L1d 48
# KiB, L2 2 MiB; 1 thread, GF/s, FFTPlan, medians of 11-15 runs, three interleaved
# rounds, four vs two vectors, pyFFTW's MEASURE plan in the same round): complex128 2^11
# 14.5 vs 11.6-12.0, 2^12 16.7-16.8 vs 14.9-15.2 (pyFFTW 20.3-20.6: 0.81-0.82x vs
# 0.72-0.75x), 2^13 17.3-17.7 vs 15.2-15.4, 2^14 13.9-19.3 vs 12.7-17.1, 2^16 10.3-10.5 vs
# 9.9-10.3; complex64 2^12 21.2-21.8 vs 18.6-19.6, 2^13 23.4-24.0 vs 21.2-21.5, 2^14
# 26.2-26.8 vs 24.2-24.6, 2^15 26.4-26.8 vs 25.7-26.4, 2^16 26.0-26.8 vs 24.9-25.6. The
# one: complex128 2^15 was mixed, 15.7-15.9 vs 16.5-16.7 in two rounds of one run and
# 12.6-12.8 vs 12.3-12.5 in another (pyFFTW 17.0-17.3 and 11.5-11.6: at or above 0.9x
# either way). (2^10, not taken: 8.1-10.4 vs 7.1-8.8, noisy.)
WIDE_BLOCK_INTEL_AVX512 = 1 << 11
# Lengths from WIDE_BLOCK on that keep blocks of two vectors: measured faster since step 2
# writes every output with non-temporal stores (Zen 4, 1 thread, GF/s, load 2.4-2.7, six
# interleaved pairs, two vs four vectors, into np.empty_like's output: 2^18 512x512 16.6
# vs 15.0, 16.4 vs 15.4, 15.9 vs 15.2; into an aligned one: 13.9 vs 15.0, 17.4 vs 16.5,
# 18.1 vs 17.0). 2^19 was even (11.6-12.4 vs 11.1-12.9) and 2^20 four vectors faster.
NARROW_BLOCK = frozenset({1 << 18})
# From this length on (powers of two), step 2 writes a 64-byte aligned output with
# non-temporal stores (Zen 4, 1 thread, GF/s, load 2-3, non-temporal vs ordinary, three
# runs each: 2^18 17.1 vs 16.5, 2^19 12.9 vs 11.4, 2^20 11.4 vs 10.8, 2^22 11.5 vs 11.1;
# 2^17 18.9 vs 19.4, so not there). The plan records the choice (the last element of meta).
# An output that is not vector-aligned (numpy's arrays: 16 bytes past a cache line) takes
# the same stores with its column blocks shifted into line (_stream_shift, _unit2): 1
# thread, Zen 4, load 3, GF/s, into np.empty_like's output, shifted vs ordinary stores,
# interleaved runs: 2^19 11.0-13.4 vs 11.4-13.1, 2^20 10.9-11.9 vs 7.5-10.6.
STREAM_OUT = 1 << 18
# From this length on, step 1 writes Z with non-temporal stores: x, Z and the output no
# longer fit the L3 together, and ordinary stores would read each line of Z first (Zen 4,
# 1 thread, np.empty_like output, load 3.5-3.9, ms, three interleaved runs, streamed vs
# ordinary: 2^20 9.86/9.20/9.03 vs 10.47/9.99/9.85, 2^21 20.9/18.8/19.1 vs 28.9/21.3/21.9,
# 2^22 40.0/38.2/38.7 vs 41.6/41.8/47.1; from 2^19 on, 2^19 was no faster: 4.5-4.7 vs
# 3.7-5.3).
Z_STREAM = 1 << 20
# Z is stored as tiles of step 2's column block (n1 x block2 each, row-major), not as one
# row-major n1 x n2 matrix: step 2 then reads each block's columns as one contiguous run,
# not block2 elements from every row n2 apart (4 KiB apart at n2 = 512, each row on its
# own page, where the prefetchers stop). Where step 2's blocks are shifted to an output
# that is not vector-aligned (_unit2), step 1 stores Z's columns rotated by the shift, so
# that each block is still one tile (_to_z). Zen 4, 1 thread, load 2.6-2.9 (CI
# jobs), GF/s, interleaved medians of 11-15 runs, tiled vs row-major, np.empty_like's
# output / an aligned one: 2^13 20.2 vs 18.7; 2^14 22.7 vs 22.0; 2^15 23.1 vs 22.8;
# 2^16 19.0 vs 17.4; 2^17 20.8 vs 17.3 / 21.5 vs 19.3; 2^18 15.9 vs 15.9 / 18.1 vs 17.4;
# 2^19 17.7 vs 15.5 / 15.2 vs 13.3; 2^20 12.8 vs 11.5 / 15.0 vs 12.6; 2^21 11.3 vs 10.6
# (np.empty_like's output then by ordinary stores). Rotated, its output streamed (load
# 2.6, skewed buffers, np.empty_like's output), vs tiled by ordinary stores vs row-major
# shifted: 2^18 21.1 / 19.3 / 18.5; 2^19 19.4 / 15.4 / 17.4; 2^20 15.8 / 15.3 / 13.8.
Z_TILED = True
ROW_BLOCK_L1 = 32 << 10  # bytes of the four row-block buffers beyond which blocks shrink
# The same bound on Intel's AVX-512 cores, where blocks of the plan's two vectors' rows
# ran faster up to 512-point rows (Xeon, KVM, 2 vCPUs, L1d 48 KiB, L2 2 MiB; 1 thread,
# GF/s, medians of 15 interleaved rounds, two runs, two vectors' rows vs one's):
# complex128 256 x 256 15.8-16.2 vs 14.6-15.0 (numpy 15.9-16.1), 1024 x 256 15.2-15.4 vs
# 14.2-14.4, 512 x 512 17.9 vs 16.8; 1024 x 1024 17.7 vs 17.2 (even: kept at one). Where
# the plan's block is one vector (complex64 at these lengths, rows under 256 points) it
# changes nothing.
ROW_BLOCK_L1_INTEL_AVX512 = 256 << 10
# Batched rows up to this length go B rows at a time through one buffer; longer rows take
# the four-step path. Measured (1 thread, complex128, GF/s, Zen 4, row blocks vs four-step):
# 1024 x 1024 12.5 vs 9.8, 64 x 1024 15.3 vs 16.6 (even), 32 x 2048 15.8 vs 19.2 / 11.2.
ROW_BLOCK_MAX = 1024


def _intel_avx512(cpu: _cpu.CpuInfo | None) -> bool:
    """Whether ``cpu`` (the host's if None) takes the Intel AVX-512 tables below."""
    return (cpu or _cpu.host()).intel_avx512


def pow2_n1(n: int, cpu: _cpu.CpuInfo | None = None) -> int:
    """The measured n1 for length n on ``cpu`` (the host's by default), or 0 if none."""
    if _intel_avx512(cpu) and n in POW2_N1_INTEL_AVX512:
        return POW2_N1_INTEL_AVX512[n]
    return POW2_N1.get(n, 0)


def wide_from(cpu: _cpu.CpuInfo | None = None) -> int:
    """The length from which column blocks are four vectors wide on ``cpu`` (the host's
    by default), but NARROW_BLOCK's lengths."""
    return WIDE_BLOCK_INTEL_AVX512 if _intel_avx512(cpu) else WIDE_BLOCK


def split(n: int) -> tuple[int, int]:
    """(n1, n2) with n = n1 * n2: the measured n1 (``pow2_n1``), else n1 <= n2 as close to
    sqrt(n) as can be."""
    factor(n)
    n1 = pow2_n1(n)
    if not n1:
        n1 = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n1, n // n1


# Experiment hooks / measured exceptions (lengths -> value); see plan().
STEP2_VECTORS: dict[int, int] = {}  # step 2's column block in vectors, where not step 1's
Z_TILE: dict[int, int] = {}  # 0: Z row-major at this length (else tiled, see Z_TILED)
ROW_BLOCK_ROWS: dict[int, int] = {}  # rows per row block, where not row_block()'s
# The four pass buffers, each from SKEW_MIN bytes, are spaced a whole number of pages plus
# BUF_SKEW bytes apart, so that their elements i fall in different L1 sets (and are not
# 4 KiB apart: a load is checked against earlier stores by its address's low 12 bits
# first): a pass reads one pair and writes the other at like offsets, and buffers of
# powers of two were multiples of 4 KiB long. Zen 4, 1 thread, complex128, GF/s, load
# 5-7 (CI jobs), interleaved medians of 7-15 runs, skewed vs not: 256 x 256 batch 20.5
# vs 16.2 (pads of 40..136 floats all 19-20.5, 8 floats 14.3); 1024 x 1024 18.4 vs 13.4;
# 2^16 22.8 vs 20.5; 2^19 15.3 vs 13.4; 2^10 15.1 vs 14.7 (4 KiB buffers, not skewed); but
# 2^12 (8 KiB buffers) 22.0 vs 24.0, hence SKEW_MIN; 2^13 22.6 vs 23.2, 2^14 24.0 vs 24.5.
BUF_SKEW = 1088
Z_SKEW = True  # Z's imaginary parts likewise skewed from its real parts
SKEW_MIN = 16 << 10


def _skewed(k: int, itemsize: int) -> int:
    """A pass buffer's length for k elements: whole cache lines, and from SKEW_MIN bytes
    whole pages plus BUF_SKEW bytes."""
    k = _round(k, itemsize)
    if not BUF_SKEW or k * itemsize < SKEW_MIN:
        return k
    page = 4096 // itemsize
    return -(-k // page) * page + BUF_SKEW // itemsize


def row_block(n: int, block: int, itemsize: int, cpu: _cpu.CpuInfo | None = None) -> int:
    """Rows per row block: the plan's block, or one vector's worth where the four buffers
    of ``block`` rows of n would outgrow ROW_BLOCK_L1 (``cpu``'s, the host's by default)."""
    w = lanes(itemsize)
    bound = ROW_BLOCK_L1_INTEL_AVX512 if _intel_avx512(cpu) else ROW_BLOCK_L1
    return w if n * block * itemsize * 4 > bound else block


@lru_cache(maxsize=64)
def plan(n: int, dtype: Any) -> Plan:
    """Split n into n1 * n2 (split) and tabulate."""
    n1, n2 = split(n)
    item = np.dtype(dtype).itemsize
    w = lanes(item)
    block = w
    for vectors in (4, 2) if n >= wide_from() and n not in NARROW_BLOCK else (2,):
        if n1 % (vectors * w) == 0 and n2 % (vectors * w) == 0:
            block = vectors * w
            break
    block2 = block
    v2 = STEP2_VECTORS.get(n, 0)
    if v2 and n2 % (v2 * w) == 0 and n1 % w == 0 and v2 * w <= block:
        block2 = v2 * w
    tile = block2 if Z_TILED and Z_TILE.get(n, 1) and n2 % block2 == 0 else n2
    rows = ROW_BLOCK_ROWS.get(n, 0) or row_block(n, block, item)
    nb1 = -(-n1 // block)
    k2 = np.arange(n2)
    # W_N^(n1 k2) = W_N^(c0 k2) * W_N^(c k2) with n1 = c0 + c, c0 a multiple of the block
    wr = np.exp(-2j * np.pi * np.outer(np.arange(nb1) * block, k2) / n).reshape(-1)
    wc = np.exp(-2j * np.pi * np.outer(k2, np.arange(block)) / n).reshape(-1)
    r1, o1, tr1, ti1 = _stage_tables(n1, dtype)
    r2, o2, tr2, ti2 = _stage_tables(n2, dtype)
    rf, of, trf, tif = _stage_tables(n if n <= ROW_BLOCK_MAX else 1, dtype)
    floats = [tr1, ti1, tr2, ti2, wr.real, wr.imag, wc.real, wc.imag, trf, tif]
    fb, fseg = _pack([np.asarray(a, dtype) for a in floats], dtype)
    ib, iseg = _pack([r1, o1, r2, o2, rf, of], np.int64)
    size0 = _skewed(max(n1, n2) * block, item)
    size1 = max(size0, _skewed(n * rows, item)) if n <= ROW_BLOCK_MAX else size0
    zlen = _skewed(n, item) if Z_SKEW else _round(n, 8)  # from zr to zi
    head = np.array([n, n1, n2, block, size0, size1, block2, tile, rows, zlen], np.int64)
    stream = int(n >= STREAM_OUT and n & (n - 1) == 0)
    meta = np.concatenate([head, fseg, iseg, ib, [stream]]).astype(np.int64)
    assert len(head) == HEAD and len(head) + len(fseg) + len(iseg) == META
    return Plan(n, n1, n2, block, fb, meta, size1, 4 * size1 + 2 * zlen, block2, tile, rows,
                zlen)  # fmt: skip


@jit()
def _tables(fb: Any, meta: Any, work: Any, size: int) -> Any:
    """The tuple the steps index: the unpacked tables, then four pass buffers from ``work``."""

    def f(i: int) -> Any:
        return fb[meta[HEAD + 2 * i] : meta[HEAD + 1 + 2 * i]]

    def g(i: int) -> Any:
        return meta[META + meta[HEAD + 20 + 2 * i] : META + meta[HEAD + 21 + 2 * i]]

    return (g(0), g(1), f(0), f(1), g(2), g(3), f(2), f(3), f(4), f(5), f(6), f(7),
            g(4), g(5), f(8), f(9), work[0:size], work[size : 2 * size],
            work[2 * size : 3 * size], work[3 * size : 4 * size])  # fmt: skip


@jit()
def _zo(n1: int, tw: int, r: int, c: int) -> int:
    """Where Z's element (r, c) is: Z (n1 x n2) is stored as n2 / tw tiles of n1 x tw, each
    row-major (``tw`` = n2: Z row-major)."""
    return (c // tw) * (n1 * tw) + r * tw + c % tw


@jit()
def _to_z(tr: Any, ti: Any, zr: Any, zi: Any, n1: int, n2: int, B: int, b: int, c0: int,
          tw: int, zsh: int, zt: bool) -> None:  # fmt: skip
    """Step 1's block (row k2 of (tr, ti): the B columns' output k2), transposed into Z's
    rows c0..c0+b (``zt``: by non-temporal stores). Z's columns are stored rotated by
    ``zsh``: output k2 at column (k2 - zsh) mod n2 of Z's tiles (see _zo), so that where
    step 2's blocks start at zsh + u * tile (an output ``zsh`` elements off a vector
    boundary, _unit2), each block is one tile; the w columns that wrap round are copied
    one by one."""
    w = vlanes(tr)
    if b == B and n2 % w == 0:
        for k in range(0, n2, w):
            kr = k + zsh
            if kr + w <= n2:
                for q in range(0, B, w):
                    zo = _zo(n1, tw, c0 + q, k)
                    if zt:
                        vtranspose_nt(tr, kr * B + q, B, zr, zo, tw)
                        vtranspose_nt(ti, kr * B + q, B, zi, zo, tw)
                    else:
                        vtranspose(tr, kr * B + q, B, zr, zo, tw)
                        vtranspose(ti, kr * B + q, B, zi, zo, tw)
            else:
                for i in range(w):
                    kk = (kr + i) % n2
                    for c in range(B):
                        zo = _zo(n1, tw, c0 + c, k + i)
                        zr[zo] = tr[kk * B + c]
                        zi[zo] = ti[kk * B + c]
    else:
        for c in range(b):
            for k2 in range(n2):
                zo = _zo(n1, tw, c0 + c, (k2 + n2 - zsh) % n2)
                zr[zo] = tr[k2 * B + c]
                zi[zo] = ti[k2 * B + c]


@jit()
def _step1(xf: Any, xo: int, n1: int, n2: int, B: int, blk: int, sg: float, tb: Any,
           zr: Any, zi: Any, tw: int, zsh: int, zt: bool) -> None:  # fmt: skip
    """Columns c0..c0+B of x (as n2 x n1): length-n2 transforms, twiddle, transpose into Z
    (see _to_z; ``zt``: by non-temporal stores, see Z_STREAM).

    ``xf`` is the input as interleaved re/im floats; ``xo`` the row's first complex index.
    """
    rad, off, twr, twi = tb[4], tb[5], tb[6], tb[7]
    wrr, wri, wcr, wci = tb[8], tb[9], tb[10], tb[11]
    tr, ti, ur, ui = tb[16], tb[17], tb[18], tb[19]
    w = vlanes(tr)
    c0 = blk * B
    b = min(B, n1 - c0)
    sgv = vsplat(tr, sg)
    npass = rad.shape[0]
    if (
        b == B
        and n2 % w == 0
        and npass >= 2
        and (rad[0] == 8 or rad[0] == 4)
        and (rad[npass - 1] == 8 or rad[npass - 1] == 4)
    ):  # first pass reads x, last pass applies the twiddles: no copy in, no twiddle sweep
        r = rad[0]
        pass_from(r, xf, xf, xo + c0, n1, tr, ti, n2, B, twr, twi, off[0], True, sg)
        s = B * r
        L = n2 // r
        src = 0
        for st in range(1, npass - 1):
            r = rad[st]
            if src == 0:
                _pass(r, tr, ti, ur, ui, L, s, twr, twi, off[st])
            else:
                _pass(r, ur, ui, tr, ti, L, s, twr, twi, off[st])
            src ^= 1
            s *= r
            L //= r
        if src == 0:
            last_tw(rad[npass - 1], tr, ti, ur, ui, s, B, wrr, wri, blk * n2, wcr, wci)
            tr, ti = ur, ui
        else:
            last_tw(rad[npass - 1], ur, ui, tr, ti, s, B, wrr, wri, blk * n2, wcr, wci)
        _to_z(tr, ti, zr, zi, n1, n2, B, b, c0, tw, zsh, zt)
        return
    for r in range(n2):
        src = xo + r * n1 + c0
        d = r * B
        if b == B:
            for q in range(0, B, w):
                vstore(tr, d + q, vload_even(xf, 2 * (src + q)))
                vstore(ti, d + q, vmul(sgv, vload_odd(xf, 2 * (src + q))))
        else:
            for c in range(b):
                tr[d + c] = xf[2 * (src + c)]
                ti[d + c] = sg * xf[2 * (src + c) + 1]
            for c in range(b, B):
                tr[d + c] = 0
                ti[d + c] = 0
    if stockham(tr, ti, ur, ui, n2, B, rad, off, twr, twi) == 1:
        tr, ti = ur, ui
    wo = blk * n2
    for k2 in range(n2):
        br = vbcast(wrr, wo + k2)
        bi = vbcast(wri, wo + k2)
        for q in range(0, B, w):
            o = k2 * B + q
            cr = vload(wcr, o)
            ci = vload(wci, o)
            twr_ = vfnma(bi, ci, vmul(br, cr))
            twi_ = vfma(br, ci, vmul(bi, cr))
            xr = vload(tr, o)
            xi = vload(ti, o)
            vstore(tr, o, vfnma(xi, twi_, vmul(xr, twr_)))
            vstore(ti, o, vfma(xr, twi_, vmul(xi, twr_)))
    _to_z(tr, ti, zr, zi, n1, n2, B, b, c0, tw, zsh, False)


@jit()
def _step2(of: Any, oo: int, n1: int, n2: int, B: int, k0: int, sg: float, scale: float,
           tb: Any, zr: Any, zi: Any, tw: int, zsh: int, nt: bool) -> None:  # fmt: skip
    """Output columns k0..k0+B (mod n2), from Z's columns k0 - zsh.. (n1 x n2, in tiles
    ``tw`` wide, each block within one tile, see _to_z): length-n1 transforms, written in
    natural order (``nt``: by non-temporal stores, each then vector-aligned).

    ``of`` is the output as interleaved re/im floats; ``oo`` the row's first complex index.
    """
    rad, off, twr, twi = tb[0], tb[1], tb[2], tb[3]
    tr, ti, ur, ui = tb[16], tb[17], tb[18], tb[19]
    w = vlanes(tr)
    v0 = (k0 + n2 - zsh) % n2  # the block's first column in Z
    b = min(B, n2 - v0)
    wraps = k0 + b > n2  # the last block of a rotated Z: its output columns wrap round
    npass = rad.shape[0]
    if (
        b == B
        and not wraps
        and npass >= 2
        and (rad[0] == 8 or rad[0] == 4)
        and (rad[npass - 1] == 8 or rad[npass - 1] == 4)
    ):  # first pass reads Z, last pass writes the output: no copy in or out
        r = rad[0]
        pass_from(r, zr, zi, _zo(n1, tw, 0, v0), tw, tr, ti, n1, B, twr, twi, off[0], False, 1.0)
        s = B * r
        L = n1 // r
        src = 0
        for st in range(1, npass - 1):
            r = rad[st]
            if src == 0:
                _pass(r, tr, ti, ur, ui, L, s, twr, twi, off[st])
            else:
                _pass(r, ur, ui, tr, ti, L, s, twr, twi, off[st])
            src ^= 1
            s *= r
            L //= r
        sre = vsplat(tr, scale)
        sim = vsplat(tr, sg * scale)
        if src == 0:
            last_out(rad[npass - 1], tr, ti, of, s, B, oo + k0, n2, sre, sim, nt)
        else:
            last_out(rad[npass - 1], ur, ui, of, s, B, oo + k0, n2, sre, sim, nt)
        return
    for r in range(n1):
        src = _zo(n1, tw, r, v0)
        d = r * B
        if b == B:
            for q in range(0, B, w):
                vstore(tr, d + q, vload(zr, src + q))
                vstore(ti, d + q, vload(zi, src + q))
        else:
            for c in range(b):
                tr[d + c] = zr[src + c]
                ti[d + c] = zi[src + c]
            for c in range(b, B):
                tr[d + c] = 0
                ti[d + c] = 0
    if stockham(tr, ti, ur, ui, n1, B, rad, off, twr, twi) == 1:
        tr, ti = ur, ui
    sre = vsplat(tr, scale)
    sim = vsplat(tr, sg * scale)
    for r in range(n1):
        d = oo + r * n2 + k0
        s = r * B
        if b == B and not wraps:
            for q in range(0, B, w):
                re = vmul(sre, vload(tr, s + q))
                im = vmul(sim, vload(ti, s + q))
                vstore_interleaved(of, 2 * (d + q), re, im)
        else:
            for c in range(b):
                e = oo + r * n2 + (k0 + c) % n2
                of[2 * e] = scale * tr[s + c]
                of[2 * e + 1] = sg * scale * ti[s + c]


@jit()
def _rows_block(xf: Any, of: Any, r0: int, n: int, B: int, sg: float, scale: float,
                tb: Any) -> None:  # fmt: skip
    """Rows r0..r0+B as B interleaved length-n transforms in one cache-resident buffer."""
    rad, off, twr, twi = tb[12], tb[13], tb[14], tb[15]
    tr, ti, ur, ui = tb[16], tb[17], tb[18], tb[19]
    w = vlanes(tr)
    if n % w == 0 and B % w == 0:  # w x w tiles of the rows, split and transposed at once
        sgv = vsplat(tr, sg)
        for c in range(0, B, w):
            for j in range(0, n, w):
                vtranspose_in(xf, 2 * ((r0 + c) * n + j), 2 * n, tr, ti, j * B + c, B, sgv)
    else:
        for c in range(B):
            src = 2 * (r0 + c) * n
            for j in range(n):
                tr[j * B + c] = xf[src + 2 * j]
                ti[j * B + c] = sg * xf[src + 2 * j + 1]
    if stockham(tr, ti, ur, ui, n, B, rad, off, twr, twi) == 1:
        tr, ti, ur, ui = ur, ui, tr, ti
    if n % w == 0 and B % w == 0:  # transposed back, scaled and interleaved at once
        sre = vsplat(tr, scale)
        sim = vsplat(tr, sg * scale)
        for k in range(0, n, w):
            for c in range(0, B, w):
                vtranspose_out(tr, ti, k * B + c, B, of, 2 * ((r0 + c) * n + k), 2 * n, sre, sim)
    else:
        for c in range(B):
            d = 2 * (r0 + c) * n
            for k in range(n):
                of[d + 2 * k] = scale * tr[k * B + c]
                of[d + 2 * k + 1] = sg * scale * ti[k * B + c]


def _floats(x):  # type: ignore[no-untyped-def]
    """A 1-D C-contiguous complex array as its interleaved re/im floats (jitted code only)."""
    raise NotImplementedError("called from jitted code only")


@overload(_floats, jit_options=OPTIONS)
def _floats_impl(x):  # type: ignore[no-untyped-def]
    real = x.dtype.underlying_float

    def impl(x):  # type: ignore[no-untyped-def]
        return x.view(real)

    return impl


@jit()
def _stream_shift(out: Any, meta: Any) -> int:
    """How step 2 writes the output: -1, ordinary stores; else non-temporal stores (where
    the plan says so: powers of two from STREAM_OUT points, whose output no longer fits
    the caches, and ordinary stores would read every line of it first), its column blocks
    starting this many complex elements past a multiple of B, where each block's rows
    start on a vector boundary (0 for a vector-aligned output; numpy's own arrays start
    16 bytes past a cache line, so complex128 takes 3); see _unit2."""
    if meta[meta.shape[0] - 1] != 1:
        return -1
    m = misalignment(out)  # floats
    if m == 0:
        return 0
    n2, B = meta[2], meta[6]
    if m % 2 or n2 % B or n2 < 2 * B:
        return -1
    return m // 2


@jit()
def _units2(nb2: int, sh: int, tiled: bool) -> int:
    """Step 2's column blocks: nb2, one more where shifted over a row-major Z (_unit2)."""
    return nb2 + 1 if sh > 0 and not tiled else nb2


@jit()
def _unit2(u: int, nb2: int, B: int, n2: int, sh: int, tiled: bool) -> Any:
    """(first column, non-temporal) of step 2's u-th column block. Shifted by sh > 0,
    the first nb2 - 1 blocks start at sh + u*B, their output rows vector-aligned; over a
    tiled Z (whose columns step 1 stored rotated by sh, _to_z) the last block, of
    ordinary stores, covers the columns left at either end, [n2 - B + sh, n2) and
    [0, sh); over a row-major Z two blocks of ordinary stores cover them, [0, B) and
    [n2 - B, n2): each overlaps a streamed block by a few columns, whose values it writes
    again (bit for bit the same: each column is its own transform, in its own lanes)."""
    if sh < 0:
        return u * B, False
    if sh == 0:
        return u * B, True
    if tiled:
        return sh + u * B, u < nb2 - 1
    if u < nb2 - 1:
        return sh + u * B, True
    if u == nb2 - 1:
        return 0, False
    return n2 - B, False


@jit()
def _z_streaming(n: int, n2: int, zr: Any, zi: Any, tw: int) -> bool:
    """Whether step 1 writes Z with non-temporal stores (see Z_STREAM)."""
    w = vlanes(zr)
    return (
        n >= Z_STREAM
        and n2 % w == 0
        and tw % w == 0
        and misalignment(zr) == 0
        and misalignment(zi) == 0
    )


@jit()
def _fft_rows(xc: Any, oc: Any, rows: int, inv: bool, fb: Any, meta: Any, work: Any, sync: Any,
              threads: int) -> None:  # fmt: skip
    """Row blocks, then the rows left over, on one thread with no allocation: all of them
    (``threads`` 1), or those this thread takes from the counter ``sync[0]``. ``xc`` and
    ``oc`` are the rows, input and output, as 1-D complex arrays (viewed as floats here,
    not by the caller: two views cost ~0.4 us a call); ``work`` is this thread's: four
    pass buffers, then Z (Plan.work1 long)."""
    x = _floats(xc)
    out = _floats(oc)
    n, n1, n2, B = meta[0], meta[1], meta[2], meta[3]
    B2, RB = meta[6], meta[8]
    sh = _stream_shift(out, meta)
    tw = meta[7]
    tiled = tw != n2
    zsh = sh if tiled and sh > 0 else 0  # Z's columns rotated to step 2's blocks
    row_blocks = n <= ROW_BLOCK_MAX and rows >= RB
    size = meta[5] if row_blocks else meta[4]
    sg = -1.0 if inv else 1.0
    scale = 1.0 / n if inv else 1.0
    nb1 = (n1 + B - 1) // B
    nb2 = (n2 + B2 - 1) // B2
    tb = _tables(fb, meta, work, size)
    zo = 4 * size
    nz = meta[9]
    zr = work[zo : zo + n]
    zi = work[zo + nz : zo + nz + n]
    nrb = rows // RB if row_blocks else 0
    units = nrb + rows - nrb * RB  # the row blocks, then one unit per leftover row
    u = 0 if threads == 1 else atomic_add(sync, 0, 1)
    while u < units:
        if u < nrb:
            _rows_block(x, out, u * RB, n, RB, sg, scale, tb)
        else:
            row = nrb * RB + u - nrb
            zt = _z_streaming(n, n2, zr, zi, tw)
            for blk in range(nb1):
                _step1(x, row * n, n1, n2, B, blk, sg, tb, zr, zi, tw, zsh, zt)
            if zt:
                fence()
            for v in range(_units2(nb2, sh, tiled)):
                k0, nt = _unit2(v, nb2, B2, n2, sh, tiled)
                _step2(out, row * n, n1, n2, B2, k0, sg, scale, tb, zr, zi, tw, zsh, nt)
        u = u + 1 if threads == 1 else atomic_add(sync, 0, 1)
    if sh >= 0:
        fence()


@jit()
def _fft_rows_placed(xc: Any, buf: Any, rows: int, inv: bool, fb: Any, meta: Any, work: Any,
                     size: int) -> int:  # fmt: skip
    """``_fft_rows`` on one thread into the first ``size`` elements of ``buf`` from its first
    cache line (``buf`` is ALIGN bytes longer than that); returns their offset. fft()'s
    own output is placed so: read here, the buffer's address costs nothing, where finding
    it from Python (aligned_empty) took ~1 us a call, a tenth of a 2^12 transform."""
    off = (-buf.ctypes.data & (ALIGN - 1)) // buf.itemsize
    _fft_rows(xc, buf[off : off + size], rows, inv, fb, meta, work, _NO_SYNC, 1)
    return off


@jit()
def _fft_cols(xc: Any, oc: Any, row: int, inv: bool, fb: Any, meta: Any, work: Any, zr: Any,
              zi: Any, phase: int, sync: Any, slot: int) -> None:  # fmt: skip
    """The column blocks of one row that this thread takes from the counter ``sync[slot]``:
    step 1's (``phase`` 1, into the shared Z = zr, zi) or step 2's (``phase`` 2, from Z);
    ``work``: this thread's pass buffers."""
    x = _floats(xc)
    out = _floats(oc)
    n, n1, n2, B = meta[0], meta[1], meta[2], meta[3]
    B2 = meta[6]
    sh = _stream_shift(out, meta)
    tw = meta[7]
    tiled = tw != n2
    zsh = sh if tiled and sh > 0 else 0  # Z's columns rotated to step 2's blocks
    sg = -1.0 if inv else 1.0
    scale = 1.0 / n if inv else 1.0
    tb = _tables(fb, meta, work, meta[4])
    blk = atomic_add(sync, slot, 1)
    if phase == 1:
        zt = _z_streaming(n, n2, zr, zi, tw)
        while blk < (n1 + B - 1) // B:
            _step1(x, row * n, n1, n2, B, blk, sg, tb, zr, zi, tw, zsh, zt)
            blk = atomic_add(sync, slot, 1)
        if zt:
            fence()
    else:
        nb2 = (n2 + B2 - 1) // B2
        while blk < _units2(nb2, sh, tiled):
            k0, nt = _unit2(blk, nb2, B2, n2, sh, tiled)
            _step2(out, row * n, n1, n2, B2, k0, sg, scale, tb, zr, zi, tw, zsh, nt)
            blk = atomic_add(sync, slot, 1)
        if sh >= 0:
            fence()


_REAL = {"D": "d", "F": "f"}
# Transforms this small (all rows together) run on the calling thread: waking the pool's
# threads costs 20-30 us on an idle host, more on a busy one; and one row's column blocks
# are shared only from COLUMNS_MIN points. Below, a second thread was no faster, or
# slower. 2-vCPU AMD EPYC Zen 4 KVM guest, load 0.6, GF/s, medians of 15, 1 thread vs 2,
# back to back / each after a 0.15 s pause and 2 ms of untimed calls: one row 2^16 24.5
# vs 18.4 / 23.9 vs 20.4; 2^17 26.6 vs 24.2 / 26.9 vs 24.7; 256 x 256 18.5 vs 19.9 / 18.7
# vs 15.8; 64 x 1024 22.0 vs 22.4 / 17.2 vs 15.6; while 2^18 (1.0 vs 0.70 ms) and
# 1024 x 1024 (19.2 vs 35.8) gain back to back.
PARALLEL_MIN = 1 << 17
COLUMNS_MIN = 1 << 18
_NO_SYNC = np.zeros(1, np.int64)  # the counter argument of a one-thread call (unused)

_local = threading.local()
# Per thread: (shape, dtype) of a 1-D input under PARALLEL_MIN points -> what fft()'s
# one-thread path into its own output needs (entry, tables, workspace, size, padding), so
# that a repeated call skips the checks and lookups. Filled by that path for C-contiguous,
# aligned, writeable inputs (the entry's signature); at most FAST_MAX kept. 2-vCPU AMD
# EPYC Zen 4 KVM guest, us a call, medians of 9 timeit rounds, two runs, before / after
# (FFTPlan beside): 2^10 complex128 5.38-5.89 / 4.74-5.33 (3.36-3.69), complex64
# 3.92-4.37 / 3.29-3.54 (2.10-2.15); 2^12 complex128 12.5-17.9 / 11.7-14.2 (10.5-12.4),
# complex64 7.69-7.95 / 7.21-7.23 (5.78-6.04).
FAST_MAX = 64


_ENTRIES: dict[tuple[Any, ...], Any] = {}


def _rows_entry(args: tuple[Any, ...], placed: bool = False) -> Any:
    """The compiled ``_fft_rows`` (``_fft_rows_placed`` if ``placed``) for these arguments,
    called without the dispatcher (whose typing of nine arguments costs ~1 us, a tenth of
    a 2^12 transform). Only the input and output arrays' flags can change the signature;
    the other arguments are the plan's and the workspace's, always of one type per dtype."""
    xf, of = args[0], args[1]
    fx = xf.flags
    key = (placed, xf.dtype.char, fx.writeable, fx.aligned, of.flags.aligned)
    entry = _ENTRIES.get(key)
    if entry is None:
        fn = _fft_rows_placed if placed else _fft_rows
        sig = tuple(typeof(a) for a in args)
        cres = fn.overloads.get(sig)
        if cres is None:
            fn.compile(sig)  # compiles, or loads from the cache, the specialisation
            cres = fn.overloads[sig]
        entry = _ENTRIES[key] = cres.entry_point
    return entry


def _workspace(size: int, key: str) -> np.ndarray[Any, Any]:
    """Aligned scratch of dtype ``key``, kept per Python thread so repeated calls neither
    allocate nor page-fault."""
    cache: dict[str, np.ndarray[Any, Any]] | None = getattr(_local, "ws", None)
    if cache is None:
        cache = _local.ws = {}
    have = cache.get(key)
    if have is None or have.size < size:
        have = aligned_empty(size, key)
        cache[key] = have
    return have


def fft(
    x: np.ndarray[Any, Any],
    *,
    inverse: bool = False,
    threads: int | None = None,
    out: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """Discrete Fourier transform along the last axis (numpy's sign and scaling conventions:
    the inverse is divided by N). ``out``, if given, must be a C-contiguous array of x's
    shape and dtype; else a 64-byte aligned one is allocated (long transforms write either
    with non-temporal stores, see STREAM_OUT)."""
    # Remembered inputs (see FAST_MAX) are short: one thread, whatever ``threads`` asks.
    if out is None and type(x) is np.ndarray and (threads is None or type(threads) is int):
        try:
            fast = _local.fast.get((x.shape, x.dtype))
        except AttributeError:
            fast = None
        if fast is not None and (threads is None or threads > 0):
            fx = x.flags
            if fx.c_contiguous and fx.aligned and fx.writeable:
                entry, fb, meta, work, size, pad, dt = fast
                buf = np.empty(size + pad, dt)
                off = entry(x, buf, 1, bool(inverse), fb, meta, work, size)
                return buf[off : off + size]
    if type(x) is not np.ndarray:
        x = np.asarray(x)
    dt = x.dtype
    if not dt.isnative:  # numba's arrays are native-endian
        x = x.astype(dt.newbyteorder("="))
        dt = x.dtype
    real = _REAL.get(dt.char)
    if real is None:
        raise TypeError(f"fft needs complex64 or complex128 input, got {dt}")
    shape = x.shape
    if not shape:
        raise ValueError("fft needs at least 1-D input")
    n = shape[-1]
    p = plan(n, real)
    if out is not None and (out.shape != shape or out.dtype != dt or not out.flags.c_contiguous):
        raise ValueError("out must be C-contiguous with the input's shape and dtype")
    size = x.size
    if size == 0:
        return aligned_empty(0, dt).reshape(shape) if out is None else out
    fx = x.flags
    if len(shape) == 1 and fx.c_contiguous:
        xf = x
    else:
        xf = np.ascontiguousarray(x).reshape(-1)
        fx = xf.flags
    if threads is None:
        nthreads = max_threads()
    elif threads == 1:
        nthreads = 1
    else:
        nthreads = int(threads)
        if nthreads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
    rows = size // n
    inv = bool(inverse)
    columns = rows < nthreads or rows == 1  # threads would share one row's column blocks
    if nthreads == 1 or size < PARALLEL_MIN or (columns and n < COLUMNS_MIN):
        # the one-thread path, its lookups inlined: at 2^12 points each ~0.1 us counts
        try:
            work = _local.ws[real]
        except (AttributeError, KeyError):
            work = None
        if work is None or work.size < p.work1:
            work = _workspace(p.work1, real)
        if out is None:  # placed on a cache line by the compiled code (_fft_rows_placed)
            buf = np.empty(size + ALIGN // dt.itemsize, dt)
            pargs = (xf, buf, rows, inv, p.fb, p.meta, work, size)
            # _rows_entry's key (np.empty's arrays are aligned to their items)
            entry = _ENTRIES.get((True, dt.char, fx.writeable, fx.aligned, True))
            if entry is None:
                entry = _rows_entry(pargs, placed=True)
            off = entry(*pargs)
            out = buf[off : off + size]
            if len(shape) > 1:
                return out.reshape(shape)
            if size < PARALLEL_MIN and fx.aligned and fx.writeable:  # the entry's signature
                fast = getattr(_local, "fast", None)
                if fast is None or len(fast) >= FAST_MAX:
                    fast = _local.fast = {}
                fast[shape, dt] = (entry, p.fb, p.meta, work, size, ALIGN // dt.itemsize, dt)
            return out
        of = out if len(shape) == 1 else out.reshape(-1)
        args = (xf, of, rows, inv, p.fb, p.meta, work, _NO_SYNC, 1)
        entry = _ENTRIES.get((False, dt.char, fx.writeable, fx.aligned, of.flags.aligned))
        if entry is None:
            entry = _rows_entry(args)
        entry(*args)
        return out
    if out is None:
        out = aligned_empty(size, dt).reshape(shape)
    of = out.reshape(-1)
    nthreads = use_threads(nthreads)
    per = p.work1
    if rows >= nthreads and rows > 1:  # threads take rows (or row blocks) in turn
        work = _workspace(per * nthreads, real)
        sync = np.zeros(1, np.int64)
        calls = [(xf, of, rows, inv, p.fb, p.meta, work[t * per : (t + 1) * per], sync,
                  nthreads) for t in range(nthreads)]  # fmt: skip
        entry = _rows_entry(calls[0])
        run([(entry, args) for args in calls], skip_late=True)
        return out
    # threads take the column blocks of each row in turn, step 1's, then step 2's
    nthreads = min(nthreads, -(-max(p.n1, p.n2) // p.block))
    nz = p.zlen
    work = _workspace(per * nthreads + 2 * nz, real)
    zo = per * nthreads
    zr = work[zo : zo + n]
    zi = work[zo + nz : zo + nz + n]
    sync = np.zeros(2 * rows, np.int64)
    for row in range(rows):
        for phase in (1, 2):
            run([(_fft_cols, (xf, of, row, inv, p.fb, p.meta, work[t * per : (t + 1) * per],
                              zr, zi, phase, sync, 2 * row + phase - 1))
                 for t in range(nthreads)], skip_late=True)  # fmt: skip
    return out
