"""Clusters: the configured ones mirrored in the database, their adapters, their health."""

from __future__ import annotations

import logging
import statistics
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from .. import observability
from ..config import ClusterConfig
from ..errors import NotFound
from ..models import Cluster, ClusterStatus, Job, JobStatus, Node, Partition, Validation
from ..units import tflops_to_mflops

log = logging.getLogger(__name__)


class AdapterPool:
    """One adapter per configured cluster, created on first use, shared by threads."""

    def __init__(self, clusters: Sequence[ClusterConfig]) -> None:
        self.configs = {c.name: c for c in clusters}
        self._adapters: dict[str, sa_.SchedulerAdapter] = {}
        self._lock = threading.Lock()

    def get(self, cluster: str) -> sa_.SchedulerAdapter:
        with self._lock:
            adapter = self._adapters.get(cluster)
            if adapter is None:
                cfg = self.configs.get(cluster)
                if cfg is None:
                    raise NotFound(f"cluster {cluster!r} is not configured")
                adapter = sa_.create_adapter(cfg.adapter, cfg.name, cfg.options)
                adapter = observability.InstrumentedAdapter(adapter)  # metrics per cluster
                self._adapters[cluster] = adapter
            return adapter

    def close(self) -> None:
        with self._lock:
            for adapter in self._adapters.values():
                adapter.close()
            self._adapters.clear()


def sync_config(session: Session, clusters: Sequence[ClusterConfig]) -> None:
    """Upsert configured clusters and partitions; clusters no longer configured are disabled."""
    existing = {c.name: c for c in session.scalars(select(Cluster))}
    for cfg in clusters:
        row = existing.pop(cfg.name, None)
        if row is None:
            row = Cluster(name=cfg.name, adapter=cfg.adapter, scratch_dir=str(cfg.scratch_dir))
            session.add(row)
            session.flush()
        row.adapter, row.scratch_dir, row.options = cfg.adapter, str(cfg.scratch_dir), cfg.options
        row.enabled = True
        parts = {
            p.name: p
            for p in session.scalars(select(Partition).where(Partition.cluster_id == row.id))
        }
        for pc in cfg.partitions:
            part = parts.pop(pc.name, None) or Partition(cluster_id=row.id, name=pc.name)
            part.nodes, part.cpus_per_node = pc.nodes, pc.cpus_per_node
            part.memory_mb_per_node, part.gpus_per_node = pc.memory_mb_per_node, pc.gpus_per_node
            part.max_nodes = pc.max_nodes or pc.nodes
            part.max_time_minutes = pc.max_time_minutes
            part.rated_mflops = tflops_to_mflops(pc.rate_tflops)
            part.price_per_pfh, part.features = pc.price_per_pfh, list(pc.features)
            part.references = dict(pc.references)
            part.quick_references = dict(pc.quick_references)
            part.allowed_qos = list(pc.allowed_qos)
            part.allowed_reservations = list(pc.allowed_reservations)
            part.max_array_tasks = pc.max_array_tasks
            part.gpu_precision, part.shared = pc.gpu_precision, pc.shared
            part.gpu_references = dict(pc.gpu_references)
            part.gpu_quick_references = dict(pc.gpu_quick_references)
            part.validation_args = pc.validation_args
            part.validation_environment = dict(pc.validation_environment)
            session.add(part)
        for stale in parts.values():
            session.delete(stale)
    for gone in existing.values():
        gone.enabled = False


@dataclass(frozen=True)
class Probe:
    """What one ping of a cluster found: its info and nodes, or the error."""

    info: sa_.ClusterInfo | None
    nodes: list[sa_.NodeInfo]
    error: str = ""


def probe(pool: AdapterPool, cluster: str) -> Probe:
    """Ask the scheduler (outside any transaction: it may take seconds)."""
    adapter = pool.get(cluster)
    try:
        return Probe(adapter.ping(), adapter.nodes())
    except sa_.SchedulerError as exc:
        return Probe(None, [], str(exc)[:1000])


