"""GPU nodes' validation: each GPU judged on its own, its figures kept, its rate measured.

A GPU node's validation run reports every GPU its allocation gave it (``kernels validate
--gpu``). ``judge`` holds each of the node's GPUs to the partition's GPU references and
names it in every reason; ``record`` keeps each GPU's figures and verdict (``GpuResult``)
per run; ``rates`` gives each GPU's billing rate, the median of its recent passing
figures at the partition's precision (DGEMM for ``fp64``, SGEMM for ``fp32``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import GpuResult, Node, Partition, RunState, ValidationRun
from ..schemas.kernels import GpuReport
from .references import against

#: GPU reference name -> (kernel, dtype, result field) in a GPU's results.
GPU_METRICS = {
    "dgemm_gflops": ("gemm", "float64", "gflops_median"),
    "sgemm_gflops": ("gemm", "float32", "gflops_median"),
    "triad_gbs": ("stream", None, "gbs_median"),
    "peak_gflops": ("peak", None, "gflops_median"),
}


@dataclass
class GpuVerdict:
    index: int
    report: GpuReport | None  # None: the GPU did not report
    passed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)


def judge(
    gpus: list[GpuReport], expected: int, references: dict[str, list[float]]
) -> list[GpuVerdict]:
    """Each of the node's ``expected`` GPUs judged on its own: reported at all, residuals
    within their thresholds, figures within ``references``. Reasons name the GPU."""
    by_index = {g.index: g for g in gpus}
    out = []
    for index in range(max(expected, len(gpus))):
        gpu = by_index.get(index)
        if gpu is None:
            why = f"gpu{index}: missing (the node has {expected} GPUs, the run saw {len(gpus)})"
            out.append(GpuVerdict(index, None, False, [why]))
            continue
        metrics: dict[str, float | None] = {}
        for key, (kernel, dtype, attr) in GPU_METRICS.items():
            res = gpu.result(kernel, dtype)
            metrics[key] = None if res is None else getattr(res, attr)
        reasons = [
            f"{gpu.label}: {r.kernel} {r.dtype} residual {r.residual:.3g} over its threshold"
            for r in gpu.results
            if not r.residual_ok
        ]
        for key, ref in sorted(references.items()):
            if key in GPU_METRICS:
                reasons += [f"{gpu.label} {why}" for why in against(key, metrics.get(key), ref)]
        if metrics["dgemm_gflops"] is None and metrics["sgemm_gflops"] is None:
            reasons.append(f"{gpu.label}: gemm not measured")
        out.append(GpuVerdict(index, gpu, not reasons, reasons, metrics))
    return out


def gpu_rate_mflops(gflops: float | None) -> int:
    """A GPU's billing rate from its GEMM figure: a GPU that measured anything is worth at
    least 1 MFLOP/s (the CUDA simulator's well under 1 would otherwise round to none)."""
    if not gflops or gflops <= 0:
        return 0
    return max(1, round(gflops * 1000))


def node_gpus(node: Node, partition: Partition | None) -> int:
    """The GPUs a node has: as its scheduler lists them, else as its partition says."""
    return node.gpus or (partition.gpus_per_node if partition is not None else 0)


def record(session: Session, node: Node, run: ValidationRun, verdicts: list[GpuVerdict]) -> None:
    for v in verdicts:
        if v.report is None:
            continue
        session.add(
            GpuResult(
                run_id=run.id,
                node_id=node.id,
                gpu_index=v.index,
                name=v.report.name[:100],
                gpu_uuid=(v.report.uuid or None) and str(v.report.uuid)[:64],
                simulated=v.report.simulated,
                dgemm_gflops=v.metrics.get("dgemm_gflops"),
                sgemm_gflops=v.metrics.get("sgemm_gflops"),
                triad_gbs=v.metrics.get("triad_gbs"),
                peak_gflops=v.metrics.get("peak_gflops"),
                passed=v.passed,
                reasons=v.reasons,
            )
        )


def rates(session: Session, node: Node, gpus: int, precision: str, samples: int) -> list[int]:
    """Each GPU's rate: the median of its recent passing figures at ``precision``."""
    column = GpuResult.sgemm_gflops if precision == "fp32" else GpuResult.dgemm_gflops
    rates = []
    for index in range(gpus):
        recent = [
            g
            for g in session.scalars(
                select(column)
                .join(ValidationRun, ValidationRun.id == GpuResult.run_id)
                .where(
                    GpuResult.node_id == node.id,
                    GpuResult.gpu_index == index,
                    ValidationRun.state == RunState.PASSED,
                )
                .order_by(GpuResult.run_id.desc())
                .limit(samples)
            )
            if g is not None
        ]
        rates.append(gpu_rate_mflops(statistics.median(recent)) if recent else 0)
    return rates
