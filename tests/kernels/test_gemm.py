"""GEMM against numpy: shapes, strides, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from kernels import gemm

DTYPES = [np.float64, np.float32]


def _check(a: np.ndarray, b: np.ndarray, **kw: object) -> None:
    c = gemm(a, b, **kw)  # type: ignore[arg-type]
    ref = a.astype(np.float64) @ b.astype(np.float64)
    eps = np.finfo(a.dtype).eps
    k = a.shape[1]
    scale = np.abs(a).max(initial=0) * np.abs(b).max(initial=0) * k
    assert c.shape == ref.shape
    assert c.dtype == a.dtype
    assert c.flags.c_contiguous
    assert_allclose(c, ref, rtol=0, atol=8 * eps * max(scale, 1e-300))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("m", "k", "n"),
    [(1, 1, 1), (7, 7, 7), (129, 129, 129), (1, 300, 1), (6, 1, 32), (5, 17, 33),
     (200, 3, 70), (64, 600, 40), (300, 257, 31), (1000, 1000, 1000)],
)  # fmt: skip
def test_shapes(dtype: type, m: int, k: int, n: int) -> None:
    rng = np.random.default_rng(m * 10007 + k * 101 + n)
    _check(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_views_and_strides(dtype: type) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((150, 130)).astype(dtype)
    b = rng.standard_normal((130, 170)).astype(dtype)
    _check(a.T.T, b)
    _check(np.asfortranarray(a), b)  # F-contiguous: packed as a transpose
    _check(a, np.asfortranarray(b))
    _check(b.T, a.T)  # transposed views of C arrays
    _check(a[::2, ::3], b[: a[::2, ::3].shape[1] * 2 : 2, 1::2])  # strided
    _check(a[::-1], b[:, ::-1])  # negative strides
    _check(np.broadcast_to(a[:1], (40, 130)), b)  # zero stride


def test_threads_agree() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((301, 199))
    b = rng.standard_normal((199, 257))
    assert_allclose(gemm(a, b, threads=1), gemm(a, b, threads=2), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_share_many_panels(dtype: type) -> None:
    """Two threads over many B panels (partial in every direction), without a barrier:
    each panel waits for the chunks of the panel before on the same rows, and the
    buffer of panel it - 2 for its chunks; bit for bit the one-thread product, run after
    run (a race would show as a changed element)."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((211, 97)).astype(dtype)
    b = rng.standard_normal((97, 143)).astype(dtype)
    for blocking in [(12, 16, 32), (30, 40, 64), (6, 8, 200)]:
        one = gemm(a, b, threads=1, blocking=blocking)
        _check(a, b, threads=1, blocking=blocking)
        for _ in range(20):
            assert np.array_equal(gemm(a, b, threads=2, blocking=blocking), one)


def test_blocking_override_edges() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((97, 211))
    b = rng.standard_normal((211, 75))
    _check(a, b, blocking=(12, 16, 32))  # many blocks, partial in every direction


def test_empty_dimensions() -> None:
    assert gemm(np.ones((0, 3)), np.ones((3, 4))).shape == (0, 4)
    assert_allclose(gemm(np.ones((2, 0)), np.ones((0, 4))), np.zeros((2, 4)))


def test_errors() -> None:
    with pytest.raises(ValueError, match="do not align"):
        gemm(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        gemm(np.ones(3), np.ones((3, 2)))
    with pytest.raises(TypeError):
        gemm(np.ones((2, 2)), np.ones((2, 2), dtype=np.float32))
    with pytest.raises(TypeError):
        gemm(np.ones((2, 2), dtype=int), np.ones((2, 2), dtype=int))
    with pytest.raises(ValueError, match="threads"):
        gemm(np.ones((2, 2)), np.ones((2, 2)), threads=0)
