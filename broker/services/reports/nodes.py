"""Node health over time: versioned billing rates and the latest validation run of each node.

Both read one cluster's rows through their ``(node_id, …)`` indexes: the rate versions
of a window (with the version in force when it opened), and one run per node. GPU nodes:
each GPU's latest figures (``ix_gpu_result_node_gpu``), a node's rate versions with their
CPU and per-GPU parts, and its GPUs' figures run by run.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ...models import GpuResult, Node, NodeRate, ValidationRun


@dataclass(frozen=True, slots=True)
class RateSeries:
    """One node's rate versions, oldest first, as (valid_from, MFLOP/s)."""

    node: str
    points: list[tuple[datetime, int]]

    @property
    def spread(self) -> float:
        """How far the rate moved over the window, relative to its highest value."""
        rates = [r for _, r in self.points]
        top = max(rates, default=0)
        return (top - min(rates)) / top if top > 0 else 0.0


def rate_history(session: Session, cluster_id: uuid.UUID, since: datetime) -> list[RateSeries]:
    """Per node of the cluster, the rate versions from ``since`` on (and the one in force)."""
    nodes = select(Node.id).where(Node.cluster_id == cluster_id).scalar_subquery()
    in_force = (
        select(func.max(NodeRate.id))
        .where(NodeRate.node_id.in_(nodes), NodeRate.valid_from < since)
        .group_by(NodeRate.node_id)
    )
    rows = session.execute(
        select(Node.name, NodeRate.valid_from, NodeRate.rate_mflops)
        .join(Node, Node.id == NodeRate.node_id)
        .where(
            NodeRate.node_id.in_(nodes),
            (NodeRate.valid_from >= since) | NodeRate.id.in_(in_force),
        )
        .order_by(Node.name, NodeRate.valid_from, NodeRate.id)
    )
    series: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for name, valid_from, rate in rows:
        series[name].append((max(valid_from, since), int(rate)))
    return [RateSeries(name, points) for name, points in series.items()]


def latest_runs(session: Session, cluster_id: uuid.UUID) -> dict[uuid.UUID, ValidationRun]:
    """The newest validation run of each node of the cluster, by node id."""
    newest = (
        select(func.max(ValidationRun.id))
        .join(Node, Node.id == ValidationRun.node_id)
        .where(Node.cluster_id == cluster_id)
        .group_by(ValidationRun.node_id)
    )
    runs = session.scalars(select(ValidationRun).where(ValidationRun.id.in_(newest)))
    return {r.node_id: r for r in runs}


def latest_gpus(session: Session, node_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[GpuResult]]:
    """Each GPU's figures from its newest validation run, by node id, by GPU index."""
    if not node_ids:
        return {}
    newest = (
        select(func.max(GpuResult.id))
        .where(GpuResult.node_id.in_(node_ids))
        .group_by(GpuResult.node_id, GpuResult.gpu_index)
    )
    out: dict[uuid.UUID, list[GpuResult]] = defaultdict(list)
    for row in session.scalars(
        select(GpuResult).where(GpuResult.id.in_(newest)).order_by(GpuResult.gpu_index)
    ):
        out[row.node_id].append(row)
    return dict(out)


def node_rates(session: Session, node_id: uuid.UUID, limit: int = 50) -> list[NodeRate]:
    """A node's rate versions, newest first, each with its CPU and per-GPU parts."""
    return list(
        session.scalars(
            select(NodeRate)
            .where(NodeRate.node_id == node_id)
            .order_by(NodeRate.valid_from.desc(), NodeRate.id.desc())
            .limit(limit)
        )
    )


def gpu_runs(session: Session, node_id: uuid.UUID, limit: int = 50) -> list[GpuResult]:
    """A node's GPUs' figures of its last ``limit`` runs with GPUs, newest run first."""
    runs = (
        select(GpuResult.run_id)
        .where(GpuResult.node_id == node_id)
        .group_by(GpuResult.run_id)
        .order_by(GpuResult.run_id.desc())
        .limit(limit)
    )
    return list(
        session.scalars(
            select(GpuResult)
            .where(GpuResult.node_id == node_id, GpuResult.run_id.in_(runs.scalar_subquery()))
            .order_by(GpuResult.run_id.desc(), GpuResult.gpu_index)
        )
    )
