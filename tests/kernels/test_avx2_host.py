"""The kernels on an AVX2 node, tested on this one.

The suite runs every GEMM micro-kernel whatever the CPU (``kernel=``), but the FFT's,
the triad's and the probe's vector width is the host's: on an AVX-512 machine their
256-bit code is never compiled. Here a child process hides AVX-512 from the kernels and
from numba (``tests/kernels/avx2_host.py``) and runs the kernels' correctness tests in
it, so both widths are tested on every CI machine with AVX-512. (On an AVX2 machine the
suite itself runs the AVX2 code, and this test skips.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels._simd import VECTOR_BYTES

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "tests.kernels.avx2_host"

pytestmark = pytest.mark.skipif(
    VECTOR_BYTES < 64, reason="this host has no AVX-512: the suite runs the AVX2 code itself"
)

PROBE = """
import json, re
import tests.kernels.avx2_host
import numpy as np, numba
from kernels import _cpu, _simd, fft, fourier
from kernels.matmul import gemm_plan
x = np.random.default_rng(0).standard_normal(4096) + 0j
y = fft(x)
asm = "\\n".join(
    a for d in (fourier.__dict__.values())
    if isinstance(d, numba.core.registry.CPUDispatcher) and d.signatures
    for a in d.inspect_asm().values()
)
print(json.dumps({
    "vector_bytes": _simd.VECTOR_BYTES,
    "isa": _cpu.host().isa,
    "gemm_kernel": gemm_plan(np.float64).kernel.name,
    "numba_cpu": numba.core.config.CPU_NAME,
    "ymm": len(re.findall(r"%ymm", asm)),
    "zmm": len(re.findall(r"%zmm", asm)),
    "fft_error": float(np.abs(y - np.fft.fft(x)).max() / np.abs(np.fft.fft(x)).max()),
}))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not a worker
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-cache")  # its own: the code differs
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_the_plugin_makes_an_avx2_host(tmp_path: Path) -> None:
    """Under the plugin the kernels take 256-bit vectors and the AVX2 micro-kernel, and
    numba's code for them holds ymm registers and no zmm one."""
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["vector_bytes"] == 32
    assert got["isa"] == "avx2"
    assert got["gemm_kernel"] == "avx2"
    assert got["numba_cpu"] == "x86-64-v3"
    assert got["ymm"] > 100 and got["zmm"] == 0, got
    assert got["fft_error"] < 1e-13


def test_kernel_correctness_tests_pass_on_an_avx2_host(tmp_path: Path) -> None:
    files = ["tests/kernels/test_fft.py", "tests/kernels/test_gemm_dispatch.py",
             "tests/kernels/test_stream_peak.py"]  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-p", PLUGIN, "-p", "no:xdist", "-p",
           "no:cacheprovider", "-q", "-x", *files]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=1200)  # fmt: skip
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
