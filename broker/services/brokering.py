"""Brokering: choose the (cluster, partition) that runs a job, and explain the choice.

Candidates are partitions of enabled, answering clusters that can run the request
(node count, cores, memory, GPUs, time limit, features; the QOS and reservation it
asks for on the partition's allow-lists) within the enterprise's remaining capacity
cap; a cluster that does not answer is used only when no answering one fits (the job
then waits, accepted, until it answers). Each is scored by
``score`` (a pure function, also used by the routing simulation in benchmarks/) from
the partition's live load, cached by the worker and never fetched inside a request:
expected wait for nodes, run time at the node rate (for a GPU job, at the partition's
measured GPU rate × the GPUs it asks per node), and price, weighted by ``Weights``.
CPU-only jobs stay off GPU partitions while another partition can run them
(``Weights.cpu_jobs_off_gpu``, ``BROKER_ROUTING_CPU_JOBS_OFF_GPU``, default on). The
lowest score wins; the decision, its reasons and the runners-up are stored with the
job. An explicit cluster or partition narrows the candidates; if none
fits, the request is refused naming the field and why.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..config import Settings
from ..errors import InvalidInput
from ..models import Cluster, ClusterStatus, Partition
from ..units import HOLD, work_pfh, work_units
from .clusters import gpu_rates_mflops, max_rates_mflops


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
    qos: str | None
    reservation: str | None
    array: str | None


#: The most tasks any array may have (each partition's ``max_array_tasks`` is lower).
MAX_ARRAY_TASKS = 1_000_000


def array_of(req: ResourceRequest) -> sa_.ArraySpec | None:
    """The request's job array, parsed (``InvalidInput`` naming ``array``), or None."""
    if not req.array:
        return None
    try:
        return sa_.parse_array(req.array, max_tasks=MAX_ARRAY_TASKS)
    except ValueError as exc:
        raise InvalidInput("array", str(exc)) from exc


def _tasks(req: ResourceRequest) -> tuple[int, int]:
    """(tasks, how many run at once): (1, 1) for a plain job."""
    spec = array_of(req)
    return (1, 1) if spec is None else (len(spec.indices), spec.width)


@dataclass(frozen=True)
class Weights:
    """How many seconds of turnaround one unit of each term is worth in the score.

    ``wait``: seconds waiting for nodes; ``run``: seconds running (node speed matters);
    ``price``: currency of the partition's price per PFlop·h times the job's work.
    ``cpu_jobs_off_gpu``: a job that asks no GPU is not sent to a GPU partition while
    another partition can run it (the routing policy beside the weights).
    """

    wait: float = 1.0
    run: float = 1.0
    price: float = 0.0
    cpu_jobs_off_gpu: bool = True


def weights_from(settings: Settings) -> Weights:
    return Weights(
        settings.routing_weight_wait,
        settings.routing_weight_run,
        settings.routing_weight_price,
        settings.routing_cpu_jobs_off_gpu,
    )


@dataclass
class JobRequest:
    """A stored job's resources as a routing request (for re-routing)."""

    nodes: int
    ntasks: int | None
    cpus_per_task: int | None
    memory_mb: int | None
    gpus_per_node: int | None
    time_limit_minutes: int
    cluster: str | None = None
    partition: str | None = None
    constraints: list[str] | None = None
    qos: str | None = None
    reservation: str | None = None
    array: str | None = None


@dataclass(frozen=True)
class Load:
    """A partition's live state, as the worker last saw it."""

    total_nodes: int
    idle_nodes: int
    pending_jobs: int = 0
    running_jobs: int = 0
    in_service_nodes: int | None = None  # None: not known yet (no probe saw the nodes)


#: Share of its time limit a job is expected to run (limits are upper bounds).
RUN_FRACTION = 0.25


@dataclass(frozen=True)
class Score:
    wait_s: float
    run_s: float
    cost: float
    total: float


