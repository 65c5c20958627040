"""Numba benchmark kernels that validate a node: GEMM, FFT, STREAM triad and an FMA probe."""

from kernels import _jit  # noqa: F401  (the JIT policy is set before any kernel compiles)