def record_probe(session: Session, cluster: Cluster, found: Probe) -> None:
    """Mark the cluster up (with its load and nodes) or down (with the error)."""
    now = datetime.now(UTC)
    if found.info is None:
        if cluster.status is not ClusterStatus.DOWN:
            log.warning("cluster %s is down: %s", cluster.name, found.error)
        cluster.status, cluster.last_error = ClusterStatus.DOWN, found.error
        return
    info = found.info
    if cluster.status is ClusterStatus.DOWN:
        # Back from an outage: the jobs that backed off retry now, not at their next slot.
        log.warning("cluster %s answers again", cluster.name)
        session.execute(
            update(Job)
            .where(Job.cluster == cluster.name, Job.state == JobStatus.ACCEPTED)
            .values(next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
    cluster.status, cluster.version, cluster.last_seen_at = ClusterStatus.UP, info.version, now
    cluster.last_error = ""
    cluster.load = {
        p.name: {
            "total_nodes": p.total_nodes,
            "idle_nodes": p.idle_nodes,
            "pending_jobs": p.pending_jobs,
            "running_jobs": p.running_jobs,
        }
        for p in info.partitions
    }
    known = {n.name: n for n in session.scalars(select(Node).where(Node.cluster_id == cluster.id))}
    for ni in found.nodes:
        node = known.get(ni.name) or Node(cluster_id=cluster.id, name=ni.name)
        node.cpus, node.memory_mb, node.gpus = ni.cpus, ni.memory_mb, ni.gpus
        node.gpu_type = ni.gpu_type
        node.partitions, node.state, node.reason = list(ni.partitions), ni.state, ni.reason or ""
        node.updated_at = now
        session.add(node)
        known[ni.name] = node
    _record_service(cluster, list(known.values()))


#: Node state words (Slurm's, lower case, ``+``-joined) of a node that takes no new job.
OUT_OF_SERVICE = frozenset(
    {
        "drain",
        "draining",
        "drained",
        "down",
        "fail",
        "failing",
        "not_responding",
        "maint",
        "powered_down",
        "powering_down",
        "future",
        "planned",
    }
)


def in_service(node: Node) -> bool:
    """Whether the node can take new jobs: not drained, down or degraded by validation."""
    words = set(node.state.lower().rstrip("*~#!%$@^-").split("+"))
    return node.validation is not Validation.DEGRADED and not words & OUT_OF_SERVICE


def _record_service(cluster: Cluster, nodes: Sequence[Node]) -> None:
    """Per partition, the nodes in service (idle ones capped by them) in the cached load,
    and the cluster ``degraded`` when it answers but has no node in service.

    Routing reads this load: drained, degraded and down nodes are not idle capacity,
    whatever the scheduler counts as idle.
    """
    if not nodes or cluster.status is ClusterStatus.DOWN:
        return
    load = {name: dict(seen) for name, seen in (cluster.load or {}).items()}
    for name, seen in load.items():
        members = [n for n in nodes if name in (n.partitions or [])]
        serving = sum(1 for n in members if in_service(n))
        seen["in_service_nodes"] = serving
        seen["idle_nodes"] = min(int(seen.get("idle_nodes", serving)), serving)
    cluster.load = load
    any_serving = any(in_service(n) for n in nodes)
    cluster.status = ClusterStatus.UP if any_serving else ClusterStatus.DEGRADED


def note_node_change(session: Session, node: Node) -> None:
    """After the broker drained, resumed or degraded ``node``: the cluster's cached load
    and status follow now, not at the next probe."""
    cluster = session.get(Cluster, node.cluster_id)
    if cluster is not None:
        nodes = list(session.scalars(select(Node).where(Node.cluster_id == cluster.id)))
        _record_service(cluster, nodes)


def list_clusters(session: Session) -> list[Cluster]:
    return list(session.scalars(select(Cluster).where(Cluster.enabled).order_by(Cluster.name)))


def get_cluster(session: Session, name: str) -> Cluster:
    row = session.scalar(select(Cluster).where(Cluster.name == name))
    if row is None:
        raise NotFound(f"cluster {name!r} not found")
    return row


def partitions_of(session: Session, cluster: Cluster) -> list[Partition]:
    return list(
        session.scalars(
            select(Partition).where(Partition.cluster_id == cluster.id).order_by(Partition.name)
        )
    )


def list_nodes(session: Session, cluster_name: str) -> list[Node]:
    cluster = get_cluster(session, cluster_name)
    return list(
        session.scalars(select(Node).where(Node.cluster_id == cluster.id).order_by(Node.name))
    )


def node_rate_mflops(node: Node | None, partition: Partition) -> int:
    """Billing rate of a node: its measured rate, else the partition's rated value."""
    if node is not None and node.rate_mflops:
        return node.rate_mflops
    return partition.rated_mflops


def max_rates_mflops(session: Session, partitions: Sequence[Partition]) -> dict[uuid.UUID, int]:
    """The highest rate any node of each partition may be billed at (for holds), by id.

    One query for all of them: routing reads every candidate partition per submission.
    """
    rates = {p.id: p.rated_mflops for p in partitions}
    by_cluster: dict[uuid.UUID, list[Partition]] = {}
    for p in partitions:
        by_cluster.setdefault(p.cluster_id, []).append(p)
    if not by_cluster:
        return rates
    nodes = session.execute(
        select(Node.cluster_id, Node.partitions, Node.rate_mflops).where(
            Node.cluster_id.in_(list(by_cluster)), Node.rate_mflops.is_not(None)
        )
    )
    for cluster_id, names, rate in nodes:
        for p in by_cluster[cluster_id]:
            if rate and p.name in names:
                rates[p.id] = max(rates[p.id], rate)
    return rates


def gpu_rates_mflops(session: Session, partitions: Sequence[Partition]) -> dict[uuid.UUID, int]:
    """Each GPU partition's measured rate of one GPU (the median over its nodes' measured
    GPUs, at the partition's billing precision), by id; partitions with none measured
    are left out. One query for all of them."""
    by_cluster: dict[uuid.UUID, list[Partition]] = {}
    for p in partitions:
        if p.gpus_per_node:
            by_cluster.setdefault(p.cluster_id, []).append(p)
    if not by_cluster:
        return {}
    found: dict[uuid.UUID, list[int]] = {}
    nodes = session.execute(
        select(Node.cluster_id, Node.partitions, Node.gpu_mflops).where(
            Node.cluster_id.in_(list(by_cluster)), Node.rate_mflops.is_not(None)
        )
    )
    for cluster_id, names, gpus in nodes:
        for p in by_cluster[cluster_id]:
            if p.name in (names or []):
                found.setdefault(p.id, []).extend(g for g in gpus or [] if g)
    return {pid: int(statistics.median(rates)) for pid, rates in found.items() if rates}


def refresh(session: Session, pool: AdapterPool, cluster: Cluster) -> None:
    """Probe and record in one go (for the CLI; the worker probes outside transactions)."""
    record_probe(session, cluster, probe(pool, cluster.name))
