"""Side-by-side benchmark of the kernels package against the vendor libraries.

Every run first prints the machine: CPU model, LLVM's name for its microarchitecture, the
vector instruction sets, the caches, the GEMM micro-kernel and blocking chosen for it, and
each OpenBLAS that numpy/scipy load with its core type (threadpoolctl), so that figures
from different machines can be compared. Then, in one run: our GEMM vs numpy/OpenBLAS
(1 and 2 threads, OpenBLAS pinned with threadpoolctl), our FFT vs numpy.fft, scipy.fft and
pyFFTW (N = 2^10..2^22, and batches along the last axis), our STREAM triad vs numpy's best
in-place form, and the time ``python -m kernels validate`` takes cold and warm.

Every figure is a median over ``--repeat`` rounds in which ours and the peers run
alternately (the order flips each round), so that a noisy neighbour slows both sides
alike; ratios are ours / theirs in speed (> 1: ours is faster). Beside every 2-thread row
is the FMA probe taken right before it (shared hosts swing with the other vCPUs' load),
and beside every triad row the bound that streaming its output to memory sets.

    python benchmarks/kernels.py [--quick] [--repeat 7] [--json results.json]
    python benchmarks/kernels.py --fft-only [--exps 12-20] [--threads 1]   (FFT rows only)
    python benchmarks/kernels.py --only gemm,batch,triad   (those sections of the full run)
    python benchmarks/kernels.py --gpu   (GPU rows only: numba-cuda beside CuPy/cuBLAS;
                                          needs the ``gpu`` extra and cupy-cuda12x)

Needs the ``kernels`` and ``bench`` extras (numpy, numba, scipy, threadpoolctl, pyfftw).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

# Run as a script, this file's folder leads sys.path and its name would shadow the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import pyfftw  # noqa: E402
import scipy.fft  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import kernels  # noqa: E402
from kernels import _cpu, measure, stream  # noqa: E402
from kernels.matmul import gemm_plan  # noqa: E402

Row = dict[str, Any]


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs after one warm-up run."""
    return interleaved([fn], repeat)[0]


SETTLE_S = 0.15  # before a threaded call: other libraries' pool threads stop spinning
WARM_S = 0.002  # after the pause: untimed calls of the contender for at least this long


def interleaved(fns: list[Callable[[], object]], repeat: int, threads: int = 1) -> list[float]:
    """Median seconds of each of ``fns``, run in turn ``repeat`` times after a warm-up
    (the order reversed every other round).

    Each timed call follows an untimed call of the same function, so that every
    contender is timed on its own data, as warm in the caches as its own previous call
    left it (as in a node's repeated runs), never on caches the other contender has just
    filled with its data (a 2^16-point transform's input, output and scratch together
    outgrow a 1 MiB L2, and were timed after the peer's had pushed them out).

    With ``threads`` > 1 each timed call waits SETTLE_S first: a thread pool that has
    just finished (OpenBLAS's pthreads, FFTW's and numba's OpenMP) keeps spinning on the
    cores for a while, and on a small host would steal them from the next library's call.
    The untimed call then also wakes the library's own pool: after the pause its threads
    are asleep, and waking them took ~5 ms on this benchmark's VM (a 1M-element triad
    takes 0.4 ms), a cost that back-to-back calls, as in STREAM or validate, never pay.
    After the pause the untimed calls go on for at least WARM_S (one call at least): one
    call of a 1M triad (0.3-0.6 ms) did not bring the core back to its pace before the
    pause (2-vCPU AMD EPYC Zen 4 KVM guest, load 2, medians of 15-21 interleaved rounds,
    GB/s, ours (1 thread, streamed) / numpy's two passes: no pause 77.5 / 43.8; pause and
    one untimed call 48.1 / 33.6; pause and 2 ms of untimed calls 77.1 / 44.2, 5 ms 63.9
    / 41.4, 20 ms 58.6 / 35.1), while the same calls back to back, as STREAM runs them,
    ran at the unpaused rate; every contender gets the same warm-up.
    """
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeat):
        order = list(range(len(fns)))
        if r % 2:
            order.reverse()
        for i in order:
            if threads > 1:
                time.sleep(SETTLE_S)
                w0 = time.perf_counter()
                fns[i]()
                while time.perf_counter() - w0 < WARM_S:
                    fns[i]()
            else:
                fns[i]()
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return [median(t) for t in times]


