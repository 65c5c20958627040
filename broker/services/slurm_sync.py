"""Accounting sync: Slurm accounts, users and limits that mirror the broker's ledger.

Each enterprise is a Slurm account (its ``slurm_account``) with the enterprise's POSIX
user, and each of its projects a child account that jobs are charged to. Limits are
pushed in Slurm's billing unit, which the partitions' ``TRESBillingWeights`` make equal
to 1 GFLOP/s of node rate: the enterprise's budget as ``GrpTRESMins=billing=`` and its
capacity cap as ``GrpTRES=billing=``; a project's allocation on its account. Slurm then
enforces the same budget as the broker, a second guard behind the ledger's holds.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..config import ClusterConfig
from ..models import (
    Balance,
    Cluster,
    Enterprise,
    EnterpriseStatus,
    Node,
    Partition,
    Project,
    ProjectStatus,
)
from ..units import UNITS_PER_PFH

# One billing minute is 1 GFLOP/s for 60 s = 60 GFLOP (ledger units).
UNITS_PER_BILLING_MINUTE = UNITS_PER_PFH // 60_000_000
# One billing unit of capacity is 1 GFLOP/s = 1,000 MFLOP/s.
MFLOPS_PER_BILLING = 1_000


def project_account(enterprise: Enterprise, project: Project) -> str:
    """The Slurm account of a project: ``<enterprise account>-<project slug>``."""
    slug = re.sub(r"[^a-z0-9]+", "_", project.name.lower()).strip("_") or "p"
    return f"{enterprise.slurm_account}-{slug}"[:60]


@dataclass
class ClusterSync:
    """What sync did (or, in a dry run, would do) on one cluster."""

    cluster: str
    actions: list[str] = field(default_factory=list)
    applied: bool = False
    error: str = ""
    skipped: str = ""


def desired(
    session: Session, cluster: str, service: tuple[str, str] | None = None
) -> list[sa_.AccountSpec]:
    """The accounts the ledger wants on ``cluster`` (plus the broker's own, if given)."""
    specs: list[sa_.AccountSpec] = []
    if service is not None:  # validation jobs: the broker's account and user, no limits
        specs.append(
            sa_.AccountSpec(
                cluster=cluster,
                account=service[0],
                users=(service[1],),
                description="broker node validation",
            )
        )
    ents = session.scalars(
        select(Enterprise)
        .where(Enterprise.status == EnterpriseStatus.ACTIVE)
        .order_by(Enterprise.name)
    )
    for ent in ents:
        bal = session.scalar(
            select(Balance).where(Balance.enterprise_id == ent.id, Balance.project_id.is_(None))
        )
        granted = bal.granted_units if bal is not None else 0
        cap = ent.capacity_cap_mflops
        specs.append(
            sa_.AccountSpec(
                cluster=cluster,
                account=ent.slurm_account,
                users=(ent.posix_user,),
                billing_minutes=granted // UNITS_PER_BILLING_MINUTE,
                billing_capacity=None if cap is None else cap // MFLOPS_PER_BILLING,
                description=ent.name[:60],
            )
        )
        projects = session.scalars(
            select(Project)
            .where(Project.enterprise_id == ent.id, Project.status == ProjectStatus.ACTIVE)
            .order_by(Project.name)
        )
        for proj in projects:
            alloc = proj.allocation_units
            specs.append(
                sa_.AccountSpec(
                    cluster=cluster,
                    account=project_account(ent, proj),
                    users=(ent.posix_user,),
                    parent=ent.slurm_account,
                    billing_minutes=None if alloc is None else alloc // UNITS_PER_BILLING_MINUTE,
                    description=proj.name[:60],
                )
            )
    return specs


def partition_weights(session: Session, cluster: str) -> dict[str, str]:
    """``TRESBillingWeights`` per partition so that a whole node bills its rate in GFLOP/s.

    Slurm weighs per partition, not per node: the weight follows the median measured
    rate of the partition's nodes (the rated value where none is measured yet).
    """
    out = {}
    parts = session.scalars(
        select(Partition)
        .join(Cluster, Cluster.id == Partition.cluster_id)
        .where(Cluster.name == cluster)
    )
    for part in parts:
        measured = [
            n.rate_mflops
            for n in session.scalars(select(Node).where(Node.cluster_id == part.cluster_id))
            if n.rate_mflops and part.name in (n.partitions or [])
        ]
        rate = statistics.median(measured) if measured else part.rated_mflops
        out[part.name] = sa_.billing_weights(Decimal(int(rate)) / 1_000_000, part.cpus_per_node)
    return out


def sync(
    session: Session,
    configs: Sequence[ClusterConfig],
    *,
    dry_run: bool,
    only: str | None = None,
    service: tuple[str, str] | None = None,
    weights: bool = True,
) -> list[ClusterSync]:
    """Bring every Slurm cluster's accounts, limits and billing weights in line with the ledger."""
    results = []
    for cfg in configs:
        if only is not None and cfg.name != only:
            continue
        result = ClusterSync(cfg.name)
        accounting = sa_.create_accounting(cfg.adapter, cfg.name, cfg.options)
        if accounting is None:
            result.skipped = f"{cfg.adapter} cluster has no Slurm accounting (no slurm_conf)"
            results.append(result)
            continue
        try:
            # The specs name the Slurm cluster (options' slurm_cluster, else the name).
            actions = accounting.plan(desired(session, accounting.cluster, service))
            if weights:
                actions += accounting.plan_weights(partition_weights(session, cfg.name))
            if not dry_run:
                accounting.apply(actions)
            result.actions = [a.summary for a in actions]
            result.applied = not dry_run
        except sa_.SchedulerError as exc:
            result.error = str(exc)
        results.append(result)
    return results


def billing_minutes_to_pfh(minutes: int) -> float:
    return minutes * UNITS_PER_BILLING_MINUTE / UNITS_PER_PFH
