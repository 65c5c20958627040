"""STREAM triad against numpy, and the FMA probe's exact sums."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import fma_peak, measure, stream, triad
from kernels.peak import fma_probe


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 17, 1000, 4099, 1 << 19])
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("back", [False, True])
def test_triad(
    n: int, dtype: type, offset: int, back: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "PARALLEL_BYTES", 0)  # small arrays shared out too
    monkeypatch.setattr(stream, "CHUNK_BYTES", 256)  # many chunks, and a partial last one
    monkeypatch.setattr(stream, "_sweep", [not back])  # this call sweeps forward or back
    rng = np.random.default_rng(n + offset)
    b = rng.standard_normal(n + offset).astype(dtype)[offset:]
    c = rng.standard_normal(n + offset).astype(dtype)[offset:]
    a = np.zeros(n + offset, dtype)[offset:]  # misaligned starts exercise the scalar head
    got = triad(a, b, c, 2.5, threads=2)
    assert got is a
    ref = b.astype(np.float64) + 2.5 * c.astype(np.float64)
    bound = 2 * np.finfo(dtype).eps * (np.abs(b) + 2.5 * np.abs(c))
    assert np.all(np.abs(a - ref) <= bound)


def test_triad_streaming_sizes_both_thread_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    n = (6 << 20) // 8 + 5  # above the non-temporal threshold, odd length
    b = np.arange(n, dtype=np.float64)
    c = np.ones(n)
    for threads, parallel in ((1, stream.PARALLEL_BYTES), (2, stream.PARALLEL_BYTES), (2, 0)):
        monkeypatch.setattr(stream, "PARALLEL_BYTES", parallel)  # 0: two threads at this size
        a = np.zeros(n)
        triad(a, b, c, -1.0, threads=threads)
        assert np.array_equal(a, b - 1.0)


def test_successive_triads_sweep_in_opposite_directions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call flips the direction, and the flag the compiled code gets is the new one;
    both directions write every element once (a starts as NaN)."""
    seen: list[bool] = []
    part = stream._triad_part

    def spy(*args: object) -> None:
        seen.append(bool(args[-1]))
        part(*args)

    monkeypatch.setattr(stream, "_triad_part", spy)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 256)
    n = 1001
    b = np.arange(n, dtype=np.float64)
    c = np.ones(n)
    for _ in range(4):
        a = np.full(n, np.nan)
        triad(a, b, c, 2.0, threads=1)
        assert np.array_equal(a, b + 2.0)
    assert seen in ([True, False, True, False], [False, True, False, True])


def test_triad_errors() -> None:
    x = np.zeros(4)
    with pytest.raises(ValueError):
        triad(np.zeros((2, 2)), x, x, 1.0)
    with pytest.raises(ValueError):
        triad(np.zeros(8)[::2], x, x, 1.0)
    with pytest.raises(ValueError):
        triad(np.zeros(5), x, x, 1.0)
    with pytest.raises(TypeError):
        triad(x, x, x.astype(np.float32), 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fma_probe_sums_are_exact(dtype: type) -> None:
    seconds, err = fma_probe(2, iters=10_000, dtype=dtype)
    assert seconds > 0
    assert err == 0.0


def test_fma_peak_is_positive() -> None:
    assert fma_peak(1, seconds=0.02) > 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_store_rate_streams_into_every_element(dtype: type, offset: int, threads: int) -> None:
    """Each thread's part, its unaligned head and tail included, is written (with 1.5)."""
    a = np.zeros(10_001 + offset, dtype)[offset:]
    rate = measure.store_rate(a, threads=threads, calls=2)
    assert np.isfinite(rate) and rate > 0
    assert np.all(a == 1.5)


def test_store_rate_errors() -> None:
    for bad in (np.zeros((4, 4)), np.zeros(8)[::2], np.zeros(8, np.int64), [0.0] * 8):
        with pytest.raises(ValueError, match="store_rate needs"):
            measure.store_rate(bad)  # type: ignore[arg-type]
    ro = np.zeros(8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="store_rate needs"):
        measure.store_rate(ro)
    with pytest.raises(ValueError, match="calls >= 1"):
        measure.store_rate(np.zeros(8), calls=0)
