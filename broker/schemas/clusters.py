"""Clusters, partitions and nodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from .common import ReadModel


class PartitionRead(ReadModel):
    name: str
    nodes: int
    cpus_per_node: int
    memory_mb_per_node: int
    gpus_per_node: int
    max_nodes: int
    max_time_minutes: int
    rate_tflops: float
    price_per_pfh: float
    features: list[str]
    # The `qos` and `reservation` values a job spec may ask for on this partition.
    allowed_qos: list[str]
    allowed_reservations: list[str]
    # The most tasks a job array (`array`) may have here.
    max_array_tasks: int
    # GPU nodes: the precision their GPUs are billed at (fp64|fp32); whether jobs share
    # nodes here (charged by GPU share) rather than taking them whole.
    gpu_precision: str = "fp64"
    shared: bool = False


class ClusterRead(ReadModel):
    name: str
    adapter: str
    status: str
    version: str
    last_seen_at: datetime | None
    last_error: str
    load: dict[str, Any]
    partitions: list[PartitionRead]


class NodeGpuRead(ReadModel):
    """One GPU of a node: its billing rate now and its figures in its latest run."""

    index: int
    name: str
    uuid: str | None
    simulated: bool
    rate_tflops: float | None  # at the partition's billing precision; None: not measured
    dgemm_gflops: float | None
    sgemm_gflops: float | None
    triad_gbs: float | None
    peak_gflops: float | None
    passed: bool
    reasons: list[str]
    run_id: int


class NodeRateRead(ReadModel):
    """One version of a node's billing rate: CPU rate + each GPU's at ``precision``."""

    valid_from: datetime
    rate_tflops: float
    cpu_rate_tflops: float | None
    gpu_rates_tflops: list[float]
    precision: str | None
    samples: int
    run_id: int | None


class NodeRead(ReadModel):
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    partitions: list[str]
    state: str
    reason: str
    rate_tflops: float
    measured: bool
    validation: str
    updated_at: datetime
    # GPU nodes: the gres type, each GPU's current rate (TFLOP/s, by index) and figures.
    gpu_type: str | None = None
    gpu_rates_tflops: list[float] = Field(default_factory=list)
    gpu_figures: list[NodeGpuRead] = Field(default_factory=list)
