"""FFT against numpy.fft: every radix mix, both dtypes, batches, inverse round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from kernels import FFTPlan, _cpu, fft, fourier
from kernels._simd import lanes
from kernels.fourier import factor

SIZES = [1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 15, 16, 20, 25, 27, 30, 32, 45, 60, 64, 75, 81, 96,
         100, 120, 125, 128, 135, 243, 250, 256, 360, 375, 512, 625, 729, 1000, 1024, 1080,
         2048, 3125, 4096, 6561, 7680, 8000, 1 << 13, 1 << 14, 3**4 * 5**2 * 2**3,
         1 << 16]  # fmt: skip
TOL = {np.complex128: 1e-13, np.complex64: 2e-6}


def _signal(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _close(got: np.ndarray, ref: np.ndarray, dtype: type) -> None:
    scale = max(float(np.abs(ref).max(initial=0)), 1.0)
    assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * scale * 4)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("n", SIZES)
def test_forward_and_inverse(n: int, dtype: type) -> None:
    x = _signal((n,), dtype, seed=n)
    x128 = x.astype(np.complex128)
    y = fft(x)
    assert y.dtype == dtype and y.shape == x.shape
    _close(y, np.fft.fft(x128), dtype)
    _close(fft(x, inverse=True), np.fft.ifft(x128), dtype)
    _close(fft(y, inverse=True), x128, dtype)  # round trip


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape", [(3, 64), (2, 3, 120), (5, 1), (1, 4096), (4, 1000), (40, 96), (2, 17, 250), (33, 8)]
)
def test_batched(
    shape: tuple[int, ...], threads: int, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fourier, "PARALLEL_MIN", 1)  # small batches take the threaded paths too
    monkeypatch.setattr(fourier, "COLUMNS_MIN", 1)
    x = _signal(shape, dtype, seed=len(shape))
    _close(fft(x, threads=threads), np.fft.fft(x.astype(np.complex128), axis=-1), dtype)
    back = fft(fft(x, threads=threads), inverse=True, threads=threads)
    _close(back, x.astype(np.complex128), dtype)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("n", [1 << 17, 3 * (1 << 12), 1 << 20])
def test_threads_on_one_long_transform(
    n: int, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads share one row's column blocks (the fast path, the copying path for a mixed
    radix, and the size validate runs), meeting between the two steps."""
    monkeypatch.setattr(fourier, "PARALLEL_MIN", 1)
    monkeypatch.setattr(fourier, "COLUMNS_MIN", 1)
    x = _signal((n,), dtype, seed=7)
    x128 = x.astype(np.complex128)
    _close(fft(x, threads=2), np.fft.fft(x128), dtype)
    _close(fft(x, threads=2, inverse=True), np.fft.ifft(x128), dtype)


@pytest.mark.parametrize("shape", [(160, 1024), (9, 1 << 14), (33, 4000)])
def test_threads_take_rows_at_full_size(shape: tuple[int, ...]) -> None:
    """Batches past PARALLEL_MIN: row blocks and four-step rows shared out by a counter."""
    assert np.prod(shape) >= fourier.PARALLEL_MIN
    x = _signal(shape, np.complex128, seed=shape[0])
    _close(fft(x, threads=2), np.fft.fft(x, axis=-1), np.complex128)
    _close(fft(x, threads=2, inverse=True), np.fft.ifft(x, axis=-1), np.complex128)


def test_non_contiguous_input_and_out() -> None:
    x = _signal((6, 200), np.complex128, seed=3)
    view = x[::2, ::2]  # length 100 along the last axis, strided
    out = np.empty(view.shape, np.complex128)
    got = fft(view, out=out)
    assert got is out
    _close(out, np.fft.fft(view, axis=-1), np.complex128)


def test_input_not_modified() -> None:
    x = _signal((240,), np.complex128, seed=4)
    keep = x.copy()
    fft(x)
    fft(x, inverse=True)
    assert np.array_equal(x, keep)


