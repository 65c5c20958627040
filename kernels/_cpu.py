"""The host CPU as the kernels see it, and the GEMM micro-kernel and blocking chosen for it.

Read once per process (the CPU's name, vendor and features from LLVM's host detection and
/proc/cpuinfo, the cache sizes from sysfs). The compiled code itself is cached by numba
per CPU: its cache index key holds the host CPU name and feature string, so a cache built
on one microarchitecture is never loaded on another (see kernels._jit for the rest of the key).

Micro-kernels (``KERNELS``), each an MR x (NV vectors) tile of C kept in registers:

* ``avx512``: 512-bit vectors, 6 x 4 (24 accumulators of 32 zmm registers), AMD's default;
  ``avx512-pf`` the same with software prefetch; ``avx512-8x3`` (Intel's default) an
  8 x 3 tile in the A-resident loop order (see ``KERNELS`` and ``matmul._a_resident``).
* ``avx2``: 256-bit vectors, 6 x 2 (12 accumulators of 16 ymm registers; a 6 x 4 tile
  would spill on AVX2, which has only 16 vector registers).
* ``sse``: 128-bit vectors, 6 x 2, for x86-64 hosts without AVX2/FMA (correct, not fast).

``KERNELS_GEMM_KERNEL=avx2|avx512|avx512-pf|avx512-8x3|sse`` in the environment, or
``gemm(..., kernel=...)``, forces one (tests use this to run every path on any CPU: LLVM
splits wider vectors than the host has into several registers, so every path computes
the same product everywhere).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llvmlite import binding as llvm_binding

ENV_KERNEL = "KERNELS_GEMM_KERNEL"


@dataclass(frozen=True)
class Kernel:
    """A GEMM micro-kernel: vector width in bytes, rows (MR), vectors per row (NV) and
    its software prefetch distance."""

    name: str
    vector_bytes: int
    mr: int
    nv: int
    prefetch: int = 0  # k steps ahead the micro-kernel fetches B (and A) into L1; 0: none
    # The loop order: False, BLIS's (a B micro-panel read by every A strip of the block);
    # True, A-resident (an A micro-panel held in L1 while B's stream past from L2).
    a_resident: bool = False

    @property
    def code(self) -> int:
        """The compile-time literal the jitted code is specialised on: A-resident order,
        prefetch distance, width in bytes, MR, NV (806464: BLIS's order, 8 steps, 64-byte
        vectors, 6 rows, 4 vectors; 1406483: A-resident, 4 steps, 8 rows, 3 vectors)."""
        return (self.a_resident * 1_000_000 + self.prefetch * 100_000 + self.vector_bytes * 100
                + self.mr * 10 + self.nv)  # fmt: skip

    def nr(self, itemsize: int) -> int:
        return self.nv * self.vector_bytes // itemsize


KERNELS = {
    "avx512": Kernel("avx512", 64, 6, 4),
    # The same tile, fetching B's micro-panel 8 k-steps (2 KiB) and A's 64 elements ahead
    # into L1. Intel's cores: their L1 (48 KiB) holds no useful KC of a 4-vector B
    # micro-panel (KC x 32 doubles is 96 KiB at KC = 384), which each A strip then reads
    # from L2; the hardware prefetchers left the loads waiting. Xeon (KVM, 2 vCPUs),
    # DGEMM n=2048 1 thread, ratio to OpenBLAS interleaved: 0.89-0.93 without, 0.95-0.99
    # with; A's prefetch alone 0.92-0.95; a 12 x 2 tile whose B micro-panel fits L1
    # (KC 256): 0.74-0.77; KC 128 with this tile: 0.81-0.85.
    "avx512-pf": Kernel("avx512-pf", 64, 6, 4, prefetch=8),
    # Intel's default: an 8 x 3 tile in the A-resident order, as OpenBLAS's Skylake-X
    # DGEMM (its 16 x 12 column-major tile). The A micro-panel (8 x KC) stays in L1 and
    # the B micro-panels stream from a KC x NC panel in L2, fetched 4 k steps ahead; each
    # thread packs its own row chunks and B panels. Emerald Rapids Xeon (KVM, 2 vCPUs),
    # 1 thread, n=2048, ratio to OpenBLAS in the same runs: DGEMM 0.97-1.02 against
    # avx512-pf's 0.85-0.89; SGEMM 0.95-1.00 against 0.89-0.93.
    "avx512-8x3": Kernel("avx512-8x3", 64, 8, 3, prefetch=4, a_resident=True),
    "avx2": Kernel("avx2", 32, 6, 2),
    "sse": Kernel("sse", 16, 6, 2),
}


@dataclass(frozen=True)
class CpuInfo:
    """What the kernels need to know about the host."""

    model: str  # /proc/cpuinfo "model name"
    vendor: str  # "AuthenticAMD", "GenuineIntel", ...
    arch: str  # LLVM's name for the microarchitecture: "znver3", "sapphirerapids", ...
    features: frozenset[str]
    l1d_bytes: int  # per core
    l2_bytes: int  # per core
    l3_bytes: int  # per L3 instance

    @property
    def isa(self) -> str:
        """The widest vector instruction set the kernels use here."""
        if "avx512f" in self.features:
            return "avx512"
        if "avx2" in self.features and "fma" in self.features:
            return "avx2"
        return "sse"

    @property
    def intel_avx512(self) -> bool:
        """An Intel core with AVX-512, where some kernels measured other choices fastest."""
        return self.isa == "avx512" and self.vendor == "GenuineIntel"

    @property
    def default_kernel(self) -> str:
        """The micro-kernel measured fastest for this CPU: its ISA's, and on Intel's
        AVX-512 cores the A-resident 8 x 3 tile (see ``KERNELS``)."""
        return "avx512-8x3" if self.intel_avx512 else self.isa

    def vector_sets(self) -> list[str]:
        """The SIMD/matrix extensions present, in the order a reader expects."""
        order = ["sse4.2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                 "avx512vnni", "avx512bf16", "avx512fp16", "avxvnni", "amx-tile", "amx-bf16",
                 "amx-int8", "amx-fp16"]  # fmt: skip
        return [f for f in order if f in self.features]


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text.rstrip("KMG")
    return int(digits) * mult if digits.isdigit() else 0


def _caches(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict[str, int]:
    """Sizes of cpu0's data/unified caches by level: {"L1": ..., "L2": ..., "L3": ...}."""
    out: dict[str, int] = {}
    for d in sorted(root.glob("index*")):
        try:
            kind = (d / "type").read_text().strip()
            level = (d / "level").read_text().strip()
            size = _size((d / "size").read_text())
        except OSError:
            continue
        if kind in ("Data", "Unified") and size:
            out[f"L{level}"] = size
    return out


