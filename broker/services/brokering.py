"""Brokering: choose the (cluster, partition) that runs a job, and explain the choice.

Candidates are partitions of enabled, reachable clusters that can run the request
(node count, cores, memory, GPUs, time limit, features). Each is scored by its expected
turnaround (wait for nodes + run time at the node rate) and its price; the lowest score
wins. An explicit cluster or partition narrows the candidates and, if none fits, the
request is refused naming the field and the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import InvalidInput
from ..models import Cluster, ClusterStatus, Partition
from ..units import UNITS_PER_PFH
from .clusters import max_rate_mflops


class ResourceRequest(Protocol):
    nodes: int
    ntasks: int | None
    cpus_per_task: int | None
    memory_mb: int | None
    gpus_per_node: int | None
    time_limit_minutes: int
    cluster: str | None
    partition: str | None
    constraints: list[str] | None


@dataclass(frozen=True)
class Weights:
    """Seconds of expected turnaround that one unit of currency is worth, etc."""

    wait: float = 1.0
    run: float = 1.0
    price: float = 0.0


@dataclass
class Candidate:
    cluster: Cluster
    partition: Partition
    rate_mflops: int
    wait_s: float = 0.0
    run_s: float = 0.0
    cost: float = 0.0
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster.name,
            "partition": self.partition.name,
            "score": round(self.score, 3),
            "expected_wait_s": round(self.wait_s, 1),
            "expected_run_s": round(self.run_s, 1),
            "rate_tflops": self.rate_mflops / 1e6,
            "price": round(self.cost, 6),
        }


@dataclass
class RoutingDecision:
    chosen: Candidate
    alternatives: list[dict[str, Any]]
    rejected: list[dict[str, str]]

    def as_json(self) -> dict[str, Any]:
        return {
            "cluster": self.chosen.cluster.name,
            "partition": self.chosen.partition.name,
            "reasons": self.chosen.reasons,
            "score": round(self.chosen.score, 3),
            "alternatives": self.alternatives,
            "rejected": self.rejected,
        }


def misfit(req: ResourceRequest, part: Partition) -> str | None:
    """Why the partition cannot run the request, or None if it can."""
    if req.nodes > part.max_nodes:
        return f"needs {req.nodes} nodes, partition allows {part.max_nodes}"
    tasks = req.ntasks or req.nodes
    cpus = math.ceil(tasks / req.nodes) * (req.cpus_per_task or 1)
    if cpus > part.cpus_per_node:
        return f"needs {cpus} CPUs per node, nodes have {part.cpus_per_node}"
    if req.memory_mb and req.memory_mb > part.memory_mb_per_node:
        return f"needs {req.memory_mb} MB per node, nodes have {part.memory_mb_per_node}"
    if (req.gpus_per_node or 0) > part.gpus_per_node:
        return f"needs {req.gpus_per_node} GPUs per node, nodes have {part.gpus_per_node}"
    if req.time_limit_minutes > part.max_time_minutes:
        return (
            f"time limit {req.time_limit_minutes} min exceeds the partition's "
            f"{part.max_time_minutes}"
        )
    missing = set(req.constraints or ()) - set(part.features)
    if missing:
        return f"lacks features {sorted(missing)}"
    return None


def choose(session: Session, req: ResourceRequest, weights: Weights = Weights()) -> RoutingDecision:
    rows = session.execute(
        select(Cluster, Partition)
        .join(Partition, Partition.cluster_id == Cluster.id)
        .where(Cluster.enabled)
        .order_by(Cluster.name, Partition.name)
    ).all()
    if req.cluster is not None and req.cluster not in {c.name for c, _ in rows}:
        raise InvalidInput("cluster", f"unknown cluster {req.cluster!r}")
    if req.partition is not None and req.partition not in {
        p.name for c, p in rows if req.cluster in (None, c.name)
    }:
        raise InvalidInput("partition", f"unknown partition {req.partition!r}")
    candidates: list[Candidate] = []
    rejected: list[dict[str, str]] = []
    for cluster, part in rows:
        if req.cluster not in (None, cluster.name) or req.partition not in (None, part.name):
            continue
        why = misfit(req, part)
        if why is None and cluster.status is ClusterStatus.DOWN:
            why = f"cluster not answering: {cluster.last_error[:200]}"
        if why is not None:
            rejected.append({"cluster": cluster.name, "partition": part.name, "reason": why})
            continue
        candidates.append(_score(session, req, cluster, part, weights))
    if not candidates:
        field_ = "partition" if req.partition else "cluster" if req.cluster else "nodes"
        reasons = "; ".join(f"{r['cluster']}/{r['partition']}: {r['reason']}" for r in rejected)
        raise InvalidInput(field_, f"no cluster can run this job ({reasons or 'none configured'})")
    candidates.sort(key=lambda c: (c.score, c.cluster.name, c.partition.name))
    best = candidates[0]
    best.reasons = _explain(req, best, candidates[1:])
    return RoutingDecision(best, [c.summary() for c in candidates[1:4]], rejected)


def _score(
    session: Session, req: ResourceRequest, cluster: Cluster, part: Partition, w: Weights
) -> Candidate:
    rate = max_rate_mflops(session, part)
    load = (cluster.load or {}).get(part.name, {})
    idle = int(load.get("idle_nodes", part.nodes))
    pending = int(load.get("pending_jobs", 0))
    # Expected wait: nothing if enough nodes are idle; otherwise a share of the queue.
    wait_s = (
        0.0
        if idle >= req.nodes and pending == 0
        else ((pending + 1) * req.time_limit_minutes * 60 / max(part.nodes, 1) / 2)
    )
    # Run time scales inversely with node speed, relative to a 1 TFLOP/s node.
    run_s = req.time_limit_minutes * 60 * 1e6 / max(rate, 1)
    hold_pfh = req.nodes * rate * req.time_limit_minutes * 60 / UNITS_PER_PFH
    cost = hold_pfh * part.price_per_pfh
    score = w.wait * wait_s + w.run * run_s + w.price * cost
    return Candidate(cluster, part, rate, wait_s, run_s, cost, score)


def _explain(req: ResourceRequest, best: Candidate, others: list[Candidate]) -> list[str]:
    reasons = []
    if req.cluster or req.partition:
        reasons.append("explicitly requested")
    reasons.append(f"fits: {req.nodes} node(s) within max {best.partition.max_nodes}")
    reasons.append(f"node rate {best.rate_mflops / 1e6:g} TFLOP/s")
    reasons.append(
        "idle nodes available now" if best.wait_s == 0 else f"expected wait {best.wait_s:.0f} s"
    )
    if others:
        reasons.append(f"lowest score {best.score:.1f} of {len(others) + 1} candidates")
    return reasons
