"""Center-wide figures and cluster health: totals, jobs by state, nodes, load over time."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from ...models import (
    LIVE_STATES,
    Balance,
    Cluster,
    Enterprise,
    Job,
    JobStatus,
    Node,
    Partition,
    Project,
    ProjectStatus,
    Validation,
)
from ...units import MFLOP_PER_UNIT
from ..ledger import BalanceView, joined_units, sum_units
from ._sql import day_bucket


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    name: str
    adapter: str
    status: str
    version: str
    last_seen_at: datetime | None
    last_error: str
    nodes: int
    drained: int
    degraded: int
    live_jobs: int
    load: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PendingProject:
    id: uuid.UUID
    name: str
    description: str
    enterprise_id: uuid.UUID
    enterprise: str
    created_at: datetime


def center_totals(session: Session) -> BalanceView:
    """Σ over enterprises' balances: each fits 64 bits, the center's sum need not."""
    row = session.execute(
        select(
            *sum_units(Balance.granted_units),
            *sum_units(Balance.held_units),
            *sum_units(Balance.charged_units),
        ).where(Balance.project_id.is_(None))
    ).one()
    return BalanceView(
        joined_units(row[0], row[1]), joined_units(row[2], row[3]), joined_units(row[4], row[5])
    )


def jobs_by_state(session: Session) -> dict[JobStatus, int]:
    counts = dict.fromkeys(JobStatus, 0)
    for state, n in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        counts[state] = int(n)
    return counts


def cluster_summaries(session: Session) -> list[ClusterSummary]:
    nodes: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0, 0, 0])
    drained = func.lower(Node.state).like("%drain%")
    for cid, total, n_drained, n_degraded in session.execute(
        select(
            Node.cluster_id,
            func.count(),
            func.sum(case((drained, 1), else_=0)),
            func.sum(case((Node.validation == Validation.DEGRADED, 1), else_=0)),
        ).group_by(Node.cluster_id)
    ):
        nodes[cid] = [int(total), int(n_drained or 0), int(n_degraded or 0)]
    live = {
        name: int(n)
        for name, n in session.execute(
            select(Job.cluster, func.count())
            .where(Job.state.in_(LIVE_STATES | {JobStatus.ACCEPTED}))
            .group_by(Job.cluster)
        )
    }
    rows = session.scalars(select(Cluster).where(Cluster.enabled).order_by(Cluster.name))
    return [
        ClusterSummary(
            name=c.name,
            adapter=c.adapter,
            status=c.status.value,
            version=c.version,
            last_seen_at=c.last_seen_at,
            last_error=c.last_error,
            nodes=nodes[c.id][0],
            drained=nodes[c.id][1],
            degraded=nodes[c.id][2],
            live_jobs=int(live.get(c.name, 0)),
            load=dict(c.load or {}),
        )
        for c in rows
    ]


def pending_projects(session: Session, limit: int = 200) -> list[PendingProject]:
    rows = session.execute(
        select(Project, Enterprise.name)
        .join(Enterprise, Enterprise.id == Project.enterprise_id)
        .where(Project.status == ProjectStatus.DRAFT)
        .order_by(Project.created_at, Project.id)
        .limit(limit)
    )
    return [
        PendingProject(p.id, p.name, p.description, p.enterprise_id, ent, p.created_at)
        for p, ent in rows
    ]


def pending_count(session: Session) -> int:
    query = select(func.count()).where(Project.status == ProjectStatus.DRAFT)
    return int(session.scalar(query) or 0)


def nodes_of(session: Session, cluster: Cluster) -> list[tuple[Node, int]]:
    """The cluster's nodes, each with its billing rate (measured, else the partition's)."""
    parts = {
        p.name: p.rated_mflops
        for p in session.scalars(select(Partition).where(Partition.cluster_id == cluster.id))
    }
    fallback = max(parts.values(), default=0)
    nodes = session.scalars(select(Node).where(Node.cluster_id == cluster.id).order_by(Node.name))
    return [
        (n, n.rate_mflops or next((parts[p] for p in n.partitions if p in parts), fallback))
        for n in nodes
    ]


def busy_nodes(
    session: Session, cluster: str, since: datetime, until: datetime, buckets: int
) -> list[tuple[datetime, float]]:
    """Mean nodes busy with broker jobs in each of ``buckets`` slices of [since, until)."""
    width = (until - since) / buckets
    busy = [0.0] * buckets
    rows = session.execute(
        select(Job.nodes, Job.started_at, Job.ended_at).where(
            Job.cluster == cluster,
            Job.started_at.is_not(None),
            Job.started_at < until,
            or_(Job.ended_at.is_(None), Job.ended_at > since),
        )
    )
    for nodes, started, ended in rows:
        lo, hi = max(started or since, since), min(ended or until, until)
        first = int((lo - since) / width)
        for i in range(first, buckets):
            b0 = since + width * i
            b1 = b0 + width
            if b0 >= hi:
                break
            busy[i] += nodes * (min(hi, b1) - max(lo, b0)) / width
    return [(since + width * i, busy[i]) for i in range(buckets)]


def billed_rate_by_day(session: Session, cluster: str, since: datetime) -> list[tuple[str, float]]:
    """Per day, the mean rate (MFLOP/s per node) that settled jobs were charged at."""
    day = day_bucket(session, Job.ended_at)
    rows = session.execute(
        select(day, *sum_units(Job.charge_units), func.sum(Job.elapsed_s * Job.nodes))
        .where(
            Job.cluster == cluster,
            Job.ended_at >= since,
            Job.charge_units > 0,
            Job.elapsed_s > 0,
        )
        .group_by(day)
        .order_by(day)
    )
    # Units are GFLOP: per node-second that is GFLOP/s, times 1000 for MFLOP/s.
    return [
        (str(d), joined_units(high, low) * MFLOP_PER_UNIT / int(ns))
        for d, high, low, ns in rows
        if ns
    ]
