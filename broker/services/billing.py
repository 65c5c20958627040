"""Performance-normalized billing: charge lines per node and month, credits, statements.

A job's charge is Σ over the nodes it ran on of the node's rate × elapsed seconds,
where the rate is the node's measured rate *in force when the job started* (a
``NodeRate`` version, whose validation run is the proof), else the partition's rated
value. Each node's seconds are split at month boundaries. A line's work, rate ×
seconds, is exact in MFLOP and rounded half-even to whole ledger units (GFLOP,
``units.work_units``); the job's charge is the sum of its lines, capped at its hold
(which was rounded up). The lines of a CHARGE entry add up to its amount exactly
(largest-remainder rounding when the hold capped it).

A job is charged once, at its end, for every run it had (``settle_runs``): a requeued
job runs again under the same id, and each run is priced on its own nodes from its
own start. Runs that the center's own failures ended (``CENTER_FAILURES``) are charged
as ``BROKER_CHARGE_CENTER_FAILURES`` says: not at all by default.

GPU nodes: a node's rate is its CPU rate plus its GPUs' measured rates at the partition's
billing precision (``NodeRate.cpu_mflops`` + Σ ``gpu_mflops``), and every line on a GPU
node names that precision, the GPUs' part of the rate and the GPUs charged. On an
exclusive partition (the default) a job is charged the whole node, GPUs and all. On a
``shared`` partition a job that takes part of a GPU node is charged its GPU share of the
node's whole rate (g of the node's G GPUs: rate × g / G, to the MFLOP/s, half-even); g is
what the scheduler allocated (``JobInfo.alloc_gpus`` spread over the run's nodes), else
what the job asked for; a CPU-only job there is charged the node's CPU rate.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import ChargeLine, Cluster, Job, JobStatus, LedgerEntry, Node, NodeRate, Partition
from ..units import CHARGE, work_units
from . import audit, ledger
from .principal import Principal


@dataclass(frozen=True)
class NodeShare:
    """What one node is charged at: the rate (a share of it on a shared GPU partition),
    the version and run that prove it, and for a GPU node its GPUs' part of the rate,
    their billing precision, and the GPUs charged out of the node's."""

    node: str
    rate_mflops: int
    rate_id: int | None
    run_id: int | None
    gpu_mflops: int | None = None
    precision: str | None = None
    gpus: int | None = None
    node_gpus: int | None = None


@dataclass(frozen=True)
class Line:
    period: str
    node: str
    node_seconds: int
    share: NodeShare

    @property
    def units(self) -> int:
        return work_units(self.share.rate_mflops, self.node_seconds, rounding=CHARGE)


def _partition(session: Session, job: Job) -> Partition | None:
    return session.scalar(
        select(Partition)
        .join(Cluster, Cluster.id == Partition.cluster_id)
        .where(Cluster.name == job.cluster, Partition.name == job.partition)
    )


def node_shares(
    session: Session, job: Job, at: datetime, nodes: Sequence[str] = (), alloc_gpus: int = 0
) -> list[NodeShare]:
    """The billing rate of each node the job ran on (``nodes``, default its node list),
    as in force at ``at``; ``alloc_gpus``: the GPUs the run was given, all nodes together
    (0: not known, the job's ``gpus_per_node`` is taken)."""
    part = _partition(session, job)
    rated = part.rated_mflops if part is not None else 0
    names = list(nodes) or list(job.node_list) or [f"unknown-{i + 1}" for i in range(job.nodes)]
    rows = {
        n.name: n
        for n in session.scalars(
            select(Node)
            .join(Cluster, Cluster.id == Node.cluster_id)
            .where(Cluster.name == job.cluster, Node.name.in_(names))
        )
    }
    per_node = alloc_gpus // len(names) if alloc_gpus else (job.gpus_per_node or 0)
    shares = []
    for name in names:
        node = rows.get(name)
        version = None
        if node is not None:
            version = session.scalar(
                select(NodeRate)
                .where(NodeRate.node_id == node.id, NodeRate.valid_from <= at)
                .order_by(NodeRate.valid_from.desc(), NodeRate.id.desc())
                .limit(1)
            )
        if version is not None:
            share = NodeShare(name, version.rate_mflops, version.id, version.run_id)
        else:
            share = NodeShare(name, rated, None, None)
        node_gpus = node.gpus if node is not None and node.gpus else 0
        if not node_gpus and part is not None:
            node_gpus = part.gpus_per_node
        shares.append(_gpu_share(share, version, part, node_gpus, per_node))
    return shares


