"""Numba benchmark kernels that validate a node: GEMM, FFT, STREAM triad and an FMA probe.

``import kernels`` sets the JIT policy (kernels._jit) before any kernel is compiled.
"""

from kernels import _jit  # noqa: F401  (first: flags must be set before numba compiles)
from kernels.fft_plan import FFTPlan
from kernels.fourier import fft
from kernels.matmul import gemm
from kernels.peak import fma_peak
from kernels.stream import triad

__version__ = "0.1.0"

__all__ = ["FFTPlan", "__version__", "fft", "fma_peak", "gemm", "triad"]
