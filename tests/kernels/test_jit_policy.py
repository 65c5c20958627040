"""The JIT policy is in force: SLP on, policy-keyed caches, vector FMA code.

Speed itself is shown by benchmarks/kernels.py (GEMM beside the FMA probe's peak),
not timed here: a shared machine makes any threshold flaky.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from numba.core import config
from numba.core.registry import cpu_target

import kernels
from kernels import _cpu, _jit, fft, fourier, gemm, matmul, peak, stream
from kernels import _fft_passes as passes
from kernels._simd import VECTOR_BYTES

ROOT = Path(__file__).resolve().parents[2]


def _dispatchers() -> list[object]:
    mods = [matmul, fourier, passes, peak, stream]
    return [
        obj
        for mod in mods
        for obj in vars(mod).values()
        if isinstance(obj, numba.core.registry.CPUDispatcher)
    ]


def test_slp_flag_is_set() -> None:
    assert config.SLP_VECTORIZE == 1
    assert os.environ["NUMBA_SLP_VECTORIZE"] == "1"
    assert _jit.slp_enabled()


def test_slp_is_forced_even_when_the_environment_says_no() -> None:
    env = {**os.environ, "NUMBA_SLP_VECTORIZE": "0"}
    code = "import kernels; from numba.core import config; print(config.SLP_VECTORIZE)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "1"


def test_every_kernel_core_uses_the_policy_cache() -> None:
    found = _dispatchers()
    assert len(found) >= 10
    for d in found:
        assert isinstance(d._cache, _jit._PolicyCache), d  # type: ignore[attr-defined]
        assert d.targetoptions["error_model"] == "numpy"  # type: ignore[attr-defined]


def test_cache_key_changes_with_the_slp_flag() -> None:
    cache = matmul._ukernel_6x2._cache
    codegen = cpu_target.target_context.codegen()
    sig = (numba.int64,)
    on = cache._index_key(sig, codegen)
    try:
        config.SLP_VECTORIZE = 0
        off = cache._index_key(sig, codegen)
    finally:
        config.SLP_VECTORIZE = 1
    assert on != off
    assert ("slp", 1) in on[-1]


def _fresh(fn: object) -> numba.core.registry.CPUDispatcher:
    """An uncached compile of a kernel core under the policy options, for inspection."""
    return numba.njit(**_jit.OPTIONS)(fn.py_func)  # type: ignore[attr-defined]


def test_slp_vectorizes_straight_line_code() -> None:
    def four_adds(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        x0 = b[0] + c[0]
        x1 = b[1] + c[1]
        x2 = b[2] + c[2]
        x3 = b[3] + c[3]
        a[0], a[1], a[2], a[3] = x0, x1, x2, x3

    f = numba.njit(**_jit.OPTIONS)(four_adds)
    sig = (numba.float64[::1],) * 3
    f.compile(sig)
    asm = f.inspect_asm(sig)
    assert "vaddpd" in asm  # SLP packed the four scalar adds
    assert "vaddsd" not in asm


@pytest.mark.parametrize(
    ("name", "fn"),
    [("avx2", "_ukernel_6x2"), ("avx512", "_ukernel_6x4"), ("avx512-pf", "_ukernel_6x4"),
     ("avx512-8x3", "_ukernel_8x3")],
)  # fmt: skip
def test_microkernels_are_vector_fma_code(name: str, fn: str) -> None:
    """Each micro-kernel at its own width: all FMAs packed, none of the tile spilled."""
    kern = _cpu.KERNELS[name]
    f = _fresh(getattr(matmul, fn))
    arr = numba.float64[::1]
    sig = (numba.int64, arr, numba.int64, arr, numba.int64, arr, numba.int64, numba.int64,
           numba.boolean, numba.types.literal(kern.code))  # fmt: skip
    f.compile(sig)
    asm = f.inspect_asm(sig)
    native = kern.vector_bytes <= VECTOR_BYTES
    reg = "zmm" if kern.vector_bytes == 64 and native else "ymm"
    fmas = [ln for ln in asm.splitlines() if "vfmadd" in ln and reg in ln]
    tile = kern.mr * kern.nv * (1 if native else kern.vector_bytes // VECTOR_BYTES)
    assert len(fmas) >= tile
    if native:  # the k loop keeps the whole tile in registers: no stack traffic in it
        assert not [ln for ln in _hot_loop(asm) if "(%rsp)" in ln]
    if fn != "_ukernel_6x2":  # software prefetch if its code asks: 4 lines of B
        # and 1 of A (6 x 4), or 3 of B (8 x 3) per k step. LLVM unrolls the k loop on some
        # CPUs (twice for znver4), so the hot block holds one tile's FMAs and one step's
        # fetches per unrolled step
        hot = _hot_loop(asm)
        steps, rest = divmod(sum("vfmadd" in ln and reg in ln for ln in hot), tile)
        assert steps >= 1 and rest == 0, hot
        fetches = [ln for ln in hot if "prefetcht0" in ln]
        per_step = {"_ukernel_6x4": 5, "_ukernel_8x3": 3}[fn]
        assert len(fetches) == (per_step * steps if kern.prefetch else 0), fetches


@pytest.mark.parametrize("name", ["avx512", "avx512-pf"])
def test_six_by_four_tile_fetches_every_line_of_its_c_tile(name: str) -> None:
    """The 6 x 4 tile's rows of C (four lines each, five when unaligned) are all fetched
    for writing before its k loop: C comes from memory at n = 2048 (32 MiB), and the
    lines left to the hardware (two of four, before) stalled the stores after the loop,
    ~1% of DGEMM/SGEMM on an AMD EPYC Zen 4."""
    kern = _cpu.KERNELS[name]
    f = _fresh(matmul._ukernel_6x4)
    arr = numba.float64[::1]
    sig = (numba.int64, arr, numba.int64, arr, numba.int64, arr, numba.int64, numba.int64,
           numba.boolean, numba.types.literal(kern.code))  # fmt: skip
    f.compile(sig)
    asm = f.inspect_asm(sig)
    hot = set(_hot_loop(asm))
    fetches = [ln for ln in asm.splitlines() if "prefetchw" in ln and ln not in hot]
    assert len(fetches) >= 6 * 5, fetches


@pytest.mark.parametrize("name", ["avx2", "avx512", "avx512-8x3"])
def test_microkernel_is_compiled_into_the_macro_loop(name: str) -> None:
    """No call per tile: the micro-kernel is inlined where ``_macro`` uses it, with no
    reference counts taken around it (NRT_incref/decref on counts both threads share: a
    wrapper around the kernel cost ~3% of DGEMM on an Emerald Rapids Xeon)."""
    kern = _cpu.KERNELS[name]
    f = _fresh(matmul._macro)
    arr = numba.float64[::1]
    i = numba.int64
    sig = (i, i, i, arr, arr, arr, i, i, i, i, numba.boolean, arr,
           numba.types.literal(kern.code))  # fmt: skip
    f.compile(sig)
    body = f.inspect_asm(sig).split("_ZN7cpython")[0]  # _macro's own code, not its wrapper
    assert not [ln for ln in body.splitlines() if "call" in ln]
    assert "NRT_" not in body and "_ukernel" not in body


def _hot_loop(asm: str) -> list[str]:
    """The basic block with the most FMAs: the micro-kernel's k loop."""
    blocks: list[list[str]] = [[]]
    for ln in asm.splitlines():
        if re.match(r"^\.LBB\d+_\d+:", ln):
            blocks.append([])
        blocks[-1].append(ln)
    return max(blocks, key=lambda b: sum("vfmadd" in ln for ln in b))


