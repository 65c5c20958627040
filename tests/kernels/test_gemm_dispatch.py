"""GEMM micro-kernel dispatch: every path, forced, against numpy; the CPU reading and the
blocking rule, without the CPU they describe."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from numpy.testing import assert_allclose

from kernels import _cpu, gemm
from kernels.matmul import gemm_plan

PATHS = sorted(_cpu.KERNELS)
DTYPES = [np.float64, np.float32]
# Edges in every direction for MR = 6 or 8 and NR = 4..48: partial strips, k = 1, k > KC.
SHAPES = [(1, 1, 1), (6, 9, 8), (7, 13, 33), (13, 1, 65), (64, 64, 64), (97, 600, 75),
          (130, 257, 129)]  # fmt: skip


def _check(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    ref = a.astype(np.float64) @ b.astype(np.float64)
    eps = np.finfo(a.dtype).eps
    scale = np.abs(a).max(initial=0) * np.abs(b).max(initial=0) * a.shape[1]
    assert c.dtype == a.dtype and c.shape == ref.shape
    assert_allclose(c, ref, rtol=0, atol=8 * eps * max(scale, 1e-300))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", PATHS)
def test_every_microkernel_matches_numpy(path: str, dtype: type) -> None:
    rng = np.random.default_rng(len(path))
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        _check(gemm(a, b, kernel=path, threads=2), a, b)
    a = rng.standard_normal((90, 70)).astype(dtype)
    b = rng.standard_normal((70, 50)).astype(dtype)
    _check(gemm(a.T.copy().T, np.asfortranarray(b), kernel=path, threads=1), a, b)
    _check(gemm(a, b, kernel=path, blocking=(12, 16, 8)), a, b)  # many partial blocks


@pytest.mark.parametrize("path", PATHS)
def test_one_thread_alone_computes_every_chunk(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call planned for two threads whose second never starts: the first takes every
    row chunk (and, in BLIS's order, packs every B panel) itself and waits for no one."""
    from kernels import _jit, matmul

    if _jit.max_threads() < 2:
        pytest.skip("one CPU allowed: gemm plans a single thread")

    def first_only(calls: list[tuple[object, tuple[object, ...]]], skip_late: bool) -> None:
        assert skip_late and len(calls) == 2
        fn, args = calls[0]
        fn(*args)  # type: ignore[operator]

    monkeypatch.setattr(matmul, "run", first_only)
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        a = rng.standard_normal((150, 70)).astype(dtype)
        b = rng.standard_normal((70, 90)).astype(dtype)
        _check(gemm(a, b, kernel=path, threads=2, blocking=(24, 32, 48)), a, b)


@pytest.mark.parametrize("path", PATHS)
def test_environment_forces_the_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_cpu.ENV_KERNEL, path)
    plan = gemm_plan(np.float64)
    assert plan.kernel is _cpu.KERNELS[path]
    rng = np.random.default_rng(5)
    a = rng.standard_normal((31, 45))
    b = rng.standard_normal((45, 27))
    _check(gemm(a, b), a, b)
    assert gemm_plan(np.float64, "avx2").kernel.name == "avx2"  # the argument wins


def test_unknown_kernel_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown GEMM kernel"):
        gemm(np.ones((2, 2)), np.ones((2, 2)), kernel="neon")
    monkeypatch.setenv(_cpu.ENV_KERNEL, "avx1024")
    with pytest.raises(ValueError, match="avx1024"):
        gemm(np.ones((2, 2)), np.ones((2, 2)))


def _cpu_with(features: set[str], l1: int = 32 << 10, l2: int = 512 << 10,
              l3: int = 32 << 20, arch: str = "generic") -> _cpu.CpuInfo:  # fmt: skip
    return _cpu.CpuInfo("test cpu", "GenuineIntel", arch, frozenset(features), l1, l2, l3)


def test_isa_follows_the_features() -> None:
    assert _cpu_with({"avx2", "fma", "avx512f"}).isa == "avx512"
    assert _cpu_with({"avx2", "fma"}).isa == "avx2"
    assert _cpu_with({"avx2"}).isa == "sse"  # no FMA: the AVX2 kernel would not fuse
    assert _cpu_with(set()).isa == "sse"
    for isa in ("avx512", "avx2", "sse"):
        feats = {"avx512f", "avx2", "fma"} if isa == "avx512" else {"avx2", "fma"}
        cpu = _cpu_with(feats if isa != "sse" else set())
        # Intel's AVX-512 cores get the A-resident 8 x 3 tile; AMD's the plain 6 x 4
        assert _cpu.pick_kernel(cpu).name == ("avx512-8x3" if isa == "avx512" else isa)
        amd = dataclasses.replace(cpu, vendor="AuthenticAMD")
        assert _cpu.pick_kernel(amd).name == isa
    assert _cpu.KERNELS["avx512-pf"].code == 806464  # the prefetch distance leads the code
    assert _cpu.KERNELS["avx512-8x3"].code == 1406483  # and the A-resident order leads it
    sets = _cpu_with({"amx-tile", "avx2", "avx512f", "fma"}).vector_sets()
    assert sets == ["avx2", "fma", "avx512f", "amx-tile"]