def score(
    nodes: int,
    time_limit_minutes: int,
    rate_mflops: int,
    price_per_pfh: float,
    load: Load,
    w: Weights,
    speed_mflops: int | None = None,
) -> Score:
    """The expected turnaround and price of running a job on a partition.

    Run: a share of the time limit scaled by node speed against a 1 TFLOP/s node
    (faster nodes finish the same work sooner). Wait: none when enough nodes are idle
    and nobody queues; otherwise half a run for busy nodes to free up, plus the queue
    ahead (pending jobs, each assumed like this one) spread over the partition's nodes.
    ``speed_mflops``: how fast the job runs there per node, where not its billing rate
    (a GPU job runs at its GPUs' rate).
    """
    # Jobs use a fraction of their limit; the queue ahead is assumed to be like this job.
    speed = rate_mflops if speed_mflops is None else speed_mflops
    run_s = time_limit_minutes * 60 * RUN_FRACTION * 1e6 / max(speed, 1)
    if load.idle_nodes >= nodes and load.pending_jobs == 0:
        wait_s = 0.0
    else:
        busy = 0.5 * run_s if load.idle_nodes < nodes else 0.0
        wait_s = busy + load.pending_jobs * run_s * nodes / max(load.total_nodes, 1)
    cost = work_pfh(rate_mflops, time_limit_minutes * 60, nodes) * price_per_pfh
    return Score(wait_s, run_s, cost, w.wait * wait_s + w.run * run_s + w.price * cost)


@dataclass
class Candidate:
    cluster: Cluster
    partition: Partition
    rate_mflops: int
    score: Score
    reasons: list[str] = field(default_factory=list)
    gpu_rate_mflops: int | None = None  # one GPU's measured rate here, if any

    def summary(self) -> dict[str, Any]:
        out = {
            "cluster": self.cluster.name,
            "partition": self.partition.name,
            "score": round(self.score.total, 3),
            "expected_wait_s": round(self.score.wait_s, 1),
            "expected_run_s": round(self.score.run_s, 1),
            "rate_tflops": self.rate_mflops / 1e6,
            "price": round(self.score.cost, 6),
        }
        if self.gpu_rate_mflops is not None:
            out["gpu_rate_tflops"] = self.gpu_rate_mflops / 1e6
        return out


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
            "score": round(self.chosen.score.total, 3),
            "expected_wait_s": round(self.chosen.score.wait_s, 1),
            "expected_run_s": round(self.chosen.score.run_s, 1),
            "alternatives": self.alternatives,
            "rejected": self.rejected,
            # Jobs share nodes there: submitted without --exclusive, charged by GPU share.
            "shared": self.chosen.partition.shared,
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
    tasks, _ = _tasks(req)
    if tasks > part.max_array_tasks:
        return f"array of {tasks} tasks exceeds the partition's limit of {part.max_array_tasks}"
    refused = _allow_lists(req, part)
    if refused:
        field_, allowed = refused[0]
        return f"{field_} {getattr(req, field_)!r} is not allowed here (allowed: {allowed})"
    return None


def _allow_lists(req: ResourceRequest, part: Partition) -> list[tuple[str, list[str]]]:
    """The spec's ``qos``/``reservation`` that ``part``'s allow-list lacks, with the list."""
    asked = [
        ("qos", req.qos, list(part.allowed_qos or [])),
        ("reservation", req.reservation, list(part.allowed_reservations or [])),
    ]
    return [(f, allowed) for f, value, allowed in asked if value and value not in allowed]


def _check_allowed_anywhere(req: ResourceRequest, parts: list[Partition]) -> None:
    """A ``qos`` or ``reservation`` that no partition in reach allows: 422 naming it."""
    for field_ in ("qos", "reservation"):
        value = getattr(req, field_)
        if value and parts and all(field_ in dict(_allow_lists(req, p)) for p in parts):
            allowed = sorted({v for p in parts for v in dict(_allow_lists(req, p)).get(field_, [])})
            raise InvalidInput(
                field_,
                f"{value!r} is not allowed on the partitions that could run the job"
                f" (allowed there: {', '.join(allowed) or 'none'})",
            )