def _scaled(rate: int, part: int, whole: int) -> int:
    """``rate × part / whole`` to the MFLOP/s, half-even (exact integers throughout)."""
    return round(Fraction(rate * part, whole))


def _gpu_share(
    share: NodeShare,
    version: NodeRate | None,
    part: Partition | None,
    node_gpus: int,
    gpus: int,
) -> NodeShare:
    """``share`` with its GPU terms: a GPU node names its precision, the GPUs' part of
    the rate and the GPUs charged; on a shared partition the rate is the job's share."""
    if not node_gpus and not gpus:
        return share
    precision = part.gpu_precision if part is not None else "fp64"
    gpu_part = sum(version.gpu_mflops or []) if version is not None else None
    whole = dataclasses.replace(
        share, gpu_mflops=gpu_part, precision=precision, gpus=node_gpus, node_gpus=node_gpus
    )
    if part is None or not part.shared or not node_gpus or gpus >= node_gpus:
        return whole
    if gpus <= 0:  # a CPU-only job on a shared GPU node: the node's CPU rate
        cpu = version.cpu_mflops if version is not None else None
        return dataclasses.replace(
            whole, rate_mflops=share.rate_mflops if cpu is None else cpu, gpu_mflops=0, gpus=0
        )
    return dataclasses.replace(
        whole,
        rate_mflops=_scaled(share.rate_mflops, gpus, node_gpus),
        gpu_mflops=None if gpu_part is None else _scaled(gpu_part, gpus, node_gpus),
        gpus=gpus,
    )


def month_seconds(start: datetime, elapsed_s: int) -> list[tuple[str, int]]:
    """Split ``elapsed_s`` seconds from ``start`` at month boundaries (sums exactly)."""
    cursor = start.astimezone(UTC)
    end = cursor + timedelta(seconds=elapsed_s)
    if (end.year, end.month) == (cursor.year, cursor.month):  # the common case: no split
        return [(f"{cursor.year}-{cursor.month:02d}", elapsed_s)]
    out: list[tuple[str, int]] = []
    left = elapsed_s
    while left > 0:
        nxt = datetime(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1, tzinfo=UTC)
        part = min(left, math.ceil((nxt - cursor).total_seconds()))
        out.append((f"{cursor.year}-{cursor.month:02d}", part))
        left -= part
        cursor = nxt
    return out or [(f"{start.year}-{start.month:02d}", 0)]


def price(
    session: Session,
    job: Job,
    start: datetime,
    elapsed_s: int,
    nodes: Sequence[str] = (),
    alloc_gpus: int = 0,
) -> list[Line]:
    shares = node_shares(session, job, start, nodes, alloc_gpus)
    return [
        Line(period, share.node, seconds, share)
        for share in shares
        for period, seconds in month_seconds(start, elapsed_s)
    ]


