"""Side-by-side benchmark of the kernels package against the vendor libraries.

Prints, in one run: our GEMM vs numpy/OpenBLAS (n = 256..4096, 1 and 2 threads, OpenBLAS
pinned with threadpoolctl), our FFT vs numpy.fft, scipy.fft and pyFFTW (N = 2^10..2^22 and
a 1024 x 1024 batch along the last axis), our STREAM triad vs numpy's best in-place form,
each with ratios (ours / theirs in speed, > 1 means ours is faster) and, beside every
2-thread sample, the FMA probe taken right before it (two-thread figures on shared hosts
swing with what the other vCPU is doing; the probe says which state the sample saw).

    python benchmarks/kernels.py [--quick] [--repeat 5] [--json results.json]
    python benchmarks/kernels.py --fft-only [--exps 12-20] [--threads 1]   (FFT rows only)

Needs the ``kernels`` and ``bench`` extras (numpy, numba, scipy, threadpoolctl, pyfftw).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
from threadpoolctl import threadpool_limits  # noqa: E402

import kernels  # noqa: E402

Row = dict[str, Any]


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs after one warm-up run."""
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return median(out)


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
            reps = repeat if n < 4096 else max(2, repeat // 2)
            for threads in (1, 2):
                p = probe(threads)
                ours = timed(lambda: kernels.gemm(a, b, threads=threads), reps)  # noqa: B023
                with threadpool_limits(limits=threads, user_api="blas"):
                    blas = timed(lambda: a @ b, reps)  # noqa: B023
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


def bench_fft(exps: list[int], batch: int, repeat: int, rows: list[Row],
              thread_counts: tuple[int, ...] = (1, 2)) -> None:  # fmt: skip
    print("\n== FFT complex128, GFLOP/s = 5 N log2 N / median time (batch: x rows) ==")
    print("   numpy.fft is single-threaded; pyFFTW planned with FFTW_MEASURE, its own arrays")
    head = f"{'N':>12} {'thr':>3} {'ours':>7} {'numpy':>7} {'scipy':>7} {'pyfftw':>7}"
    print(f"{head}  {'/numpy':>6} {'/scipy':>6} {'/fftw':>6}")
    rng = np.random.default_rng(1)
    shapes = [(1 << e,) for e in exps] + ([(batch, batch)] if batch else [])
    for shape in shapes:
        n = shape[-1]
        x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        out = np.empty_like(x)
        reps = repeat if x.size < (1 << 21) else max(3, repeat // 2)
        flop = 5 * x.size * math.log2(n) / 1e9
        for threads in thread_counts:
            fw = _fftw(x, threads)
            p = probe(threads)
            ours = timed(lambda: kernels.fft(x, threads=threads, out=out), reps)  # noqa: B023
            t_np = timed(lambda: np.fft.fft(x, axis=-1), reps)  # noqa: B023
            t_sp = timed(lambda: scipy.fft.fft(x, axis=-1, workers=threads), reps)  # noqa: B023
            t_fw = timed(fw, reps)
            label = f"2^{int(math.log2(n))}" if len(shape) == 1 else f"{shape[0]}x{n}"
            row = {"bench": "fft", "shape": list(shape), "label": label, "threads": threads,
                   "ours_gflops": flop / ours, "numpy_gflops": flop / t_np,
                   "scipy_gflops": flop / t_sp, "pyfftw_gflops": flop / t_fw,
                   "vs_numpy": t_np / ours, "vs_scipy": t_sp / ours, "vs_pyfftw": t_fw / ours,
                   "fma_probe": p}  # fmt: skip
            rows.append(row)
            print(f"{label:>12} {threads:3d} {flop / ours:7.1f} {flop / t_np:7.1f} "
                  f"{flop / t_sp:7.1f} {flop / t_fw:7.1f}  {t_np / ours:6.2f} "
                  f"{t_sp / ours:6.2f} {t_fw / ours:6.2f}{fmt_probe(p)}", flush=True)  # fmt: skip


def bench_triad(sizes: list[int], repeat: int, rows: list[Row]) -> None:
    print("\n== STREAM triad a = b + s*c, GB/s = 24 B x n / median time ==")
    print("   numpy: np.multiply(c, s, out=a); np.add(a, b, out=a) (its best, single thread)")
    print(f"{'n':>10} {'thr':>3} {'ours':>7} {'numpy':>7} {'ratio':>6}")
    rng = np.random.default_rng(2)
    for n in sizes:
        b = rng.random(n)
        c = rng.random(n)
        a = np.zeros(n)

        def np_triad() -> None:
            np.multiply(c, 3.0, out=a)  # noqa: B023
            np.add(a, b, out=a)  # noqa: B023

        for threads in (1, 2):
            p = probe(threads)
            ours = timed(lambda: kernels.triad(a, b, c, 3.0, threads=threads), repeat)  # noqa: B023
            t_np = timed(np_triad, repeat)
            gb = 24 * n / 1e9
            row = {"bench": "triad", "n": n, "threads": threads, "ours_gbs": gb / ours,
                   "numpy_gbs": gb / t_np, "ratio": t_np / ours, "fma_probe": p}  # fmt: skip
            rows.append(row)
            print(f"{n:10d} {threads:3d} {gb / ours:7.1f} {gb / t_np:7.1f} {t_np / ours:6.2f}"
                  f"{fmt_probe(p)}", flush=True)  # fmt: skip


def bench_validate(rows: list[Row]) -> None:
    from kernels.cli import default_threads, validate

    t0 = time.perf_counter()
    doc = validate(default_threads(), quick=False, dtype="float64", repeat=None)
    wall = time.perf_counter() - t0
    rows.append({"bench": "validate", "seconds": wall})
    print(f"\n== validate (in-process, warm): {wall:.1f} s ==")
    for r in doc["results"]:
        rate = r["gflops_median"] or r["gbs_median"]
        print(f"   {r['kernel']:6} size={r['size']} median rate {rate:.1f}")


def summary(rows: list[Row]) -> None:
    def pick(bench: str, **kw: Any) -> list[Row]:
        return [
            r for r in rows if r["bench"] == bench and all(r.get(k) == v for k, v in kw.items())
        ]

    print("\n== Targets ==")
    for dtype in ("float64", "float32"):
        for threads, goal in ((1, 1.0), (2, 0.95)):
            for r in pick("gemm", dtype=dtype, n=2048, threads=threads):
                ok = "met" if r["ratio"] >= goal else "NOT met"
                print(f"   GEMM {dtype} n=2048 {threads} thr: {r['ratio']:.2f}x OpenBLAS "
                      f"(goal {goal}x) {ok}")  # fmt: skip
    for r in pick("fft", threads=1):
        shape = r["shape"]
        if len(shape) != 1:
            continue
        e = int(math.log2(shape[0]))
        notes = []
        if 12 <= e <= 20:
            notes.append(f"{r['vs_scipy']:.2f}x scipy (goal 2) "
                         f"{'met' if r['vs_scipy'] >= 2 else 'NOT met'}")  # fmt: skip
        if e in (16, 20):
            goal = 0.8 if e == 16 else 1.0
            notes.append(f"{r['vs_pyfftw']:.2f}x pyFFTW (goal {goal}) "
                         f"{'met' if r['vs_pyfftw'] >= goal else 'NOT met'}")  # fmt: skip
        if notes:
            print(f"   FFT 2^{e} 1 thr: " + "; ".join(notes))
    for r in pick("triad", threads=2):
        ok = "met" if r["ratio"] >= 1.7 else "NOT met"
        print(f"   Triad n={r['n']} 2 thr: {r['ratio']:.2f}x numpy (goal 1.7) {ok}")
    for r in pick("validate"):
        print(f"   validate warm: {r['seconds']:.1f} s (goal <= 20 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller sizes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write every row to this file")
    parser.add_argument("--fft-only", action="store_true", help="only the 1-D FFT rows")
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

    print(f"kernels {kernels.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, pyfftw {pyfftw.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    print(f"FMA probe now: 1 thread {kernels.fma_peak(1):.1f} GF/s, "
          f"2 threads {kernels.fma_peak(2):.1f} GF/s")  # fmt: skip
    rows: list[Row] = []
    if args.fft_only:
        lo, _, hi = args.exps.partition("-")
        exps = list(range(int(lo), int(hi or lo) + 1))
        bench_fft(exps, 0, args.repeat, rows, tuple(args.threads))
    elif args.quick:
        bench_gemm([256, 1024], args.repeat, rows)
        bench_fft([10, 14, 16], 256, args.repeat, rows)
        bench_triad([1 << 22], args.repeat, rows)
    else:
        bench_gemm([256, 512, 1024, 2048, 4096], args.repeat, rows)
        bench_fft(list(range(10, 23)), 1024, args.repeat, rows)
        bench_triad([1 << 20, 1 << 24, 1 << 25], args.repeat, rows)
        bench_validate(rows)
    summary(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
