"""GPU kernels (numba-cuda): tiled DGEMM/SGEMM, a device STREAM triad and an FMA probe.

Imported only for ``python -m kernels validate --gpu`` and the GPU benchmark: ``import
kernels`` never loads CUDA. Every kernel is checked against numpy, and all of them run under
numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) on a machine without a GPU, at small
sizes, which is how CI tests them.

Why numba-cuda: it is the CUDA target numba grew up with (now a separate package, in
maintenance mode since 2026), it has the simulator that lets CI run every kernel without
a GPU, and its kernels are ordinary numba code. Its successor numba-cuda-mlir is young and
CI could not test it without a GPU; moving is a change of import once it has a simulator.

GEMM: each block of TY x TX threads computes a BM x BN tile of C (BM = TY*RM, BN = TX*RN),
stepping over K in slices of BK: the block stages an A slice (BM x BK) and a B slice
(BK x BN) in shared memory, then every thread accumulates its RM x RN sub-tile in
registers from them. The A slice is stored transposed so that both fragments a thread
reads per k are contiguous in shared memory.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from kernels.gpu_config import (
    BM,
    BN,
    PROBE_B,
    PROBE_CHAINS,
    PROBE_THREADS,
    TRIAD_THREADS,
    TX,
    TY,
)


def cuda() -> Any:
    """numba.cuda (the simulator when NUMBA_ENABLE_CUDASIM=1)."""
    from numba import cuda as numba_cuda

    return numba_cuda


def _kern() -> Any:
    from kernels import _gpu_kernels

    return _gpu_kernels


def simulated() -> bool:
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def gemm(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``a @ b`` on the current GPU for 2-D float32/float64 host arrays (copied over)."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm shapes {a.shape} and {b.shape} do not align")
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm needs two float32 or two float64 arrays, got {a.dtype}, {b.dtype}")
    cu = cuda()
    da, db = cu.to_device(a), cu.to_device(b)
    dc = cu.device_array((a.shape[0], b.shape[1]), a.dtype)
    gemm_device(da, db, dc)
    return dc.copy_to_host()  # type: ignore[no-any-return]


def gemm_device(da: Any, db: Any, dc: Any) -> None:
    """dc = da @ db for device arrays (asynchronous on the default stream)."""
    m, n = dc.shape
    grid = (math.ceil(n / BN), math.ceil(m / BM))
    _kern().gemm_kernel(np.dtype(dc.dtype).name)[grid, (TX, TY)](da, db, dc)


def triad_device(da: Any, db: Any, dc: Any, scalar: float) -> None:
    """da[:] = db + scalar * dc on the device (grid-stride loop)."""
    blocks = min(math.ceil(da.shape[0] / TRIAD_THREADS), 65535)
    _kern().triad_kernel()[blocks, TRIAD_THREADS](da, db, dc, scalar)


def triad(b: np.ndarray[Any, Any], c: np.ndarray[Any, Any], scalar: float) -> np.ndarray[Any, Any]:
    """b + scalar * c computed on the GPU (host arrays in and out)."""
    cu = cuda()
    db, dc = cu.to_device(np.ascontiguousarray(b)), cu.to_device(np.ascontiguousarray(c))
    da = cu.device_array_like(db)
    triad_device(da, db, dc, scalar)
    return da.copy_to_host()  # type: ignore[no-any-return]


def probe(blocks: int, iters: int, dtype: Any = np.float64) -> tuple[np.ndarray[Any, Any], float]:
    """Run the FMA probe: (each thread's sum, the exact value every sum must equal)."""
    cu = cuda()
    x = cu.to_device(np.array([1.0, PROBE_B, 0.0], dtype=dtype))
    out = cu.device_array(blocks * PROBE_THREADS, dtype)
    _kern().probe_kernel()[blocks, PROBE_THREADS](x, iters, out)
    return out.copy_to_host(), PROBE_CHAINS * iters * PROBE_B


def _event_times(fn: Callable[[], None], repeat: int) -> list[float]:
    """Seconds per call from CUDA events (wall clock under the simulator)."""
    cu = cuda()
    fn()
    cu.synchronize()
    out = []
    for _ in range(repeat):
        if simulated():
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
            continue
        start, end = cu.event(), cu.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(cu.event_elapsed_time(start, end) / 1e3)
    return out


def run_gemm(size: int, dtype: str, repeat: int) -> tuple[list[float], float, float]:
    """Time C = A @ B (n x n) on the device: (seconds, work in flop, residual as on the CPU)."""
    cu = cuda()
    dt = np.dtype(dtype)
    rng = np.random.default_rng(20240601)
    a = rng.uniform(-0.5, 0.5, (size, size)).astype(dt)
    b = rng.uniform(-0.5, 0.5, (size, size)).astype(dt)
    da, db = cu.to_device(a), cu.to_device(b)
    dc = cu.device_array((size, size), dt)
    times = _event_times(lambda: gemm_device(da, db, dc), repeat)
    c = dc.copy_to_host().astype(np.float64)
    x = rng.uniform(-0.5, 0.5, size)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    r = np.abs(c @ x - a64 @ (b64 @ x)).max()
    scale = np.abs(a64).sum(axis=1).max() * np.abs(b64).sum(axis=1).max() * np.abs(x).max()
    residual = float(r / (float(np.finfo(dt).eps) * size * scale))
    return times, 2.0 * size**3, residual


def run_triad(size: int, dtype: str, repeat: int) -> tuple[list[float], float, float]:
    """Time the device triad on ``size`` elements: (seconds, bytes moved, residual)."""
    cu = cuda()
    dt = np.dtype(dtype)
    rng = np.random.default_rng(20240601)
    b = rng.uniform(0.5, 1.0, size).astype(dt)
    c = rng.uniform(0.5, 1.0, size).astype(dt)
    db, dc = cu.to_device(b), cu.to_device(c)
    da = cu.device_array_like(db)
    times = _event_times(lambda: triad_device(da, db, dc, 3.0), repeat)
    ref = b.astype(np.float64) + 3.0 * c.astype(np.float64)
    got = da.copy_to_host()
    residual = float(np.abs(got - ref).max() / (float(np.finfo(dt).eps) * np.abs(ref).max()))
    return times, 3.0 * dt.itemsize * size, residual


def run_peak(blocks: int, dtype: str, repeat: int, iters: int) -> tuple[list[float], float, float]:
    """Time the FMA probe: (seconds, flop, relative error of the exact sums)."""
    dt = np.dtype(dtype)
    cu = cuda()
    x = cu.to_device(np.array([1.0, PROBE_B, 0.0], dtype=dt))
    out = cu.device_array(blocks * PROBE_THREADS, dt)
    kern = _kern().probe_kernel()
    times = _event_times(lambda: kern[blocks, PROBE_THREADS](x, iters, out), repeat)
    expected = PROBE_CHAINS * iters * PROBE_B
    err = float(np.abs(out.copy_to_host() - expected).max() / expected)
    return times, 2.0 * PROBE_CHAINS * iters * blocks * PROBE_THREADS, err


def contexts() -> list[Any]:
    """A context per GPU this process may use (CUDA_VISIBLE_DEVICES applied by the driver).

    The CUDA simulator has one device whatever the environment says: it then stands in
    for each GPU that CUDA_VISIBLE_DEVICES lists (a fake-GPU node's allocation), so a
    node's validation reports as many GPUs as its allocation gave it.
    """
    found = list(cuda().gpus)
    if simulated() and found:
        listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        return [found[0]] * max(1, len(listed))
    return found


def devices() -> list[dict[str, Any]]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES applied by the driver)."""
    out = []
    for i, ctx in enumerate(contexts()):
        d = getattr(ctx, "_device", ctx)  # numba's context manager wraps the Device
        name = getattr(d, "name", "CUDA simulator" if simulated() else "unknown")
        cc = getattr(d, "compute_capability", None)
        uuid = getattr(d, "uuid", None)
        out.append({
            "index": i,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "uuid": str(uuid) if uuid else None,
            "compute_capability": ".".join(map(str, cc)) if cc else None,
            "sms": int(getattr(d, "MULTIPROCESSOR_COUNT", 0) or 0),
            "clock_khz": int(getattr(d, "CLOCK_RATE", 0) or 0),
        })  # fmt: skip
    return out


# FP64 and FP32 FMAs per SM per clock by compute capability, vector units only (no tensor
# cores), from NVIDIA's architecture whitepapers: sm_80 (A100) 32 / 64, sm_90 (H100, H200)
# 64 / 128, sm_86 and sm_89 (GeForce/L40-class) 2 / 128.
FMA_PER_SM = {"8.0": (32, 64), "9.0": (64, 128), "8.6": (2, 128), "8.9": (2, 128)}


def peak_gflops(info: dict[str, Any]) -> dict[str, float | None]:
    """Vector FP64/FP32 peak from SM count and clock (None for an unknown architecture)."""
    lanes = FMA_PER_SM.get(str(info.get("compute_capability")))
    if not lanes or not info.get("sms") or not info.get("clock_khz"):
        return {"fp64": None, "fp32": None}
    ghz = info["clock_khz"] / 1e6
    return {"fp64": 2 * lanes[0] * info["sms"] * ghz, "fp32": 2 * lanes[1] * info["sms"] * ghz}
