"""pytest plugin (``-p tests.kernels.avx2_host``): the kernels run as on an x86-64 node
without AVX-512 (AVX2 and FMA, ``x86-64-v3``), whatever CPU runs the tests.

The vector width of the FFT, triad and probe code, and the GEMM micro-kernel a host gets,
come from LLVM's host detection when ``kernels`` is imported; so do numba's target CPU
and features. This plugin hides the AVX-512 and AMX features from that detection and has
numba compile for ``x86-64-v3`` with the features left, before anything imports the
kernels: the code then runs as it would on an AVX2 node, on any CPU that has AVX2
(an AVX-512 CPU runs AVX2 code). ``test_avx2_host.py`` runs the kernels' correctness
tests under it.
"""

from __future__ import annotations

import os

from llvmlite import binding

CPU_NAME = "x86-64-v3"
_HIDDEN = ("avx512", "amx", "avxvnni", "avxifma", "avxneconvert", "avx10", "evex512")

_host_features = binding.get_host_cpu_features


def _features() -> binding.FeatureMap:
    fm = _host_features()
    for name in list(fm):
        if name.startswith(_HIDDEN):
            fm[name] = False
    return fm


binding.get_host_cpu_features = _features
binding.get_host_cpu_name = lambda: CPU_NAME
os.environ["NUMBA_CPU_NAME"] = CPU_NAME
os.environ["NUMBA_CPU_FEATURES"] = ",".join(
    ("+" if on else "-") + name for name, on in _features().items()
)