@dataclass(frozen=True)
class Snapshot:
    """The enabled clusters' partitions and their hold rates, read once for many
    decisions (a batch of submissions routes every item from one). ``decided``: the
    decisions ``choose_in`` made from it, by request shape (see there)."""

    rows: list[tuple[Cluster, Partition]]
    rates: dict[uuid.UUID, int]
    gpu_rates: dict[uuid.UUID, int] = field(default_factory=dict)  # one GPU's, measured
    decided: dict[tuple[Any, ...], RoutingDecision] = field(
        default_factory=dict, compare=False, repr=False
    )


def snapshot(session: Session) -> Snapshot:
    """What routing reads, in three queries."""
    rows = [
        (c, p)
        for c, p in session.execute(
            select(Cluster, Partition)
            .join(Partition, Partition.cluster_id == Cluster.id)
            .where(Cluster.enabled)
            .order_by(Cluster.name, Partition.name)
        )
    ]
    parts = [p for _, p in rows]
    return Snapshot(rows, max_rates_mflops(session, parts), gpu_rates_mflops(session, parts))


#: The most decisions one snapshot remembers (it lives ``SnapshotCache.ttl_s``).
MAX_DECIDED = 1024


def _shape(req: ResourceRequest) -> tuple[Any, ...]:
    """Every field of the request that routing reads (``ResourceRequest``)."""
    return (
        req.nodes,
        req.ntasks,
        req.cpus_per_task,
        req.memory_mb,
        req.gpus_per_node,
        req.time_limit_minutes,
        req.cluster,
        req.partition,
        None if req.constraints is None else tuple(req.constraints),
        req.qos,
        req.reservation,
        req.array,
    )


def choose_in(
    snap: Snapshot,
    req: ResourceRequest,
    weights: Weights,
    *,
    capacity_left_mflops: int | None = None,
) -> RoutingDecision:
    """``choose`` from ``snap``, once per request shape: a decision is a function of the
    snapshot, the request's routing fields, the weights and the capacity left, so two
    requests alike in those get the same decision (the same object: callers only read
    it). A batch of submissions routes most items from here; a refusal is not
    remembered (it is raised again each time)."""
    key = (_shape(req), weights, capacity_left_mflops)
    decision = snap.decided.get(key)
    if decision is None:
        decision = choose(None, req, weights, capacity_left_mflops=capacity_left_mflops, snap=snap)
        if len(snap.decided) >= MAX_DECIDED:
            snap.decided.clear()
        snap.decided[key] = decision
    return decision