def test_blocking_rule_and_measured_entries() -> None:
    zen3 = _cpu_with({"avx2", "fma"}, arch="znver3")
    avx2 = _cpu.KERNELS["avx2"]
    mc, kc, nc = _cpu.blocking(zen3, avx2, 8)
    assert (mc, kc) == (126, 256)  # B micro-panel 256 x 8 doubles = half of 32 KiB
    assert mc * kc * 8 <= zen3.l2_bytes // 2 and nc % avx2.nr(8) == 0
    zen5 = _cpu_with({"avx512f", "avx2", "fma"}, l1=48 << 10, l2=1 << 20, arch="znver5")
    assert _cpu.blocking(zen5, _cpu.KERNELS["avx512"], 8) == (192, 512, 4096)
    zen4 = _cpu_with({"avx512f", "avx2", "fma"}, l1=32 << 10, l2=1 << 20, arch="znver4")
    for itemsize in (8, 4):
        assert _cpu.blocking(zen4, _cpu.KERNELS["avx512"], itemsize) == (192, 512, 4096)
    # the AVX2 path on the same CPU keeps the rule's blocking
    assert _cpu.blocking(zen4, _cpu.KERNELS["avx2"], 8) != (192, 512, 4096)
    spr = _cpu_with({"avx512f", "avx2", "fma"}, l1=48 << 10, l2=2 << 20)
    mc, kc, nc = _cpu.blocking(spr, _cpu.KERNELS["avx512"], 8)
    assert kc >= 384 and mc % 6 == 0 and mc * kc * 8 <= spr.l2_bytes
    # A-resident: the A micro-panel in a third of L1, the B panel in 3/8 of L2
    ares = _cpu.KERNELS["avx512-8x3"]
    assert _cpu.blocking(spr, ares, 8) == (2048, 256, 384)
    assert _cpu.blocking(spr, ares, 4) == (2048, 512, 384)
    for itemsize in (8, 4):
        mc, kc, nc = _cpu.blocking(spr, ares, itemsize)
        assert ares.mr * kc * itemsize <= spr.l1d_bytes // 3
        assert kc * nc * itemsize <= spr.l2_bytes * 3 // 8 and nc % ares.nr(itemsize) == 0


def test_cache_sizes_from_sysfs(tmp_path: Path) -> None:
    for i, (kind, level, size) in enumerate(
        [("Data", 1, "48K"), ("Instruction", 1, "32K"), ("Unified", 2, "2048K"),
         ("Unified", 3, "105M")]
    ):  # fmt: skip
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "type").write_text(kind + "\n")
        (d / "level").write_text(f"{level}\n")
        (d / "size").write_text(size + "\n")
    assert _cpu._caches(tmp_path) == {"L1": 48 << 10, "L2": 2 << 20, "L3": 105 << 20}
    assert _cpu._caches(tmp_path / "missing") == {}


def test_host_is_read() -> None:
    cpu = _cpu.host()
    assert cpu.model and cpu.arch
    assert cpu.l1d_bytes > 0 and cpu.l2_bytes > 0 and cpu.l3_bytes > 0
    assert cpu.isa in _cpu.KERNELS
    assert gemm_plan(np.float32).kernel.name in _cpu.KERNELS


def test_warm_calls_skip_the_dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first call the specialisation's entry point is called directly: going
    through the dispatcher with a plain int retypes the core each time (~0.2 s a call)."""
    from kernels import matmul

    rng = np.random.default_rng(9)
    a = rng.standard_normal((20, 30))
    b = rng.standard_normal((30, 10))
    ro = a.copy()
    ro.flags.writeable = False  # read-only arrays are typed apart: their own entry
    _check(gemm(a, b), a, b)
    _check(gemm(ro, b), ro, b)

    class Boom:
        overloads: ClassVar[dict[object, object]] = {}

        def __call__(self, *args: object) -> None:
            raise AssertionError("dispatcher called on a warm path")

        def compile(self, sig: object) -> None:
            raise AssertionError("dispatcher called on a warm path")

    monkeypatch.setattr(matmul, "_gemm_worker", Boom())
    _check(gemm(a, b), a, b)
    _check(gemm(ro, b), ro, b)
    monkeypatch.setattr(matmul, "_ENTRIES", {})  # a cold process: the miss path is taken
    with pytest.raises(AssertionError, match="warm path"):
        gemm(a, b)
