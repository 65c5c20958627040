"""Accounting sync: Slurm accounts, users and limits that mirror the broker's ledger.

Each enterprise is a Slurm account (its ``slurm_account``) with the enterprise's POSIX
user, and each of its projects a child account that jobs are charged to. Limits are
pushed in Slurm's billing unit, which the partitions' ``TRESBillingWeights`` make equal
to 1 GFLOP/s of node rate, so Slurm is a second line of defence behind the ledger:

- ``GrpTRESMins=billing=`` is what Slurm may still count this budget period: the usage
  Slurm already counted plus what the ledger has left (available and held) for the
  enterprise, or the project's allocation for the period less what it charged. At the
  first push of a period the accounts' usage is reset (``RawUsage=0``), so Slurm counts
  the period's usage only, as the ledger does. (Slurm's usage decays unless
  ``PriorityDecayHalfLife=0``: decay only ever loosens this guard; PRODUCTION.md.)
- ``GrpTRES=billing=`` is the capacity cap.
- A suspended enterprise's account and a closed project's are blocked
  (``GrpSubmitJobs=0``: ``sbatch`` under them is refused), and unblocked on reactivation.

``push_enterprise`` does this for one enterprise on every Slurm cluster at once, when
a project is approved or closed, the enterprise suspended or reactivated, or its budget
changes, and records each cluster's outcome (``slurm_status``) on the enterprise and its
projects: a missing POSIX user shows there, not at the first submission. ``sync`` does
it for all. Billing weights are never set with ``scontrol update`` (lost at the next
restart): ``sync`` reports the ``TRESBillingWeights`` each partition needs in slurm.conf.
"""

from __future__ import annotations

import pwd
import re
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
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
from . import ledger, names

# One billing minute is 1 GFLOP/s for 60 s = 60 GFLOP (ledger units).
UNITS_PER_BILLING_MINUTE = UNITS_PER_PFH // 60_000_000
# One billing unit of capacity is 1 GFLOP/s = 1,000 MFLOP/s.
MFLOPS_PER_BILLING = 1_000