def choose(
    session: Session | None,
    req: ResourceRequest,
    weights: Weights = Weights(),
    *,
    capacity_left_mflops: int | None = None,
    exclude: Collection[str] = (),
    max_hold_units: int | None = None,
    snap: Snapshot | None = None,
) -> RoutingDecision:
    """Pick the best partition for ``req``; ``exclude`` clusters (re-routing); ``snap``:
    the clusters as read once for several decisions (default: read them now)."""
    if snap is None:
        assert session is not None
        snap = snapshot(session)
    rows = snap.rows
    if req.cluster is not None and req.cluster not in {c.name for c, _ in rows}:
        raise InvalidInput("cluster", f"unknown cluster {req.cluster!r}")
    if req.partition is not None and req.partition not in {
        p.name for c, p in rows if req.cluster in (None, c.name)
    }:
        raise InvalidInput("partition", f"unknown partition {req.partition!r}")
    in_reach = [
        p for c, p in rows if req.cluster in (None, c.name) and req.partition in (None, p.name)
    ]
    _check_allowed_anywhere(req, in_reach)
    rates = snap.rates
    candidates: list[Candidate] = []
    waiting: list[Candidate] = []  # fit, but their cluster does not answer right now
    rejected: list[dict[str, str]] = []
    for cluster, part in rows:
        if req.cluster not in (None, cluster.name) or req.partition not in (None, part.name):
            continue
        rate = rates[part.id]
        why = _unavailable(req, cluster, part, rate, capacity_left_mflops, exclude, max_hold_units)
        if why is not None:
            rejected.append({"cluster": cluster.name, "partition": part.name, "reason": why})
            continue
        gpu_rate = snap.gpu_rates.get(part.id)
        speed = gpu_rate * req.gpus_per_node if gpu_rate and req.gpus_per_node else None
        found = score(
            req.nodes,
            req.time_limit_minutes,
            rate,
            part.price_per_pfh,
            _load(cluster, part),
            weights,
            speed,
        )
        candidate = Candidate(cluster, part, rate, found, gpu_rate_mflops=gpu_rate)
        if cluster.status is ClusterStatus.DOWN:
            reason = f"cluster not answering: {cluster.last_error[:200]}"
            rejected.append({"cluster": cluster.name, "partition": part.name, "reason": reason})
            waiting.append(candidate)
        else:
            candidates.append(candidate)
    queued = not candidates and bool(waiting)
    if queued:
        # Nothing that answers can run it: accept it for a cluster that will, once it is
        # back (the worker retries with back-off), rather than refuse during an outage.
        candidates = waiting
        rejected = [r for r in rejected if "not answering" not in r["reason"]]
    candidates = _keep_gpus_for_gpu_jobs(req, candidates, rejected, weights)
    if not candidates:
        field_ = refused_field(req, [r["reason"] for r in rejected])
        reasons = "; ".join(f"{r['cluster']}/{r['partition']}: {r['reason']}" for r in rejected)
        raise InvalidInput(field_, f"no cluster can run this job ({reasons or 'none configured'})")
    candidates.sort(key=lambda c: (c.score.total, c.cluster.name, c.partition.name))
    best = candidates[0]
    best.reasons = _explain(req, best, candidates[1:], weights)
    if queued:
        best.reasons.insert(
            0,
            f"no answering cluster can run it: queued for {best.cluster.name}, "
            "which is not answering now",
        )
    return RoutingDecision(best, [c.summary() for c in candidates[1:4]], rejected)


def _keep_gpus_for_gpu_jobs(
    req: ResourceRequest, candidates: list[Candidate], rejected: list[dict[str, str]], w: Weights
) -> list[Candidate]:
    """A CPU-only job's candidates without the GPU partitions, while any other remains."""
    if req.gpus_per_node or not w.cpu_jobs_off_gpu:
        return candidates
    cpu_only = [c for c in candidates if not c.partition.gpus_per_node]
    if not cpu_only or len(cpu_only) == len(candidates):
        return candidates
    for c in candidates:
        if c.partition.gpus_per_node:
            rejected.append(
                {
                    "cluster": c.cluster.name,
                    "partition": c.partition.name,
                    "reason": "GPU partition, kept for GPU jobs: the job asks no GPU and "
                    "another partition can run it",
                }
            )
    return cpu_only


#: The spec field each refusal of ``misfit`` and ``_unavailable`` is about, by how its
#: message starts: a refusal names the field that caused it, not always ``nodes``.
_REFUSAL_FIELDS: list[tuple[str, str]] = [
    (r"needs \d+ nodes", "nodes"),
    (r"needs \d+ CPUs per node", "cpus_per_task"),
    (r"needs \d+ MB per node", "memory_mb"),
    (r"needs \d+ GPUs per node", "gpus_per_node"),
    (r"time limit ", "time_limit_minutes"),
    (r"lacks features", "constraints"),
    (r"array of ", "array"),
    (r"qos ", "qos"),
    (r"reservation ", "reservation"),
    (r"needs [\d.e+-]+ PFLOP/s", "nodes"),  # the capacity cap: fewer nodes would fit
    (r"its hold would exceed", "time_limit_minutes"),
    (r"\d+ of its \d+ node\(s\) in service", "nodes"),
]