@lru_cache(maxsize=1)
def host() -> CpuInfo:
    """The host CPU (read once per process)."""
    feats = llvm_binding.get_host_cpu_features()
    caches = _caches()
    return CpuInfo(
        model=_cpuinfo_field("model name") or llvm_binding.get_host_cpu_name(),
        vendor=_cpuinfo_field("vendor_id"),
        arch=llvm_binding.get_host_cpu_name(),
        features=frozenset(k for k, v in feats.items() if v),
        l1d_bytes=caches.get("L1", 32 << 10),
        l2_bytes=caches.get("L2", 1 << 20),
        l3_bytes=caches.get("L3", 16 << 20),
    )


def pick_kernel(cpu: CpuInfo, forced: str | None = None) -> Kernel:
    """The micro-kernel for ``cpu``: ``forced`` (a name in KERNELS), else the environment's
    KERNELS_GEMM_KERNEL, else the CPU's own (``CpuInfo.default_kernel``)."""
    name = forced or os.environ.get(ENV_KERNEL, "").strip().lower() or cpu.default_kernel
    try:
        return KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown GEMM kernel {name!r}; choose from {sorted(KERNELS)}") from None


def _down(x: float, step: int) -> int:
    return max(step, int(x) // step * step)


# Blockings measured faster than the cache-size rule below, by (arch, kernel, itemsize):
# (MC, KC, NC). znver5 avx512: the original tuning of this package (Zen 5, 1 and 2 threads).
# znver4 avx512 (EPYC, 1 MiB L2, 1 thread, GF/s, rule's blocking in brackets, load 3):
# DGEMM 2048 49.2 [46.1] and 48.8 [48.7], 1024 52.4 [51.5]; SGEMM 1024 101.8 [89.2] and
# 103.0 [100.3]. KC 512 beat 256 and 384 at every MC tried (96..336).
MEASURED: dict[tuple[str, str, int], tuple[int, int, int]] = {
    ("znver5", "avx512", 8): (192, 512, 4096),
    ("znver5", "avx512", 4): (192, 512, 4096),
    ("znver4", "avx512", 8): (192, 512, 4096),
    ("znver4", "avx512", 4): (192, 512, 4096),
}


def blocking(cpu: CpuInfo, kernel: Kernel, itemsize: int) -> tuple[int, int, int]:
    """(MC, KC, NC) for ``kernel`` on ``cpu``: a measured entry, else a rule of thumb. BLIS's
    for its order: the KC x NR micro-panel of B fills half of L1, the MC x KC block of A
    half of L2, the KC x NC panel of B half of L3; for the A-resident order, see below."""
    hit = MEASURED.get((cpu.arch, kernel.name, itemsize))
    if hit is not None:
        return hit
    nr = kernel.nr(itemsize)
    if kernel.a_resident:
        # The A micro-panel fills a third of L1 (the B stream and C take the rest), the
        # KC x NC panel of B 3/8 of L2 (the A chunk streams through beside it), and a
        # thread's row chunk is at most 2048 rows (each chunk packs all of B once).
        kc = min(512, max(64, _down(cpu.l1d_bytes / 3 / (kernel.mr * itemsize), 16)))
        nc = min(4096, _down(cpu.l2_bytes * 3 / 8 / (kc * itemsize), nr))
        return 2048 // kernel.mr * kernel.mr, kc, nc
    # A 6 x 4 zmm tile is loaded and stored once per KC: below ~384 that costs more than
    # the L1 misses of a longer B micro-panel, which the L2 streams at this width.
    floor = 384 if kernel.vector_bytes >= 64 else 128
    kc = min(512, max(floor, _down(cpu.l1d_bytes / 2 / (nr * itemsize), 16)))
    mc = min(960, _down(cpu.l2_bytes / 2 / (kc * itemsize), kernel.mr))
    nc = min(8192, _down(cpu.l3_bytes / 2 / (kc * itemsize), nr))
    return mc, kc, nc