def project_account(enterprise: Enterprise, project: Project) -> str:
    """The Slurm account of a project: ``<enterprise account>-<project slug>``.

    A name in another script is transliterated ("量子化学" -> ``liang_zi_hua_xue``):
    reduced to nothing, two such projects would share one account, and closing one
    would block the other. ASCII names keep the slug they always had.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", project.name.lower()).strip("_")
    if not project.name.isascii():
        slug = names.slug(project.name, 40, "p")
    return f"{enterprise.slurm_account}-{slug or 'p'}"[:60]


@dataclass
class ClusterSync:
    """What sync did (or, in a dry run, would do) on one cluster."""

    cluster: str
    actions: list[str] = field(default_factory=list)
    applied: bool = False
    error: str = ""
    skipped: str = ""
    # What only an administrator can do where it lasts (slurm.conf), e.g. billing weights.
    advice: list[str] = field(default_factory=list)


def desired(
    session: Session,
    cluster: str,
    service: tuple[str, str] | None = None,
    enterprise_id: uuid.UUID | None = None,
    status_key: str | None = None,
) -> list[sa_.AccountSpec]:
    """The accounts the ledger wants on ``cluster`` (plus the broker's own, if given).

    ``billing_minutes`` here is what the ledger has left this period; ``_plan`` adds
    the usage Slurm already counted. Enterprises active or suspended (blocked); their
    active projects, and closed ones that once had an account (blocked).
    """
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
    query = select(Enterprise).order_by(Enterprise.name)
    if enterprise_id is not None:
        query = query.where(Enterprise.id == enterprise_id)
    for ent in session.scalars(query):
        bal = session.scalar(
            select(Balance).where(Balance.enterprise_id == ent.id, Balance.project_id.is_(None))
        )
        left = 0 if bal is None else bal.granted_units - bal.charged_units  # available + held
        cap = ent.capacity_cap_mflops
        pushed = (ent.slurm_status or {}).get(status_key or cluster, {})
        reset = pushed.get("period") != ent.current_period  # a new period: reset usage
        specs.append(
            sa_.AccountSpec(
                cluster=cluster,
                account=ent.slurm_account,
                users=(ent.posix_user,),
                billing_minutes=max(left, 0) // UNITS_PER_BILLING_MINUTE,
                billing_capacity=None if cap is None else cap // MFLOPS_PER_BILLING,
                description=ent.name[:60],
                blocked=ent.status is not EnterpriseStatus.ACTIVE,
                reset_usage=reset,
            )
        )
        projects = session.scalars(
            select(Project)
            .where(
                Project.enterprise_id == ent.id,
                (Project.status == ProjectStatus.ACTIVE)
                | ((Project.status == ProjectStatus.CLOSED) & Project.approved_at.is_not(None)),
            )
            .order_by(Project.name)
        )
        for proj in projects:
            minutes = None
            if proj.allocation_units is not None:
                view = ledger.project_balance(session, proj)
                minutes = max(view.granted_units - view.charged_units, 0)
                minutes //= UNITS_PER_BILLING_MINUTE
            specs.append(
                sa_.AccountSpec(
                    cluster=cluster,
                    account=project_account(ent, proj),
                    users=(ent.posix_user,),
                    parent=ent.slurm_account,
                    billing_minutes=minutes,
                    description=proj.name[:60],
                    blocked=proj.status is ProjectStatus.CLOSED,
                    reset_usage=reset,
                )
            )
    return specs


def _with_usage(
    accounting: sa_.SlurmAccounting, specs: list[sa_.AccountSpec]
) -> list[sa_.AccountSpec]:
    """Each budget limit raised by the usage Slurm already counted (none after a reset)."""
    limited = [s.account for s in specs if s.billing_minutes is not None and not s.reset_usage]
    used = accounting.usages_billing_minutes(limited) if limited else {}
    return [
        replace(s, billing_minutes=s.billing_minutes + used.get(s.account, 0))
        if s.billing_minutes is not None and not s.reset_usage
        else s
        for s in specs
    ]


def partition_weights(session: Session, cluster: str) -> dict[str, str]:
    """``TRESBillingWeights`` per partition so that a whole node bills its rate in GFLOP/s.

    Slurm weighs per partition, not per node: the weight follows the median measured
    rate of the partition's nodes (the rated value where none is measured yet). On a GPU
    partition whose GPUs are measured, each GPU bills the median measured GPU rate
    (``GRES/gpu=``) and the CPUs the rest, so a job holding part of a shared node bills
    its part; until then the CPUs carry the whole node's rate (a whole node bills the
    same either way).
    """
    out = {}
    parts = session.scalars(
        select(Partition)
        .join(Cluster, Cluster.id == Partition.cluster_id)
        .where(Cluster.name == cluster)
    )
    for part in parts:
        nodes = [
            n
            for n in session.scalars(select(Node).where(Node.cluster_id == part.cluster_id))
            if part.name in (n.partitions or [])
        ]
        measured = [n.rate_mflops for n in nodes if n.rate_mflops]
        rate = int(statistics.median(measured) if measured else part.rated_mflops)
        gpu_rates = [g for n in nodes if n.rate_mflops for g in (n.gpu_mflops or []) if g]
        gpu = int(statistics.median(gpu_rates)) if part.gpus_per_node and gpu_rates else 0
        if gpu * part.gpus_per_node > rate:
            gpu = 0  # GPUs measured beside an older node rate: no split until both agree
        out[part.name] = sa_.billing_weights(
            Decimal(rate) / 1_000_000,
            part.cpus_per_node,
            part.gpus_per_node if gpu else 0,
            Decimal(gpu) / 1_000_000,
        )
    return out


def sync(
    session: Session,
    configs: Sequence[ClusterConfig],
    *,
    dry_run: bool,
    only: str | None = None,
    service: tuple[str, str] | None = None,
    weights: bool = True,
    enterprise_id: uuid.UUID | None = None,
) -> list[ClusterSync]:
    """Bring every Slurm cluster's accounts and limits in line with the ledger (only
    ``enterprise_id``'s, if given); report billing weights that slurm.conf must change.

    The database is read first, the clusters are changed, then each cluster's outcome
    is recorded (unless ``dry_run``) on the enterprises and projects concerned
    (``slurm_status``).
    """
    jobs: list[tuple[ClusterConfig, sa_.SlurmAccounting, list[sa_.AccountSpec], dict[str, str]]]
    jobs, results = [], {}
    for cfg in configs:
        if only is not None and cfg.name != only:
            continue
        result = results[cfg.name] = ClusterSync(cfg.name)
        accounting = sa_.create_accounting(cfg.adapter, cfg.name, cfg.options)
        if accounting is None:
            result.skipped = f"{cfg.adapter} cluster has no Slurm accounting (no slurm_conf)"
            continue
        # The specs name the Slurm cluster (options' slurm_cluster, else the name).
        specs = desired(session, accounting.cluster, service, enterprise_id, cfg.name)
        wanted = partition_weights(session, cfg.name) if weights else {}
        jobs.append((cfg, accounting, specs, wanted))
    # One at a time: clusters often share one slurmdbd, and concurrent `sacctmgr add
    # account` of one name for two clusters there left one cluster without it (seen).
    for cfg, accounting, specs, wanted in jobs:
        _sync_cluster(accounting, specs, wanted, results[cfg.name], dry_run)
    for cfg, accounting, specs, _ in jobs:
        if not dry_run:
            _record(session, cfg, accounting.cluster, specs, results[cfg.name], enterprise_id)
    return list(results.values())


def _sync_cluster(
    accounting: sa_.SlurmAccounting,
    specs: list[sa_.AccountSpec],
    weights: dict[str, str],
    result: ClusterSync,
    dry_run: bool,
) -> None:
    """Plan and (unless ``dry_run``) apply one cluster's changes; no database here."""
    try:
        actions = accounting.plan(_with_usage(accounting, specs))
        if weights:
            result.advice = [
                f"{a.summary}: put it on the partition's line in slurm.conf, then "
                "`scontrol reconfigure` (PRODUCTION.md, Billing weights)"
                for a in accounting.plan_weights(weights)
            ]
        if not dry_run:
            accounting.apply(actions)
        result.actions = [a.summary for a in actions]
        result.applied = not dry_run
    except sa_.SchedulerError as exc:
        result.error = str(exc)