def refused_field(req: ResourceRequest, reasons: list[str]) -> str:
    """The field to name when no partition can run ``req``: the one most refusals are
    about (the first such on a tie); else the cluster or partition it asked for."""
    found: list[str] = []
    for reason in reasons:
        for pattern, name in _REFUSAL_FIELDS:
            if re.match(pattern, reason):
                if name == "cpus_per_task" and not req.cpus_per_task:
                    name = "ntasks"
                found.append(name)
                break
    if found:
        return max(dict.fromkeys(found), key=found.count)
    return "partition" if req.partition else "cluster" if req.cluster else "nodes"


def hold_units(req: ResourceRequest, rate_mflops: int) -> int:
    """A job's hold: tasks × nodes × time limit × rate, rounded up to whole units (an
    upper bound; a plain job is one task)."""
    tasks, _ = _tasks(req)
    return work_units(rate_mflops, req.time_limit_minutes * 60, req.nodes * tasks, rounding=HOLD)


def _unavailable(
    req: ResourceRequest,
    cluster: Cluster,
    part: Partition,
    rate: int,
    capacity_left: int | None,
    exclude: Collection[str],
    max_hold: int | None,
) -> str | None:
    if cluster.name in exclude:
        return "excluded: the scheduler rejected the job there"
    why = misfit(req, part)
    if why is not None:
        return why
    _, width = _tasks(req)
    if capacity_left is not None and req.nodes * width * rate > capacity_left:
        return (
            f"needs {req.nodes * width * rate / 1e9:g} PFLOP/s, the enterprise's capacity cap "
            f"leaves {max(capacity_left, 0) / 1e9:g}"
        )
    if max_hold is not None and hold_units(req, rate) > max_hold:
        return "its hold would exceed the job's existing hold"
    serving = _load(cluster, part).in_service_nodes
    if serving is not None and serving < req.nodes and cluster.status is not ClusterStatus.DOWN:
        return (
            f"{serving} of its {part.nodes} node(s) in service (the others drained, "
            f"degraded or down); the job needs {req.nodes}"
        )
    return None


def _load(cluster: Cluster, part: Partition) -> Load:
    seen = (cluster.load or {}).get(part.name, {})
    return Load(
        total_nodes=int(seen.get("total_nodes", part.nodes)),
        idle_nodes=int(seen.get("idle_nodes", part.nodes)),
        pending_jobs=int(seen.get("pending_jobs", 0)),
        running_jobs=int(seen.get("running_jobs", 0)),
        in_service_nodes=(
            None if seen.get("in_service_nodes") is None else int(seen["in_service_nodes"])
        ),
    )


def _explain(
    req: ResourceRequest, best: Candidate, others: list[Candidate], w: Weights
) -> list[str]:
    reasons = []
    if req.cluster or req.partition:
        reasons.append("explicitly requested")
    reasons.append(f"fits: {req.nodes} node(s) within max {best.partition.max_nodes}")
    reasons.append(f"node rate {best.rate_mflops / 1e6:g} TFLOP/s")
    if req.gpus_per_node:
        if best.gpu_rate_mflops:
            reasons.append(
                f"GPU rate {best.gpu_rate_mflops / 1e6:g} TFLOP/s per GPU "
                f"({best.partition.gpu_precision}, measured), {req.gpus_per_node} per node"
            )
        else:
            reasons.append("GPU rate not measured yet: ranked by the node rate")
    if best.score.wait_s == 0:
        reasons.append("idle nodes available now")
    else:
        reasons.append(f"expected wait {best.score.wait_s:.0f} s")
    if best.partition.price_per_pfh:
        reasons.append(f"price {best.partition.price_per_pfh:g} per PFlop·h")
    if others:
        runner = others[0]
        reasons.append(
            f"score {best.score.total:.1f} beats {runner.cluster.name}/{runner.partition.name} "
            f"({runner.score.total:.1f}) with weights wait={w.wait:g} run={w.run:g} "
            f"price={w.price:g}"
        )
    return reasons