_SPILLS_AT_AVX2 = """
import numba
from kernels import _jit, matmul
from tests.kernels.test_jit_policy import _hot_loop
f = numba.njit(**_jit.OPTIONS)(matmul._ukernel_6x4.py_func)
arr = numba.float64[::1]
sig = (numba.int64, arr, numba.int64, arr, numba.int64, arr, numba.int64, numba.int64,
       numba.boolean, numba.types.literal(3264))
f.compile(sig)
print(len([ln for ln in _hot_loop(f.inspect_asm(sig)) if "(%rsp)" in ln]))
"""


def test_a_six_by_four_tile_spills_at_256_bits() -> None:
    """Why AVX2 gets its own micro-kernel: 24 accumulators do not fit 16 ymm registers.
    Compiled for an AVX2 CPU whatever the host (an AVX-512 host has 32 ymm registers)."""
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2,+fma"}
    out = subprocess.run([sys.executable, "-c", _SPILLS_AT_AVX2], env=env, capture_output=True,
                         text=True, check=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert int(out.stdout.split()[-1]) > 0


def test_threads_helper() -> None:
    assert _jit.use_threads(1) == 1
    assert _jit.use_threads(10_000) == _jit.max_threads()
    with pytest.raises(ValueError):
        _jit.use_threads(0)


def test_public_api() -> None:
    assert kernels.gemm is gemm
    assert kernels.fft is fft
    assert callable(kernels.triad) and callable(kernels.fma_peak)
    assert isinstance(kernels.__version__, str)