def machine() -> dict[str, Any]:
    """The host as the figures need it described (printed at the top, kept in --json)."""
    cpu = _cpu.host()
    blas = [{k: lib.get(k) for k in ("prefix", "version", "architecture", "threading_layer",
                                     "num_threads", "filepath")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]  # fmt: skip
    plans = {}
    for dt in ("float64", "float32"):
        p = gemm_plan(dt)
        plans[dt] = {"kernel": p.kernel.name, "mr": p.kernel.mr,
                     "nr": p.kernel.nr(np.dtype(dt).itemsize), "mc": p.mc, "kc": p.kc,
                     "nc": p.nc}  # fmt: skip
    return {"cpu_model": cpu.model, "vendor": cpu.vendor, "arch": cpu.arch,
            "cpus": len(os.sched_getaffinity(0)), "isa": cpu.isa,
            "vector_sets": cpu.vector_sets(), "l1d_bytes": cpu.l1d_bytes,
            "l2_bytes": cpu.l2_bytes, "l3_bytes": cpu.l3_bytes, "gemm": plans,
            "openblas": blas, "loadavg": list(os.getloadavg())}  # fmt: skip


def print_machine(m: dict[str, Any]) -> None:
    print(f"CPU: {m['cpu_model']} ({m['vendor']}, LLVM {m['arch']}), {m['cpus']} CPUs usable; "
          f"load average {' '.join(f'{x:.2f}' for x in m['loadavg'])}")  # fmt: skip
    print(f"Instruction sets: {' '.join(m['vector_sets'])}  -> kernels use {m['isa']}")
    print(f"Caches: L1d {m['l1d_bytes'] >> 10} KiB, L2 {m['l2_bytes'] >> 10} KiB, "
          f"L3 {m['l3_bytes'] >> 20} MiB")  # fmt: skip
    for dt, p in m["gemm"].items():
        print(f"GEMM {dt}: micro-kernel {p['kernel']} {p['mr']}x{p['nr']}, "
              f"MC={p['mc']} KC={p['kc']} NC={p['nc']}")  # fmt: skip
    for lib in m["openblas"]:
        print(f"OpenBLAS: core {lib['architecture']}, {lib['prefix']} {lib['version']}, "
              f"{lib['threading_layer']}, {Path(lib['filepath']).name}")  # fmt: skip


def probe(threads: int) -> float | None:
    return kernels.fma_peak(threads, seconds=0.05) if threads > 1 else None


def fmt_probe(p: float | None) -> str:
    return f"  [FMA probe {p:6.1f} GF/s]" if p is not None else ""


def bench_gemm(sizes: list[int], repeat: int, rows: list[Row]) -> None:
    print("\n== GEMM: C = A @ B, n x n, GFLOP/s = 2n^3 / median time ==")
    print(f"{'dtype':8} {'n':>5} {'thr':>3} {'ours':>8} {'OpenBLAS':>9} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for n in sizes:
            a = rng.random((n, n)).astype(dtype)
            b = rng.random((n, n)).astype(dtype)
            reps = repeat if n < 4096 else max(3, repeat // 2)
            for threads in (1, 2):
                p = probe(threads)
                with threadpool_limits(limits=threads, user_api="blas"):
                    ours, blas = interleaved(
                        [lambda: kernels.gemm(a, b, threads=threads), lambda: a @ b],  # noqa: B023
                        reps,
                        threads,
                    )
                gf = 2 * n**3 / 1e9
                row = {"bench": "gemm", "dtype": np.dtype(dtype).name, "n": n,
                       "threads": threads, "ours_gflops": gf / ours,
                       "openblas_gflops": gf / blas, "ratio": blas / ours,
                       "fma_probe": p}  # fmt: skip
                rows.append(row)
                print(f"{row['dtype']:8} {n:5d} {threads:3d} {gf / ours:8.1f} {gf / blas:9.1f} "
                      f"{blas / ours:6.2f}{fmt_probe(p)}", flush=True)  # fmt: skip


def _fftw(x: np.ndarray, threads: int) -> Callable[[], object]:
    a = pyfftw.empty_aligned(x.shape, dtype=x.dtype)
    a[...] = x
    return pyfftw.builders.fft(a, axis=-1, threads=threads, planner_effort="FFTW_MEASURE")


def _loop(f: Callable[[], object], k: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(k):
            f()

    return run


def bench_fft(exps: list[int], batches: list[tuple[int, int]], repeat: int, rows: list[Row],
              thread_counts: tuple[int, ...] = (1, 2)) -> None:  # fmt: skip
    print("\n== FFT complex128, GFLOP/s = 5 N log2 N / median time (batch: x rows) ==")
    print("   numpy.fft is single-threaded; pyFFTW planned with FFTW_MEASURE, its own arrays;")
    print("   every library is called through Python (transforms under 2^13 points: timed as")
    print("   a loop of calls, so the timer's resolution does not count). Like calls beside")
    print("   like: ours = kernels.fft(), a function allocating its output, against numpy's")
    print("   and scipy's functions, which allocate theirs;")
    print("   plan = kernels.FFTPlan, bound to its arrays once, against pyFFTW's builder")
    print("   object, bound likewise, each with the output array it allocates itself")
    print("   (/fftw; /fftw fn: kernels.fft() against it)")
    head = (f"{'N':>12} {'thr':>3} {'ours':>7} {'plan':>7} {'numpy':>7} {'scipy':>7} "
            f"{'pyfftw':>7}")  # fmt: skip
    print(f"{head}  {'/numpy':>6} {'/scipy':>6} {'/fftw':>6} {'/fftw fn':>8}")
    rng = np.random.default_rng(1)
    shapes: list[tuple[int, ...]] = [(1 << e,) for e in exps] + list(batches)
    for shape in shapes:
        n = shape[-1]
        x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        reps = repeat if x.size < (1 << 21) else max(3, repeat // 2)
        calls = max(1, (1 << 13) // x.size)
        flop = 5 * x.size * math.log2(n) / 1e9 * calls
        for threads in thread_counts:
            fw = _fftw(x, threads)
            p = probe(threads)
            fns = [lambda: kernels.fft(x, threads=threads),  # noqa: B023
                   kernels.FFTPlan(x, threads=threads),  # its own output, as pyFFTW's
                   lambda: np.fft.fft(x, axis=-1),  # noqa: B023
                   lambda: scipy.fft.fft(x, axis=-1, workers=threads),  # noqa: B023
                   fw]  # fmt: skip
            ours, t_plan, t_np, t_sp, t_fw = interleaved(
                [_loop(f, calls) for f in fns], reps, threads
            )
            label = f"2^{int(math.log2(n))}" if len(shape) == 1 else f"{shape[0]}x{n}"
            row = {"bench": "fft", "shape": list(shape), "label": label, "threads": threads,
                   "ours_gflops": flop / ours, "plan_gflops": flop / t_plan,
                   "numpy_gflops": flop / t_np, "scipy_gflops": flop / t_sp,
                   "pyfftw_gflops": flop / t_fw, "vs_numpy": t_np / ours,
                   "vs_scipy": t_sp / ours, "vs_pyfftw": t_fw / t_plan,
                   "vs_pyfftw_fn": t_fw / ours, "fma_probe": p}  # fmt: skip
            rows.append(row)
            print(f"{label:>12} {threads:3d} {flop / ours:7.1f} {flop / t_plan:7.1f} "
                  f"{flop / t_np:7.1f} {flop / t_sp:7.1f} {flop / t_fw:7.1f}  "
                  f"{t_np / ours:6.2f} {t_sp / ours:6.2f} {t_fw / t_plan:6.2f} "
                  f"{t_fw / ours:8.2f}{fmt_probe(p)}", flush=True)  # fmt: skip


def bench_triad(sizes: list[int], repeat: int, rows: list[Row]) -> None:
    print("\n== STREAM triad a = b + s*c, GB/s = 24 B x n / median time ==")
    print("   numpy: np.multiply(c, s, out=a); np.add(a, b, out=a) (its best, single thread)")
    print("   bound: 3 x the rate of non-temporal stores alone into a, on the threads ours")
    print("   uses (one below kernels.stream.PARALLEL_BYTES), taken before each size: ours")
    print("   streams a to memory (from STREAMING_BYTES), a third of the bytes counted, and")
    print("   cannot pass it")
    print("   mem: the one-thread sizes again, b and c evicted from every cache before each")
    print("   timed call (a read of 4 x L3 between calls), as after a pause in which the")
    print("   host's other tenants took the L3 back. Both then read from memory, and the")
    print("   ratio is at most the two's memory traffic: 24 B an element for ours (b and c")
    print("   read, a streamed), 32-40 for numpy's two passes (a also read for ownership,")
    print("   and again in the second pass if the first pushed it out), 1.33-1.67x. The")
    print("   paced 2-thread row lands between this row and the first")
    print(f"{'n':>10} {'thr':>3} {'ours':>7} {'numpy':>7} {'ratio':>6} {'bound':>6}")
    rng = np.random.default_rng(2)
    evict: np.ndarray[Any, Any] | None = None  # 4 x L3, for the 'mem' rows only
    for n in sizes:
        b = rng.random(n)
        c = rng.random(n)
        a = np.zeros(n)
        used = {t: stream.triad_threads(a.nbytes, t) for t in (1, 2)}
        bound = {t: 3 * measure.store_rate(a, threads=t) for t in set(used.values())}

        def np_triad() -> None:
            np.multiply(c, 3.0, out=a)  # noqa: B023
            np.add(a, b, out=a)  # noqa: B023

        for threads in (1, 2):
            p = probe(threads)
            ours, t_np = interleaved(
                [lambda: kernels.triad(a, b, c, 3.0, threads=threads), np_triad],  # noqa: B023
                repeat,
                threads,
            )
            gb = 24 * n / 1e9
            bd = bound[used[threads]]
            row = {"bench": "triad", "n": n, "threads": threads, "ours_gbs": gb / ours,
                   "numpy_gbs": gb / t_np, "ratio": t_np / ours, "store_bound_gbs": bd,
                   "fma_probe": p}  # fmt: skip
            rows.append(row)
            print(f"{n:10d} {threads:3d} {gb / ours:7.1f} {gb / t_np:7.1f} {t_np / ours:6.2f}"
                  f" {bd:6.1f}{fmt_probe(p)}", flush=True)  # fmt: skip
        if used[2] == 1:
            if evict is None:
                evict = np.ones(4 * _cpu.host().l3_bytes // 8)
            ours, t_np = from_memory(
                [lambda: kernels.triad(a, b, c, 3.0, threads=1), np_triad],  # noqa: B023
                repeat,
                evict,
            )
            row = {"bench": "triad_mem", "n": n, "threads": 1, "ours_gbs": gb / ours,
                   "numpy_gbs": gb / t_np, "ratio": t_np / ours}  # fmt: skip
            rows.append(row)
            print(f"{n:10d} mem {gb / ours:7.1f} {gb / t_np:7.1f} {t_np / ours:6.2f}", flush=True)


def from_memory(
    fns: list[Callable[[], object]], repeat: int, evict: np.ndarray[Any, Any]
) -> list[float]:
    """Median seconds of each of ``fns``, run in turn ``repeat`` times (the order reversed
    every other round), each timed call after a read of ``evict`` (several times the L3):
    every call reads its operands from memory."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeat):
        for i in range(len(fns))[:: -1 if r % 2 else 1]:
            evict.sum()
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return [median(t) for t in times]


def bench_validate(rows: list[Row]) -> None:
    """``python -m kernels validate`` as a node runs it: cold (an empty JIT cache), then warm."""
    print("\n== python -m kernels validate (subprocess; cold: empty NUMBA_CACHE_DIR) ==")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for state in ("cold", "warm"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "kernels", "validate", "--json"],
                                  cwd=root, env=env, capture_output=True, text=True,
                                  check=True, timeout=600)  # fmt: skip
            wall = time.perf_counter() - t0
            doc = json.loads(proc.stdout)
            rows.append({"bench": "validate", "state": state, "seconds": wall,
                         "measuring_seconds": doc["seconds"]})  # fmt: skip
            rates = ", ".join(
                f"{r['kernel']} {r['gflops_median'] or r['gbs_median']:.1f}" for r in doc["results"]
            )
            print(f"   {state}: {wall:5.1f} s wall ({doc['seconds']:.1f} s measuring, "
                  f"{doc['threads']} threads; {rates})", flush=True)  # fmt: skip


def bench_gpu(repeat: int, rows: list[Row]) -> None:
    """numba-cuda GEMM and device triad beside CuPy's cuBLAS GEMM and device copy, GPU 0."""
    import cupy as cp

    from kernels import gpu

    info = gpu.devices()[0]
    peak = gpu.peak_gflops(info)
    print(f"\n== GPU 0: {info['name']}, sm_{info['compute_capability']}, {info['sms']} SMs, "
          f"{info['clock_khz'] / 1e6:.2f} GHz; vector peak FP64 {peak['fp64'] or 0:.0f}, "
          f"FP32 {peak['fp32'] or 0:.0f} GFLOP/s (tensor-core FP64 is about twice) ==")  # fmt: skip

    def cp_time(fn: Callable[[], object]) -> float:
        fn()
        cp.cuda.Device().synchronize()
        out = []
        for _ in range(repeat):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
        return median(out)

    n = 8192
    for dtype, goal in (("float64", 0.5), ("float32", 0.6)):
        times, work, residual = gpu.run_gemm(n, dtype, repeat)
        ours = work / median(times) / 1e9
        a = cp.random.random((n, n)).astype(dtype)
        b = cp.random.random((n, n)).astype(dtype)
        blas = work / cp_time(lambda: a @ b) / 1e9  # noqa: B023
        row = {"bench": "gpu_gemm", "dtype": dtype, "n": n, "ours_gflops": ours,
               "cublas_gflops": blas, "ratio": ours / blas, "goal": goal,
               "residual": residual}  # fmt: skip
        rows.append(row)
        print(f"   {dtype} GEMM n={n}: numba-cuda {ours:8.0f} GFLOP/s, cuBLAS {blas:8.0f}, "
              f"ratio {ours / blas:.2f} (goal {goal}), residual {residual:.2g}")  # fmt: skip
    size = 1 << 28
    times, nbytes, residual = gpu.run_triad(size, "float64", repeat)
    ours = nbytes / median(times) / 1e9
    src = cp.random.random(size)
    dst = cp.empty_like(src)
    copy = 2 * src.nbytes / cp_time(lambda: cp.copyto(dst, src)) / 1e9
    rows.append({"bench": "gpu_triad", "n": size, "ours_gbs": ours, "copy_gbs": copy,
                 "ratio": ours / copy, "goal": 0.85, "residual": residual})  # fmt: skip
    print(f"   triad n=2^28 float64: numba-cuda {ours:7.0f} GB/s, CuPy device copy {copy:7.0f} "
          f"GB/s, ratio {ours / copy:.2f} (goal 0.85)")  # fmt: skip
    times, work, err = gpu.run_peak(16 * max(1, info["sms"]), "float64", repeat, 100_000)
    rows.append({"bench": "gpu_peak", "ours_gflops": work / median(times) / 1e9,
                 "peak_gflops": peak["fp64"], "error": err})  # fmt: skip
    print(f"   FMA probe FP64: {work / median(times) / 1e9:8.0f} GFLOP/s "
          f"(vector peak {peak['fp64'] or 0:.0f}), sums exact: {err == 0.0}")  # fmt: skip


def _verdict(value: float, goal: float, higher: bool = True) -> str:
    return "met" if (value >= goal if higher else value <= goal) else "NOT met"


def summary(rows: list[Row]) -> None:
    def pick(bench: str, **kw: Any) -> list[Row]:
        return [
            r for r in rows if r["bench"] == bench and all(r.get(k) == v for k, v in kw.items())
        ]

    print("\n== Targets (issue 22; ratios are ours / theirs in speed) ==")
    for r in pick("gemm"):
        if r["n"] in (1024, 2048):
            name = "DGEMM" if r["dtype"] == "float64" else "SGEMM"
            print(f"   {name} n={r['n']} {r['threads']} thr: {r['ratio']:.2f}x OpenBLAS "
                  f"(goal 1.0) {_verdict(r['ratio'], 1.0)}")  # fmt: skip
    for r in pick("fft", threads=1):
        shape = r["shape"]
        if len(shape) != 1:
            print(f"   FFT batch {r['label']} 1 thr: {r['vs_numpy']:.2f}x numpy (goal 1.0) "
                  f"{_verdict(r['vs_numpy'], 1.0)}")  # fmt: skip
            continue
        e = int(math.log2(shape[0]))
        notes = []
        if e == 10:
            notes.append(f"{r['vs_scipy']:.2f}x scipy (goal 1.0) {_verdict(r['vs_scipy'], 1)}")
        if 12 <= e <= 20:
            notes.append(f"{r['vs_scipy']:.2f}x scipy (goal 2.0) {_verdict(r['vs_scipy'], 2)}")
            notes.append(f"{r['vs_pyfftw']:.2f}x pyFFTW, plans both (goal 0.8) "
                         f"{_verdict(r['vs_pyfftw'], 0.8)} [kernels.fft(): "
                         f"{r['vs_pyfftw_fn']:.2f}x]")  # fmt: skip
        if notes:
            print(f"   FFT 2^{e} 1 thr: " + "; ".join(notes))
    for r in pick("triad", threads=2):
        print(f"   Triad n={r['n']} 2 thr: {r['ratio']:.2f}x numpy (goal 1.7) "
              f"{_verdict(r['ratio'], 1.7)} [ours at "
              f"{r['ours_gbs'] / r['store_bound_gbs']:.0%} of its store bound; the goal: "
              f"{1.7 * r['numpy_gbs'] / r['store_bound_gbs']:.0%}]")  # fmt: skip
    for r in pick("triad_mem"):
        print(f"   Triad n={r['n']} from memory (no goal): {r['ratio']:.2f}x numpy, ours "
              f"{r['ours_gbs']:.1f} GB/s, numpy {r['numpy_gbs']:.1f}")  # fmt: skip
    for r in pick("gpu_gemm") + pick("gpu_triad"):
        what = f"GPU {r['dtype']} GEMM" if r["bench"] == "gpu_gemm" else "GPU triad"
        peer = "cuBLAS" if r["bench"] == "gpu_gemm" else "CuPy copy"
        print(f"   {what}: {r['ratio']:.2f}x {peer} (goal {r['goal']}) "
              f"{_verdict(r['ratio'], r['goal'])}")  # fmt: skip
    for r in pick("validate"):
        goal = 40.0 if r["state"] == "cold" else 20.0
        print(f"   validate {r['state']}: {r['seconds']:.1f} s (goal <= {goal:.0f} s) "
              f"{_verdict(r['seconds'], goal, higher=False)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the issue's table rows only")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="also write the machine and every row to this file")
    parser.add_argument("--big", action="store_true", help="GEMM n = 4096 too")
    parser.add_argument("--no-validate", action="store_true", help="skip the validate timing")
    parser.add_argument("--fft-only", action="store_true", help="only the 1-D FFT rows")
    parser.add_argument("--gpu", action="store_true", help="only the GPU rows (GPU 0)")
    parser.add_argument(
        "--only",
        help="comma list of sections of the full run: gemm, fft (1-D, --exps), batch, triad, "
        "validate",
    )
    parser.add_argument("--exps", default="10-22", help="FFT sizes 2^a..2^b (with --fft-only)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="thread counts for the FFT rows (with --fft-only)",
    )
    args = parser.parse_args()
    import platform

    import numba

    host = machine()
    print_machine(host)
    print(f"FMA probe now: 1 thread {kernels.fma_peak(1):.1f} GF/s, "
          f"2 threads {kernels.fma_peak(2):.1f} GF/s", flush=True)  # fmt: skip
    print(f"kernels {kernels.__version__}, numba {numba.__version__} "
          f"({numba.threading_layer()} threading), numpy {np.__version__}, "
          f"scipy {scipy.__version__}, pyfftw {pyfftw.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    rows: list[Row] = []
    if args.gpu:
        bench_gpu(args.repeat, rows)
    elif args.only:
        only = set(args.only.split(","))
        lo, _, hi = args.exps.partition("-")
        if "gemm" in only:
            bench_gemm([1024, 2048], args.repeat, rows)
        if "fft" in only:
            bench_fft(list(range(int(lo), int(hi or lo) + 1)), [], args.repeat, rows)
        if "batch" in only:
            bench_fft([], [(256, 256), (1024, 1024)], args.repeat, rows)
        if "triad" in only:
            bench_triad([1 << 20, 1 << 24, 1 << 25], args.repeat, rows)
        if "validate" in only:
            bench_validate(rows)
    elif args.fft_only:
        lo, _, hi = args.exps.partition("-")
        exps = list(range(int(lo), int(hi or lo) + 1))
        bench_fft(exps, [], args.repeat, rows, tuple(args.threads))
    elif args.quick:
        bench_gemm([1024], args.repeat, rows)
        bench_fft([10, 16], [(256, 256)], args.repeat, rows)
        bench_triad([1 << 22], args.repeat, rows)
    else:
        bench_gemm([512, 1024, 2048] + ([4096] if args.big else []), args.repeat, rows)
        bench_fft(list(range(10, 23)), [(256, 256), (1024, 1024)], args.repeat, rows)
        bench_triad([1 << 20, 1 << 24, 1 << 25], args.repeat, rows)
        if not args.no_validate:
            bench_validate(rows)
    summary(rows)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": host, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
