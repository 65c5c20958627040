"""Clusters, partitions and nodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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


class ClusterRead(ReadModel):
    name: str
    adapter: str
    status: str
    version: str
    last_seen_at: datetime | None
    last_error: str
    load: dict[str, Any]
    partitions: list[PartitionRead]


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