@pytest.mark.parametrize("n", [7, 11, 14, 49, 1001, 2 * 7 * 5])
def test_unsupported_lengths(n: int) -> None:
    with pytest.raises(ValueError, match="2\\^a"):
        fft(np.zeros(n, np.complex128))


def test_errors() -> None:
    with pytest.raises(TypeError):
        fft(np.zeros(8))
    with pytest.raises(ValueError):
        fft(np.zeros((), np.complex128))
    with pytest.raises(ValueError, match="out"):
        fft(np.zeros(8, np.complex128), out=np.zeros(8, np.complex64))
    with pytest.raises(ValueError):
        factor(0)


def test_split() -> None:
    """Measured splits for the powers of two listed, else n1 <= n2 nearest sqrt(n)."""
    for n in [1, 2, 12, 96, 1000, 4096, 8000, *fourier.POW2_N1, 1 << 20, 1 << 22]:
        n1, n2 = fourier.split(n)
        assert n1 * n2 == n
        if n in fourier.POW2_N1:
            assert n1 == fourier.pow2_n1(n)
        else:
            assert n1 <= n2 and not any(n % d == 0 for d in range(n1 + 1, math.isqrt(n) + 1))
    with pytest.raises(ValueError):
        fourier.split(14)


def test_intel_avx512_cores_take_their_measured_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever CPU runs the test: an Intel AVX-512 core takes its table's split (2^16:
    256 x 256), an AMD or AVX2 one the general table's (1024 x 64); lengths the Intel
    table does not list are the general table's on both. Likewise the column blocks'
    and the row blocks' widths."""
    from kernels._cpu import CpuInfo

    def cpu(vendor: str, features: set[str]) -> CpuInfo:
        return CpuInfo("test", vendor, "x", frozenset(features), 48 << 10, 2 << 20, 32 << 20)

    intel = cpu("GenuineIntel", {"avx2", "fma", "avx512f"})
    others = [cpu("AuthenticAMD", {"avx2", "fma", "avx512f"}), cpu("GenuineIntel", {"avx2", "fma"})]
    assert fourier.pow2_n1(1 << 16, intel) == 256
    assert all(fourier.pow2_n1(1 << 16, c) == 1024 for c in others)
    for n in fourier.POW2_N1.keys() - fourier.POW2_N1_INTEL_AVX512.keys():
        assert {fourier.pow2_n1(n, c) for c in (intel, *others)} == {fourier.POW2_N1[n]}
    # Four vectors' column blocks from 2^11 on Intel's AVX-512 cores, from 2^17 on the
    # others: the plan of a 2^12-point transform on each
    assert fourier.wide_from(intel) == 1 << 11
    assert all(fourier.wide_from(c) == fourier.WIDE_BLOCK == 1 << 17 for c in others)
    for host, vectors in ((intel, 4), (others[0], 2)):
        monkeypatch.setattr(_cpu, "host", lambda host=host: host)
        fourier.plan.cache_clear()
        try:
            assert fourier.plan(1 << 12, "d").block == vectors * lanes(8)
        finally:
            monkeypatch.undo()
            fourier.plan.cache_clear()
    # Batched rows: two vectors' rows at a time up to 512 points on Intel's AVX-512
    # cores, one vector's from 128 points on the others (four buffers over 32 KiB).
    w, block = lanes(8), 16  # complex128: a block of 16 rows is two AVX-512 vectors
    assert [fourier.row_block(n, block, 8, intel) for n in (256, 512, 1024)] == [16, 16, w]
    assert fourier.row_block(32, block, 8, others[0]) == 16
    assert [fourier.row_block(n, block, 8, c) for n in (256, 512) for c in others] == [w] * 4


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("rows_of", ["one vector", "two vectors"])
def test_batched_rows_in_blocks_of_one_or_two_vectors(
    dtype: type, rows_of: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both row-block sizes the CPU can choose, forced whatever CPU runs the test, at the
    lengths where Intel's AVX-512 cores and the others choose differently."""
    real = np.dtype(np.float64 if dtype == np.complex128 else np.float32)
    w = lanes(real.itemsize)
    try:
        for n in (256, 512):
            monkeypatch.setitem(fourier.ROW_BLOCK_ROWS, n, w if rows_of == "one vector" else 2 * w)
            fourier.plan.cache_clear()
            assert fourier.plan(n, real.char).rows == fourier.ROW_BLOCK_ROWS[n]
            x = _signal((3 * w + 5, n), dtype, seed=n)
            for threads in (1, 2):
                _close(fft(x, threads=threads), np.fft.fft(x.astype(np.complex128)), dtype)
            _close(fft(fft(x), inverse=True), x.astype(np.complex128), dtype)
    finally:
        fourier.plan.cache_clear()


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("vectors", [4, 2])
def test_wide_column_blocks(dtype: type, vectors: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four-vector column blocks (from ``wide_from`` on, but NARROW_BLOCK's lengths) and
    two-vector ones, forced whatever CPU runs the test (Intel's AVX-512 cores take four
    from 2^11, the others from 2^17), at lengths small enough to test, one thread and two
    (the threads share one row's column blocks)."""
    from kernels._simd import lanes

    start = 1 << 11 if vectors == 4 else 1 << 30
    monkeypatch.setattr(fourier, "WIDE_BLOCK", start)
    monkeypatch.setattr(fourier, "WIDE_BLOCK_INTEL_AVX512", start)
    fourier.plan.cache_clear()
    try:
        real = np.float64 if dtype == np.complex128 else np.float32
        w = lanes(np.dtype(real).itemsize)
        for m in fourier.NARROW_BLOCK:  # measured exceptions: two vectors
            assert fourier.plan(m, np.dtype(real).char).block == 2 * w
        monkeypatch.setattr(fourier, "PARALLEL_MIN", 1)
        monkeypatch.setattr(fourier, "COLUMNS_MIN", 1)
        for n in (1 << 11, 1 << 12, 1 << 13):
            n1, n2 = fourier.split(n)
            fits = n1 % (vectors * w) == 0 and n2 % (vectors * w) == 0
            assert fourier.plan(n, np.dtype(real).char).block == (vectors if fits else 2) * w
            x = _signal((n,), dtype, seed=5)
            for threads in (1, 2):
                _close(fft(x, threads=threads), np.fft.fft(x.astype(np.complex128)), dtype)
                back = fft(fft(x, threads=threads), inverse=True, threads=threads)
                _close(back, x.astype(np.complex128), dtype)
    finally:
        fourier.plan.cache_clear()


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("n1", [256, 1024])
def test_each_measured_split_of_2_16(dtype: type, n1: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """2^16 as 256 x 256 (Intel's AVX-512 cores) and as 1024 x 64 (the others), forced
    whatever CPU runs the test, forward and back."""
    monkeypatch.setitem(fourier.POW2_N1, 1 << 16, n1)
    monkeypatch.setattr(fourier, "POW2_N1_INTEL_AVX512", {})
    fourier.plan.cache_clear()
    try:
        real = np.float64 if dtype == np.complex128 else np.float32
        assert fourier.plan(1 << 16, np.dtype(real).char).n1 == n1
        x = _signal((1 << 16,), dtype, seed=7)
        _close(fft(x), np.fft.fft(x.astype(np.complex128)), dtype)
        _close(fft(fft(x), inverse=True), x.astype(np.complex128), dtype)
    finally:
        fourier.plan.cache_clear()


def test_factor() -> None:
    assert factor(1) == []
    assert factor(64) == [4, 4, 4]
    assert factor(2 * 3 * 5 * 4) == [4, 2, 3, 5]


def test_z_streamed_from_z_stream() -> None:
    """Step 1 streams Z from Z_STREAM points, into vector-aligned rows only; a batch of
    such rows, one thread (rows) and two (rows shared out)."""
    z = fourier.aligned_empty(1 << 21, np.float64)
    assert fourier._z_streaming(fourier.Z_STREAM, 512, z, z, 512)
    assert fourier._z_streaming(fourier.Z_STREAM, 512, z, z, 32)
    assert not fourier._z_streaming(fourier.Z_STREAM // 2, 512, z, z, 512)
    assert not fourier._z_streaming(fourier.Z_STREAM, 512, z[1:], z, 512)
    w = lanes(8)  # float64 lanes per vector on this host: 4 with AVX2, 8 with AVX-512
    assert not fourier._z_streaming(fourier.Z_STREAM, 512, z, z, w + w // 2)
    x = _signal((2, fourier.Z_STREAM), np.complex128, seed=12)
    ref = np.fft.fft(x, axis=-1)
    for threads in (1, 2):
        _close(fft(x, threads=threads), ref, np.complex128)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("n", [1 << 18, 1 << 19, 1 << 20, 3 * (1 << 12)])
def test_long_lengths(n: int, dtype: type) -> None:
    """Four-step splits whose column transforms run three radix-8 passes (512 x 512,
    512 x 1024), 2^20 (Z written with non-temporal stores, Z_STREAM) and a mixed split
    that takes the copying path."""
    x = _signal((n,), dtype, seed=11)
    x128 = x.astype(np.complex128)
    _close(fft(x, threads=1), np.fft.fft(x128), dtype)
    _close(fft(x, inverse=True, threads=1), np.fft.ifft(x128), dtype)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape",
    [(16, 256), (13, 1024), (9, 384), (20, 60), (11, 250), (17, 32), (2, 8, 512), (9, 2048)],
)
def test_row_blocks(
    shape: tuple[int, ...], threads: int, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched rows go through the row-block path: vectorised transposes (n a multiple of
    the lanes), the scalar copies (n = 250, 60 for complex64), full-width blocks and blocks
    shrunk to one vector (rows of 256 and more would overflow L1), and leftover rows; rows
    longer than ROW_BLOCK_MAX (1024) take the four-step path row by row."""
    from kernels._simd import lanes
    from kernels.fourier import plan

    monkeypatch.setattr(fourier, "PARALLEL_MIN", 1)
    monkeypatch.setattr(fourier, "COLUMNS_MIN", 1)
    x = _signal(shape, dtype, seed=shape[-1])
    _close(fft(x, threads=threads), np.fft.fft(x.astype(np.complex128), axis=-1), dtype)
    back = fft(fft(x, threads=threads), inverse=True, threads=threads)
    _close(back, x.astype(np.complex128), dtype)
    real = np.float64 if dtype == np.complex128 else np.float32
    p = plan(shape[-1], np.dtype(real).char)
    assert p.rows in (p.block, lanes(np.dtype(real).itemsize))


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize(("shape", "threads"), [((4096,), 1), ((1000,), 2), ((1 << 17,), 2),
                                                ((3, 64), 1), ((5, 96), 2)])  # fmt: skip
def test_plan_matches_fft_and_follows_its_input(
    shape: tuple[int, ...], threads: int, inverse: bool, dtype: type
) -> None:
    """A plan's serial path (the bound entry point) and its others (fft() itself): each
    call transforms what the bound input holds at the time."""
    x = _signal(shape, dtype, seed=shape[-1])
    out = np.empty_like(x)
    p = FFTPlan(x, out, inverse=inverse, threads=threads)
    for seed in (1, 2):
        x[...] = _signal(shape, dtype, seed=seed)
        assert p() is out
        ref = np.fft.ifft if inverse else np.fft.fft
        _close(out, ref(x.astype(np.complex128), axis=-1), dtype)
    assert FFTPlan(x, inverse=inverse, threads=threads)().shape == shape


def test_plan_errors() -> None:
    with pytest.raises(TypeError):
        FFTPlan([1j, 2j])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FFTPlan(np.zeros(8))
    with pytest.raises(ValueError, match="out"):
        FFTPlan(np.zeros(8, np.complex128), np.zeros(8, np.complex64))
    with pytest.raises(ValueError, match="2\\^a"):
        FFTPlan(np.zeros(7, np.complex128))
    with pytest.raises(TypeError, match="native-endian"):
        FFTPlan(np.zeros(8, ">c16"))  # its calls would each need a copy


def test_one_thread_path_entries_and_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-thread path's inlined lookups: a read-only input gets its own compiled entry,
    a cold process (no entries, no workspace) takes the miss path, a longer transform
    grows the thread's workspace."""
    x = _signal((512,), np.complex128, seed=1)
    ro = x.copy()
    ro.flags.writeable = False
    monkeypatch.setattr(fourier, "_ENTRIES", {})
    monkeypatch.setattr(fourier, "_local", __import__("threading").local())
    for arr in (x, ro, x[::2], _signal((3, 100), np.complex128, seed=2)):
        _close(fft(arr, threads=1), np.fft.fft(arr, axis=-1), np.complex128)
    assert len(fourier._ENTRIES) == 2  # writeable and read-only: one entry each
    small = fourier._local.ws["d"].size
    y = _signal((1 << 15,), np.complex128, seed=3)
    _close(fft(y, threads=1), np.fft.fft(y), np.complex128)
    assert fourier._local.ws["d"].size > small


@pytest.mark.parametrize("tiled", [True, False])
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_streamed_output(dtype: type, tiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-temporal output stores (from STREAM_OUT on, at a length small enough to test):
    one thread, two threads sharing one row, batched rows, the inverse; an output that is
    not vector-aligned takes, with Z row-major, shifted column blocks (every shift a
    vector allows, checked to be taken, and no element outside the output written), or
    ordinary stores where no shift aligns it (a complex128 output 8 bytes off); with Z
    tiled, unshifted blocks by ordinary stores."""
    monkeypatch.setattr(fourier, "STREAM_OUT", 1 << 11)
    monkeypatch.setattr(fourier, "PARALLEL_MIN", 1)
    monkeypatch.setattr(fourier, "COLUMNS_MIN", 1)
    monkeypatch.setattr(fourier, "Z_TILED", tiled)
    # Two-vector column blocks at these lengths, whatever the CPU (Intel's AVX-512 cores
    # take four from 2^11, which leave no room at these lengths for every shift)
    monkeypatch.setattr(fourier, "WIDE_BLOCK_INTEL_AVX512", fourier.WIDE_BLOCK)
    fourier.plan.cache_clear()
    try:
        real = np.float64 if dtype == np.complex128 else np.float32
        assert fourier.plan(1 << 12, np.dtype(real).char).meta[-1] == 1
        assert fourier.plan(3 << 11, np.dtype(real).char).meta[-1] == 0  # not a power of two
        for shape in [(1 << 12,), (1 << 13,), (3, 1 << 11)]:
            x = _signal(shape, dtype, seed=shape[-1])
            ref = np.fft.fft(x.astype(np.complex128), axis=-1)
            for threads in (1, 2):
                y = fft(x, threads=threads)
                assert y.ctypes.data % 64 == 0
                _close(y, ref, dtype)
                _close(fft(y, inverse=True, threads=threads), x.astype(np.complex128), dtype)
                lanes = fourier.lanes(np.dtype(real).itemsize)
                meta = fourier.plan(shape[-1], np.dtype(real).char).meta
                buf = fourier.aligned_empty(2 * x.size + 2 * lanes, real)
                shifts = set()
                for k in range(lanes + 1):  # every offset in floats, whole complex or not
                    if k % 2 and dtype == np.complex64:
                        continue  # a complex64 array is 8-byte aligned
                    buf[:] = 7.0
                    out = buf[k : k + 2 * x.size].view(dtype).reshape(shape)
                    shifts.add(int(fourier._stream_shift(buf[k : k + 2 * x.size], meta)))
                    _close(fft(x, threads=threads, out=out), ref, dtype)
                    assert (buf[:k] == 7.0).all() and (buf[k + 2 * x.size :] == 7.0).all()
                want = {0, -1} | set(range(1, lanes // 2))
                assert shifts == (want if dtype == np.complex128 else want - {-1})
    finally:
        fourier.plan.cache_clear()


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize(("tiled", "skew"), [(True, True), (False, False), (True, False)])
def test_z_layout(dtype: type, tiled: bool, skew: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Z tiled (Z_TILED) or row-major, pass buffers and Z's halves skewed (BUF_SKEW,
    Z_SKEW) or not: one thread, two sharing a row, row blocks, batched four-step rows, an
    aligned output and np.empty_like's, a mixed radix, and step 2's block narrower than
    step 1's (STEP2_VECTORS)."""
    monkeypatch.setattr(fourier, "Z_TILED", tiled)
    bytes_ = fourier.BUF_SKEW
    monkeypatch.setattr(fourier, "BUF_SKEW", bytes_ if skew else 0)
    monkeypatch.setattr(fourier, "Z_SKEW", skew)
    monkeypatch.setattr(fourier, "SKEW_MIN", 1 << 10)
    monkeypatch.setattr(fourier, "PARALLEL_MIN", 1)
    monkeypatch.setattr(fourier, "COLUMNS_MIN", 1)
    monkeypatch.setattr(fourier, "STEP2_VECTORS", {1 << 17: 2, 1 << 13: 1})
    monkeypatch.setattr(fourier, "WIDE_BLOCK", 1 << 12)
    fourier.plan.cache_clear()
    try:
        real = np.dtype(np.float64 if dtype == np.complex128 else np.float32).char
        shapes = [(16,), (128,), (5, 1 << 10), (1 << 13,), (1 << 11,), (1 << 16,),
                  (1 << 17,), (3, 1 << 13), (3 << 12,), (33, 256)]  # fmt: skip
        for shape in shapes:
            n = shape[-1]
            p = fourier.plan(n, real)
            if n in (1 << 17, 1 << 13):
                assert p.block2 < p.block
            if n >= 1 << 11 and n & (n - 1) == 0:
                assert p.tile == (p.block2 if tiled else p.n2)
                item = np.dtype(real).itemsize
                assert (p.zlen * item % 4096 == bytes_) == skew
                assert (p.bufsize * item % 4096 == bytes_) == skew
            x = _signal(shape, dtype, seed=n)
            ref = np.fft.fft(x.astype(np.complex128), axis=-1)
            for threads in (1, 2):
                _close(fft(x, threads=threads), ref, dtype)
                _close(fft(x, threads=threads, out=np.empty_like(x)), ref, dtype)
                back = fft(ref.astype(dtype), inverse=True, threads=threads)
                _close(back, x.astype(np.complex128), dtype)
    finally:
        fourier.plan.cache_clear()


def test_small_transforms_stay_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under PARALLEL_MIN points (all rows), or one row under COLUMNS_MIN, threads=2 runs
    on the calling thread (the pool is not used); from them on it is."""
    calls: list[int] = []

    def one_by_one(c: list, **kw: object) -> None:  # type: ignore[type-arg]
        calls.append(len(c))
        for f, a in c:  # in turn: the counter leaves the later calls nothing to do
            f(*a)

    monkeypatch.setattr(fourier, "run", one_by_one)
    for shape, pooled in [((1 << 16,), False), ((1 << 17,), False), ((1 << 18,), True),
                          ((256, 256), False), ((256, 512), True)]:  # fmt: skip
        calls.clear()
        x = _signal(shape, np.complex128, seed=1)
        _close(fft(x, threads=2), np.fft.fft(x, axis=-1), np.complex128)
        assert bool(calls) == pooled, shape


def test_aligned_empty_starts_on_a_cache_line() -> None:
    for size in (0, 1, 3, 17, 4096):
        for dtype in (np.float32, np.float64, np.complex64, np.complex128):
            a = fourier.aligned_empty(size, dtype)
            assert a.size == size and a.dtype == dtype and a.flags.c_contiguous
            assert size == 0 or a.ctypes.data % fourier.ALIGN == 0  # (no address if empty)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_own_output_is_placed_on_a_cache_line_by_the_compiled_code(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the one-thread path fft() allocates its output with np.empty, ALIGN bytes long
    over, and _fft_rows_placed writes from its first cache line: aligned_empty (~1 us of
    Python a call) is not called for it."""

    def no_python_alignment(size: int, dtype: object) -> np.ndarray:
        raise AssertionError("aligned_empty called on the one-thread path")

    for shape in [(1,), (3,), (96,), (1024,), (4096,), (5, 96), (2, 3, 64)]:
        x = _signal(shape, dtype, seed=len(shape))
        fft(x)  # the plan's tables and the thread's workspace: allocated once, aligned
        monkeypatch.setattr(fourier, "aligned_empty", no_python_alignment)
        got = fft(x, threads=1)
        inv = fft(x, inverse=True)  # threads=None: still one thread at these sizes
        monkeypatch.undo()
        for y in (got, inv):
            assert y.shape == x.shape and y.dtype == x.dtype and y.flags.c_contiguous
            assert y.ctypes.data % fourier.ALIGN == 0, shape
        _close(got, np.fft.fft(x, axis=-1), dtype)
        _close(inv, np.fft.ifft(x, axis=-1), dtype)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_placed_rows_start_at_the_first_cache_line_of_any_buffer(dtype: type) -> None:
    """_fft_rows_placed at every element offset of its buffer from a cache line."""
    n = 96
    x = _signal((n,), dtype, seed=9)
    ref = np.fft.fft(x)
    real = fourier._REAL[np.dtype(dtype).char]
    p = fourier.plan(n, real)
    work = fourier.aligned_empty(p.work1, real)
    per_line = fourier.ALIGN // np.dtype(dtype).itemsize
    base = fourier.aligned_empty(n + 2 * per_line, dtype)
    for k in range(per_line):
        buf = base[k : k + n + per_line]
        buf[:] = np.nan
        off = fourier._fft_rows_placed(x, buf, 1, False, p.fb, p.meta, work, n)
        assert off == (per_line - k) % per_line
        assert buf[off:].ctypes.data % fourier.ALIGN == 0
        _close(buf[off : off + n], ref, dtype)
        assert np.isnan(buf[:off]).all() and np.isnan(buf[off + n :]).all()  # nothing else


@pytest.mark.parametrize("dtype", [">c16", ">c8"])
def test_non_native_byte_order(dtype: str) -> None:
    """A big-endian input (read from a file, say) is transformed, as numpy's fft does; numba
    refused it (NumbaValueError: Unsupported array dtype)."""
    x = _signal((3, 96), np.complex128, seed=4).astype(dtype)
    got = fft(x)
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    _close(got, np.fft.fft(x, axis=-1), np.complex64 if "8" in dtype else np.complex128)
    _close(
        fft(x[0], inverse=True), np.fft.ifft(x[0]), np.complex64 if "8" in dtype else np.complex128
    )


class _Sub(np.ndarray):
    pass


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_repeated_calls_skip_the_lookups(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1-D input under PARALLEL_MIN points seen before on this thread goes straight to its
    compiled entry (no plan() lookup), into a new aligned output each call."""
    monkeypatch.setattr(fourier, "_local", __import__("threading").local())
    sizes = (1, 96, 1024, 4096, 1 << 13)
    xs = [_signal((n,), dtype, seed=n) for n in sizes]
    for x in xs:
        fft(x)  # the first call: the full path, which remembers the entry

    def no_plan(n: int, dtype: object) -> None:
        raise AssertionError("plan() looked up again")

    monkeypatch.setattr(fourier, "plan", no_plan)
    for x in xs:
        outs = [fft(x), fft(x, threads=1), fft(x, inverse=True, threads=2)]
        for y in outs:
            assert y.shape == x.shape and y.dtype == x.dtype and y.flags.c_contiguous
            assert y.flags.writeable and y.ctypes.data % fourier.ALIGN == 0
        assert len({y.ctypes.data for y in outs}) == 3  # each call its own output
        _close(outs[0], np.fft.fft(x), dtype)
        _close(outs[1], np.fft.fft(x), dtype)
        _close(outs[2], np.fft.ifft(x), dtype)
        x2 = _signal(x.shape, dtype, seed=7)  # another array of the same shape and dtype
        _close(fft(x2), np.fft.fft(x2), dtype)


def test_inputs_the_remembered_entry_does_not_fit_take_the_full_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fourier, "_local", __import__("threading").local())
    n = 1024
    x = _signal((n,), np.complex128, seed=1)
    fft(x)
    ro = x.copy()
    ro.flags.writeable = False
    raw = np.zeros(n * 16 + 1, np.uint8)[1:].view(np.complex128)  # not aligned to its items
    raw[:] = x
    big_endian = x.astype(">c16")
    cases = [ro, raw, _signal((2 * n,), np.complex128)[::2], big_endian, x.view(_Sub),
             _signal((n,), np.complex64), _signal((3, n), np.complex128)]  # fmt: skip
    assert not raw.flags.aligned
    for arr in cases:
        ref = np.fft.fft(np.asarray(arr), axis=-1)
        _close(fft(arr), ref, np.complex64 if arr.dtype == np.complex64 else np.complex128)
    out = np.empty_like(x)
    assert fft(x, out=out) is out
    _close(out, np.fft.fft(x), np.complex128)
    _close(fft(x, threads=2), np.fft.fft(x), np.complex128)
    with pytest.raises(ValueError, match="threads"):
        fft(x, threads=0)
    with pytest.raises(ValueError, match="out must be"):
        fft(x, out=np.empty(n + 1, np.complex128))


def test_long_transforms_are_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """From PARALLEL_MIN points, threads=2 after threads=1 still shares the transform."""
    monkeypatch.setattr(fourier, "_local", __import__("threading").local())
    x = _signal((1 << 18,), np.complex128, seed=2)
    fft(x, threads=1)
    fft(x, threads=1)
    assert (x.shape, x.dtype) not in getattr(fourier._local, "fast", {})
    calls: list[int] = []

    def counted(c: list, **kw: object) -> None:  # type: ignore[type-arg]
        calls.append(len(c))
        for f, a in c:
            f(*a)

    monkeypatch.setattr(fourier, "run", counted)
    _close(fft(x, threads=2), np.fft.fft(x), np.complex128)
    assert calls


def test_remembered_entries_are_per_thread_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(fourier, "_local", threading.local())
    n = 2048
    errors: list[str] = []

    def worker(seed: int) -> None:
        for i in range(40):
            x = _signal((n,), np.complex128, seed=seed * 100 + i)
            got = fft(x)
            if not np.allclose(got, np.fft.fft(x), rtol=0, atol=1e-9 * n):
                errors.append(f"thread {seed} call {i}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for dtype in (np.complex64, np.complex128):
        for n in SIZES:
            fft(np.ones(n, dtype))
            assert len(fourier._local.fast) <= fourier.FAST_MAX
    assert 2 * len(SIZES) > fourier.FAST_MAX