def apportion(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to ``weights`` that add up to ``total`` exactly."""
    whole = sum(weights)
    if whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    rest = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[:rest]:
        shares[i] += 1
    return shares


def settle_job(session: Session, job: Job, start: datetime, elapsed_s: int, memo: str) -> bool:
    """Charge the job its lines (capped at its hold) exactly once; record the lines."""
    lines = price(session, job, start, elapsed_s)
    if not ledger.settle(session, job, sum(ln.units for ln in lines), memo=memo):
        return False
    entry = ledger.charge_entry(session, job.id)
    assert entry is not None
    session.flush()
    amounts = apportion(entry.amount_units, [ln.units for ln in lines])
    for ln, units in zip(lines, amounts, strict=True):
        session.add(_line(job, entry.id, ln.period, ln.node, ln.node_seconds, ln.share, units, ""))
    return True


#: How the center's own failures are charged (``BROKER_CHARGE_CENTER_FAILURES``).
CenterFailurePolicy = Literal["none", "full"]

#: Ends that are the center's failures, not the job's: a node failed under it, its nodes
#: failed to boot, or the scheduler preempted it for another job.
CENTER_FAILURES = frozenset({JobStatus.NODE_FAIL, JobStatus.BOOT_FAIL, JobStatus.PREEMPTED})


@dataclass(frozen=True)
class Run:
    """One run of a job: where and how long it held its nodes, and how it ended.

    ``ended`` is the job's state for its last run; for an earlier run of a requeued
    job, how that run ended (``node_fail``, ``preempted``, ``boot_fail``; ``pending``
    for a requeue that no failure caused: ``scontrol requeue``, ``RequeueExit``).
    """

    start: datetime
    elapsed_s: int
    nodes: tuple[str, ...]
    ended: JobStatus
    gpus: int = 0  # GPUs the run was allocated, all nodes together (0: not known)

    def charged(self, policy: CenterFailurePolicy) -> bool:
        return policy == "full" or self.ended not in CENTER_FAILURES

    def describe(self) -> str:
        return f"{len(self.nodes) or '?'} node(s) x {self.elapsed_s} s"


def settle_runs(
    session: Session, job: Job, runs: Sequence[Run], policy: CenterFailurePolicy
) -> bool:
    """Charge a job once, at its end, for what ran; exactly once (False if already).

    What ran is every run of the job, each priced on its own nodes at the rates in
    force when it started: a requeued job used its nodes in each run it had, and the
    runs that accounting records (``sacct --duplicates``) are what the center gave it.
    Only the runs ended by the center's own failures (``CENTER_FAILURES``) are charged
    by the policy: with ``"none"`` (the default) they cost nothing, whether they ended
    the job or made Slurm requeue it, since the job lost that work through no fault of
    its own. A run ended by a requeue that no failure caused (``scontrol requeue`` by
    an administrator or by the job's own user, ``RequeueExit``) is charged: nothing
    tells a requeue an administrator asked for from one the job asked for itself, and
    a job must not be able to run for free by requeueing itself (an administrator can
    give such a charge back with a credit). The total is capped at the job's hold, as
    every charge is: a job requeued many times never costs more than it was promised.
    Lines of the same node, month and rate from several runs are one line.
    """
    return settle_tasks(session, job, {0: runs}, policy) is not None


def settle_tasks(
    session: Session,
    job: Job,
    runs_by_task: Mapping[int, Sequence[Run]],
    policy: CenterFailurePolicy,
) -> dict[int, int] | None:
    """``settle_runs`` for a job array: each task's runs priced alike, one CHARGE entry
    for the array, and each task's share of it (None if the job was already settled).

    The shares are the entry's amount apportioned by the tasks' own work (largest
    remainder): they add up to the job's charge exactly, whatever the rounding of the
    merged lines or the cap at the hold.
    """
    merged: dict[tuple[str, str, NodeShare], int] = {}
    weights: dict[int, int] = {}
    all_runs: list[Run] = []
    all_charged: list[Run] = []
    for task, runs in runs_by_task.items():
        charged = [r for r in runs if r.charged(policy)]
        all_runs += runs
        all_charged += charged
        work = 0
        for run in charged:
            for ln in price(session, job, run.start, run.elapsed_s, run.nodes, run.gpus):
                key = (ln.period, ln.node, ln.share)
                merged[key] = merged.get(key, 0) + ln.node_seconds
                work += ln.share.rate_mflops * ln.node_seconds
        weights[task] = work
    lines = [
        Line(period, node, seconds, share) for (period, node, share), seconds in merged.items()
    ]
    memo = _runs_memo(all_runs, all_charged)
    if len(runs_by_task) > 1:
        memo = f"{len(runs_by_task)} tasks, {len(all_runs)} run(s)"
    if not ledger.settle(session, job, sum(ln.units for ln in lines), memo=memo):
        return None
    entry = ledger.charge_entry(session, job.id)
    assert entry is not None
    session.flush()
    amounts = apportion(entry.amount_units, [ln.units for ln in lines])
    for ln, units in zip(lines, amounts, strict=True):
        session.add(_line(job, entry.id, ln.period, ln.node, ln.node_seconds, ln.share, units, ""))
    tasks = list(weights)
    shares = apportion(entry.amount_units, [weights[t] for t in tasks])
    return dict(zip(tasks, shares, strict=True))


def _runs_memo(runs: Sequence[Run], charged: Sequence[Run]) -> str:
    """``1 node(s) x 8 s``; for several runs or one not charged, each run and why."""
    if len(runs) == 1 and len(charged) == 1:
        return runs[0].describe()
    parts = []
    for i, run in enumerate(runs, 1):
        how = "requeued" if run.ended is JobStatus.PENDING else run.ended.value
        text = f"run {i} ({how}): {run.describe()}"
        if run not in charged:
            text += ", not charged: the center's failure"
        parts.append(text)
    return "; ".join(parts)[:500]


def _line(
    job: Job,
    entry_id: int,
    period: str,
    node: str,
    seconds: int,
    share: NodeShare,
    units: int,
    memo: str,
) -> ChargeLine:
    return ChargeLine(
        entry_id=entry_id,
        enterprise_id=job.enterprise_id,
        project_id=job.project_id,
        job_id=job.id,
        period=period,
        cluster=job.cluster,
        partition=job.partition,
        node=node,
        node_seconds=seconds,
        rate_mflops=share.rate_mflops,
        rate_id=share.rate_id,
        run_id=share.run_id,
        units=units,
        memo=memo,
        gpu_mflops=share.gpu_mflops,
        precision=share.precision,
        gpus=share.gpus,
        node_gpus=share.node_gpus,
    )


@dataclass(frozen=True)
class NodeCredit:
    """What a node's credit gives (or, as a preview, would give) one job."""

    job_id: uuid.UUID
    enterprise_id: uuid.UUID
    units: int
    lines: tuple[tuple[ChargeLine, int], ...]  # (the line corrected, units credited)


def node_credits(
    session: Session, cluster: str, node: str, since: datetime | None
) -> list[NodeCredit]:
    """The credits a degraded ``node`` earns its jobs that ended at or after ``since``
    (``None``: all of them, for an administrator's deliberate credit; validation always
    passes the node's last passing run).

    One query (``ix_charge_line_node``) reads the node's lines, charges and earlier
    credits alike; a job whose lines for the node still net above zero (and whose
    charge is not yet credited back) is credited that net, apportioned over its
    charged lines. Nothing is written: ``credit_node`` books them, and ``nodes validate
    --dry-run`` shows them.
    """
    query = (
        select(ChargeLine)
        .join(Job, Job.id == ChargeLine.job_id)
        .where(ChargeLine.cluster == cluster, ChargeLine.node == node)
        .order_by(ChargeLine.job_id, ChargeLine.id)
    )
    if since is not None:
        query = query.where(Job.ended_at >= since)
    by_job: dict[uuid.UUID, list[ChargeLine]] = {}
    for ln in session.scalars(query):
        by_job.setdefault(ln.job_id, []).append(ln)
    nets = {job_id: sum(ln.units for ln in lines) for job_id, lines in by_job.items()}
    owed = [job_id for job_id, net in nets.items() if net > 0]
    # In bulk: a node can have served thousands of jobs since its last pass.
    left = ledger.creditable_many(session, owed)
    out: list[NodeCredit] = []
    for job_id in owed:
        units = min(nets[job_id], left.get(job_id, 0))
        if units <= 0:
            continue
        lines = [ln for ln in by_job[job_id] if ln.units > 0]
        amounts = apportion(units, [ln.units for ln in lines])
        owner = lines[0].enterprise_id
        out.append(NodeCredit(job_id, owner, units, tuple(zip(lines, amounts, strict=True))))
    return out


def credit_node(
    session: Session,
    principal: Principal,
    cluster: str,
    node: str,
    since: datetime | None,
    reason: str,
    now: datetime | None = None,
) -> list[tuple[uuid.UUID, int]]:
    """Credit every job charged for ``node`` that ended at or after ``since``.

    Each credit is a reversing ADJUST of the job's CHARGE, booked now: its lines belong
    to the current month, each naming the line it corrects (``corrects_id``), so the
    statement of a month already closed never changes.
    """
    month = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")
    credited: list[tuple[uuid.UUID, int]] = []
    for found in node_credits(session, cluster, node, since):
        job = session.get(Job, found.job_id)
        assert job is not None
        entry = ledger.credit(
            session, principal, job, found.units, f"node {node} degraded: {reason}"
        )
        if entry is None:
            continue
        session.flush()
        for ln, units in found.lines:
            if units == 0:
                continue
            share = NodeShare(
                ln.node,
                ln.rate_mflops,
                ln.rate_id,
                ln.run_id,
                ln.gpu_mflops,
                ln.precision,
                ln.gpus,
                ln.node_gpus,
            )
            line = _line(
                job,
                entry.id,
                month,
                ln.node,
                ln.node_seconds,
                share,
                -units,
                f"credit: node {node} degraded (corrects line {ln.id} of {ln.period})",
            )
            line.corrects_id = ln.id
            session.add(line)
        credited.append((found.job_id, -entry.amount_units))
        audit.record(
            session,
            principal,
            "job.credit",
            "job",
            found.job_id,
            enterprise_id=job.enterprise_id,
            node=node,
            units=-entry.amount_units,
            since=None if since is None else since.isoformat(),
        )
    return credited


def ledger_charged(session: Session, enterprise_id: uuid.UUID) -> int:
    """Net charged units in the ledger (CHARGE entries less their crediting ADJUSTs)."""
    high, low = session.execute(
        select(*ledger.sum_units(LedgerEntry.amount_units)).where(
            LedgerEntry.enterprise_id == enterprise_id,
            (LedgerEntry.kind == "CHARGE")
            | ((LedgerEntry.kind == "ADJUST") & LedgerEntry.reverses_id.is_not(None)),
        )
    ).one()
    return ledger.joined_units(high, low)