def push_enterprise(
    session: Session, configs: Sequence[ClusterConfig], enterprise_id: uuid.UUID
) -> list[ClusterSync]:
    """Create or update one enterprise's accounts, users and limits on every Slurm
    cluster now (approval, closing, suspension, reactivation, budget changes)."""
    return sync(session, configs, dry_run=False, weights=False, enterprise_id=enterprise_id)


#: A push that failed is retried by ``push_due`` after this long, not at every pass.
RETRY_S = 300.0


def push_due(
    session: Session, configs: Sequence[ClusterConfig], now: datetime | None = None
) -> list[ClusterSync]:
    """Push the enterprises whose Slurm accounts were last pushed in an earlier budget
    period (the worker calls it after rolling periods): their usage is reset and their
    limits set for the new period without waiting for a grant or an approval. A
    cluster that failed is tried again ``RETRY_S`` after the failure."""
    now = now or datetime.now(UTC)
    results: list[ClusterSync] = []
    for ent in session.scalars(select(Enterprise).order_by(Enterprise.name)):
        pushed = [v for v in (ent.slurm_status or {}).values() if isinstance(v, dict)]
        if any(v.get("period") != ent.current_period and _retry_now(v, now) for v in pushed):
            results += push_enterprise(session, configs, ent.id)
    return results


def _retry_now(entry: dict[str, str], now: datetime) -> bool:
    """Not before the ``retry_after`` a failed push left (none: at once)."""
    try:
        return now >= datetime.fromisoformat(entry.get("retry_after") or "")
    except ValueError:
        return True


def _record(
    session: Session,
    cfg: ClusterConfig,
    slurm_cluster: str,
    specs: Sequence[sa_.AccountSpec],
    result: ClusterSync,
    enterprise_id: uuid.UUID | None,
) -> None:
    """Note the cluster's outcome on each enterprise and project the push concerned."""
    now = datetime.now(UTC)
    at = now.isoformat(timespec="seconds")
    accounts = {s.account for s in specs}
    query = select(Enterprise)
    if enterprise_id is not None:
        query = query.where(Enterprise.id == enterprise_id)
    for ent in session.scalars(query):
        if ent.slurm_account not in accounts:
            continue
        status, detail = ("error", result.error) if result.error else ("ok", "")
        missing = _missing_user(cfg, ent.posix_user)
        if missing and not result.error:
            status, detail = "error", missing
        entry = {"status": status, "detail": detail, "at": at, "slurm_cluster": slurm_cluster}
        previous = (ent.slurm_status or {}).get(cfg.name, {})
        entry["period"] = previous.get("period", "") if result.error else ent.current_period
        if result.error:  # push_due tries again after RETRY_S
            entry["retry_after"] = (now + timedelta(seconds=RETRY_S)).isoformat()
        ent.slurm_status = {**(ent.slurm_status or {}), cfg.name: entry}
        for proj in session.scalars(select(Project).where(Project.enterprise_id == ent.id)):
            if project_account(ent, proj) in accounts:
                proj.slurm_status = {**(proj.slurm_status or {}), cfg.name: entry}


def _missing_user(cfg: ClusterConfig, user: str) -> str:
    """Why jobs would fail on ``cfg`` for want of the POSIX user here, or ""."""
    if cfg.adapter != "slurm-cli":  # slurmrestd/pyslurm: the cluster knows its users
        return ""
    try:
        pwd.getpwnam(user)
    except KeyError:
        return (
            f"POSIX user {user!r} does not exist on the broker host; {cfg.name} runs "
            "sbatch as that user, so its jobs would be rejected: create it (useradd)"
        )
    return ""


def billing_minutes_to_pfh(minutes: int) -> float:
    return minutes * UNITS_PER_BILLING_MINUTE / UNITS_PER_PFH
