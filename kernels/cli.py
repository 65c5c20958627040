"""Command line: ``python -m kernels gemm|fft|stream|peak|validate ... [--json]``.

Prints one JSON document per run (``--json``) or a short human-readable line per kernel.
Exit status 0 whenever the kernels ran, whatever their residuals (the verdict is the
broker's); 2 with a message on stderr for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

import kernels
from kernels._jit import max_threads, policy_tag

RESULT_SCHEMA = "hpc-broker/kernels-result/1"
VALIDATE_SCHEMA = "hpc-broker/kernels-validate/1"
KERNELS = ("gemm", "fft", "stream", "peak")
# (full, quick) problem sizes: GEMM n, FFT N, STREAM elements, FMA-probe iterations.
SIZES = {
    "gemm": (2048, 256),
    "fft": (1 << 20, 1 << 12),
    "stream": (1 << 24, 1 << 20),
    "peak": (20_000_000, 200_000),
}
REPEAT = (5, 3)
REAL = {"float64": "float64", "float32": "float32", "complex128": "float64", "complex64": "float32"}
COMPLEX = {"float64": "complex128", "float32": "complex64"}


class UsageError(Exception):
    """Bad arguments: reported on stderr with exit status 2."""


def default_threads() -> int:
    """The Slurm allocation's CPUs (per task, else on the node), else every usable core."""
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = int(value.split("(")[0].split(",")[0])
            except ValueError:
                continue
            if n > 0:
                return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, Any]:
    import llvmlite
    import numba

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "kernels": kernels.__version__,
        "jit": {k: v for k, v in policy_tag()},
    }


def _header() -> dict[str, Any]:
    return {"host": socket.gethostname(), "cpu": cpu_model(), "versions": versions()}


def _threads(arg: int | None) -> int:
    n = default_threads() if arg is None else arg
    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")
    return min(n, max_threads())


def _dtype(kernel: str, arg: str) -> str:
    real = REAL[arg]
    return COMPLEX[real] if kernel == "fft" else real


def run_one(kernel: str, size: int, dtype: str, threads: int, repeat: int) -> dict[str, Any]:
    from kernels.measure import RUNNERS

    if size < 1:
        raise UsageError(f"--size must be >= 1, got {size}")
    if repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {repeat}")
    if kernel == "fft":
        from kernels.fourier import factor

        try:
            factor(size)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return RUNNERS[kernel](size, _dtype(kernel, dtype), threads, repeat)


def validate(
    threads: int, quick: bool, dtype: str, repeat: int | None, gpu: bool = False
) -> dict[str, Any]:
    """The validation document; with ``gpu``, a ``gpus`` list too: every GPU this process
    may use (CUDA_VISIBLE_DEVICES), each with its own results (see kernels.gpu_measure)."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    idx = 1 if quick else 0
    reps = REPEAT[idx] if repeat is None else repeat
    results = [run_one(k, SIZES[k][idx], dtype, threads, reps) for k in KERNELS]
    doc = {
        "schema": VALIDATE_SCHEMA,
        **_header(),
        "threads": threads,
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "results": results,
    }
    if gpu:
        from kernels.gpu_measure import validate_gpus

        doc["gpus"] = validate_gpus(quick, reps)
    doc["seconds"] = time.perf_counter() - t0
    return doc


def _line(r: dict[str, Any]) -> str:
    rate = (
        f"{r['gflops_median']:.1f} GFLOP/s" if r["gflops_median"] is not None
        else f"{r['gbs_median']:.1f} GB/s"
    )  # fmt: skip
    ok = "ok" if r["residual_ok"] else "FAILED"
    return (
        f"{r['kernel']:<6} size={r['size']} {r['dtype']} threads={r['threads']} "
        f"median {r['seconds_median']:.4g}s {rate}  residual {r['residual']} {ok}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in (*KERNELS, "validate"):
        p = sub.add_parser(name, help=f"run {name}")
        if name != "validate":
            p.add_argument("--size", type=int, default=None, help="problem size")
        else:
            p.add_argument("--quick", action="store_true", help="small sizes (tests)")
            p.add_argument("--gpu", action="store_true", help="also every visible GPU")
        p.add_argument("--dtype", choices=sorted(REAL), default="float64")
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--repeat", type=int, default=None, help="timed runs after warm-up")
        p.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        threads = _threads(args.threads)
        if args.command == "validate":
            doc = validate(threads, args.quick, args.dtype, args.repeat, args.gpu)
            lines = [_line(r) for r in doc["results"]]
            for g in doc.get("gpus", []):
                lines += [f"gpu{g['index']} {g['name']}: {_line(r)}" for r in g["results"]]
        else:
            size = SIZES[args.command][0] if args.size is None else args.size
            repeat = REPEAT[0] if args.repeat is None else args.repeat
            result = run_one(args.command, size, args.dtype, threads, repeat)
            doc = {"schema": RESULT_SCHEMA, **_header(), **result}
            lines = [_line(result)]
    except UsageError as e:
        print(f"python -m kernels: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc))
    else:
        print("\n".join(lines))
    return 0
