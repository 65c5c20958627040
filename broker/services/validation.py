"""Node validation: run our kernels on each node, judge them, set rates, drain the slow.

A campaign submits `python -m kernels validate --json` pinned to each node (exclusive,
through the cluster's adapter, under the broker-owned validation account). The worker
ingests each result, judges it against the partition's references with ReFrame
semantics (``[value, lower, upper]``, bounds relative to value, ``upper`` optional) and
against the node's own FMA probe, then either sets a new node rate (median GEMM of the
recent passing runs) or marks the node degraded, drains it in the scheduler and
credits the jobs it ran since its last passing run (none if it never passed: nothing
then tells which jobs it served badly). A degraded node returns to service through a
passing run (a campaign resumes it in the scheduler behind its queued validation job,
and drains it again if that run fails too), or by an administrator's forced resume
with a stated reason, audited.

Quick runs (``kernels validate --quick`` in ``BROKER_VALIDATION_ARGS`` or the partition's
``validation_args``) measure small problems, far from a node's full speed: they are judged
against the partition's ``quick_references``; where it has none, a failing quick run is
recorded but cannot degrade, drain or credit the node.

GPU nodes (the scheduler lists GPUs on the node, or the partition has them) run the
kernels with ``--gpu`` and get the GPUs in their allocation; the partition's
``validation_environment`` is added (the CUDA simulator on fake-GPU nodes). Each GPU the
node has must report, and is judged on its own against ``gpu_references`` (or
``gpu_quick_references``): a GPU missing from the report, or one that falls short, fails
the run, and the node is degraded and drained naming that GPU. A passing run sets the
node's rate to its CPU rate plus each GPU's (median of recent passing runs, per GPU) at
the partition's billing precision: DGEMM for ``fp64``, SGEMM for ``fp32``.
"""

from __future__ import annotations

import json
import logging
import shlex
import statistics
import sys
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..config import Settings
from ..errors import Conflict, InvalidInput, NotFound
from ..models import (
    Cluster,
    Node,
    NodeRate,
    Partition,
    RunState,
    Validation,
    ValidationRun,
)
from ..schemas.kernels import KernelsReport
from . import audit, billing, clusters, reconcile, safefs, scheduling
from . import gpus as gpus_
from .principal import SYSTEM, Principal
from .references import against

log = logging.getLogger(__name__)

#: Reference name -> (kernel, result field) in the kernels' JSON.
METRICS = {
    "gemm_gflops": ("gemm", "gflops_median"),
    "fft_gflops": ("fft", "gflops_median"),
    "stream_gbs": ("stream", "gbs_median"),
    "peak_gflops": ("peak", "gflops_median"),
}


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)


def judge(
    report: KernelsReport, references: dict[str, list[float]], min_gemm_peak: float
) -> Verdict:
    """Pass/fail of one node's report, with every reason it fell short."""
    metrics: dict[str, float | None] = {}
    for key, (kernel, attr) in METRICS.items():
        res = report.result(kernel)
        metrics[key] = None if res is None else getattr(res, attr)
    reasons = [
        f"{r.kernel}: residual {r.residual:.3g} over its threshold"
        for r in report.results
        if not r.residual_ok
    ]
    for key, ref in sorted(references.items()):
        if key in METRICS:
            reasons += against(key, metrics.get(key), ref)
    gemm, peak = metrics.get("gemm_gflops"), metrics.get("peak_gflops")
    if gemm is None:
        reasons.append("gemm: not measured")
    elif peak and gemm / peak < min_gemm_peak:
        reasons.append(
            f"gemm {gemm:.3g} GFLOP/s is {gemm / peak:.0%} of the node's own FMA "
            f"probe ({peak:.3g}); at least {min_gemm_peak:.0%} expected"
        )
    return Verdict(not reasons, reasons, metrics)


def is_quick(settings: Settings, partition: Partition | None = None) -> bool:
    """Whether validation runs (on ``partition``) use the kernels' quick sizes."""
    return "--quick" in _args(settings, partition, gpus=0)


def _args(settings: Settings, partition: Partition | None, gpus: int) -> list[str]:
    args = shlex.split(settings.validation_args)
    if partition is not None:
        args += shlex.split(partition.validation_args)
    if gpus and "--gpu" not in args:
        args.append("--gpu")
    return args


def _script(settings: Settings, partition: Partition | None = None, gpus: int = 0) -> str:
    python = settings.validation_python or sys.executable
    args = _args(settings, partition, gpus)
    cmd = " ".join(shlex.quote(a) for a in [python, "-m", "kernels", "validate", "--json", *args])
    return f"#!/bin/bash\nexec {cmd}\n"


def start_campaign(
    session: Session,
    pool: clusters.AdapterPool,
    settings: Settings,
    principal: Principal,
    cluster_name: str,
    *,
    partition: str | None = None,
    node: str | None = None,
) -> list[ValidationRun]:
    """Submit one validation job per selected node; returns the runs."""
    principal.require_staff()
    cluster = clusters.get_cluster(session, cluster_name)
    nodes = [
        n
        for n in clusters.list_nodes(session, cluster_name)
        if (node is None or n.name == node)
        and (partition is None or partition in (n.partitions or []))
    ]
    if not nodes:
        raise NotFound(f"no node on {cluster_name} matches (refresh the cluster first?)")
    rows = {p.name: p for p in clusters.partitions_of(session, cluster)}
    parts = list(rows)
    adapter = pool.get(cluster_name)
    campaign = str(uuid.uuid4())
    root = Path(cluster.scratch_dir) / "_validation"
    cache = root / "numba-cache"
    cache.mkdir(parents=True, exist_ok=True)
    scheduling.give_to(root, settings.validation_user)
    scheduling.give_to(cache, settings.validation_user)
    runs = []
    for n in nodes:
        part = partition or next((p for p in n.partitions if p in parts), parts[0])
        work = root / campaign / n.name
        work.mkdir(parents=True)
        for p in (work.parent, work):
            scheduling.give_to(p, settings.validation_user)
        prow = rows.get(part)
        gpus = gpus_.node_gpus(n, prow)
        run = ValidationRun(
            node_id=n.id,
            cluster=cluster_name,
            partition=part,
            campaign=campaign,
            work_dir=str(work),
            quick=is_quick(settings, prow),
        )
        environment = dict(prow.validation_environment or {}) if prow is not None else {}
        spec = sa_.JobSpec(
            name=f"validate-{n.name}",
            script=_script(settings, prow, gpus),
            time_limit_minutes=settings.validation_time_limit_minutes,
            nodes=1,
            partition=part,
            account=settings.validation_account,
            user=settings.validation_user,
            tag=f"{reconcile.VALIDATION_TAG}{campaign}:{n.name}",
            working_dir=str(work),
            stdout_path=str(work / "result.json"),
            stderr_path=str(work / "stderr.txt"),
            nodelist=(n.name,),
            exclusive=True,
            gpus_per_node=gpus or None,  # every GPU of the node (CUDA_VISIBLE_DEVICES)
            environment={**environment, "NUMBA_CACHE_DIR": str(cache)},
        )
        try:
            run.scheduler_job_id = adapter.submit(spec)
            if n.validation is Validation.DEGRADED:
                # We drained it: let the pinned validation job (already queued) run on it.
                # A scheduler reservation for the validation account would also keep
                # tenants off meanwhile; the job is first in line for the node.
                adapter.resume(n.name)
        except sa_.SchedulerError as exc:
            run.state, run.reasons, run.finished_at = RunState.ERROR, [str(exc)], run.created_at
        session.add(run)
        runs.append(run)
    session.flush()
    audit.record(
        session,
        principal,
        "nodes.validate",
        "cluster",
        cluster_name,
        campaign=campaign,
        nodes=[n.name for n in nodes],
    )
    return runs


def awaited(session: Session) -> dict[str, list[str]]:
    """The scheduler ids of the validation jobs not judged yet, by cluster (the worker
    asks for them in the same status call as the cluster's jobs)."""
    rows = session.execute(
        select(ValidationRun.cluster, ValidationRun.scheduler_job_id).where(
            ValidationRun.state == RunState.SUBMITTED,
            ValidationRun.scheduler_job_id.is_not(None),
        )
    )
    found: dict[str, list[str]] = defaultdict(list)
    for cluster, job_id in rows:
        if job_id:
            found[cluster].append(job_id)
    return dict(found)


def judge_ended(
    session: Session,
    pool: clusters.AdapterPool,
    settings: Settings,
    cluster: str,
    infos: Mapping[str, sa_.JobInfo],
    now: datetime,
) -> list[ValidationRun]:
    """Ingest the cluster's submitted runs whose job ``infos`` shows ended; returns the
    runs judged now."""
    runs = session.scalars(
        select(ValidationRun).where(
            ValidationRun.cluster == cluster,
            ValidationRun.state == RunState.SUBMITTED,
            ValidationRun.scheduler_job_id.in_(sorted(infos)),
        )
    )
    done = []
    for run in runs:
        info = infos.get(run.scheduler_job_id or "")
        if info is not None and info.state.terminal:
            ingest(session, pool, settings, run, info, now)
            done.append(run)
    return done


def poll_runs(
    session: Session, pool: clusters.AdapterPool, settings: Settings, now: datetime
) -> list[ValidationRun]:
    """Ask each cluster for its validation jobs and judge those that ended (brokerctl;
    the worker asks along with the cluster's jobs: ``awaited``, ``judge_ended``)."""
    done = []
    for cluster, ids in awaited(session).items():
        try:
            infos = pool.get(cluster).status(ids)
        except sa_.SchedulerError as exc:
            log.warning("validation poll of %s failed: %s", cluster, exc)
            continue
        done += judge_ended(session, pool, settings, cluster, infos, now)
    return done


def ingest(
    session: Session,
    pool: clusters.AdapterPool,
    settings: Settings,
    run: ValidationRun,
    info: sa_.JobInfo,
    now: datetime,
) -> None:
    run.finished_at = now
    node = session.get(Node, run.node_id)
    assert node is not None
    try:
        # The run's directory is the validation user's: read it like any job's (no link
        # followed, regular files only, bounded).
        raw = json.loads(safefs.read_small(run.work_dir, "result.json", _MAX_RESULT_BYTES))
        report = KernelsReport.model_validate(raw)
    except (OSError, ValueError, ValidationError, safefs.UnsafeFile) as exc:
        stderr = _tail(run.work_dir, "stderr.txt")
        run.state = RunState.ERROR
        run.reasons = [
            f"no usable result (job {info.native_state or info.state.value}, "
            f"exit {info.exit_code}): {str(exc)[:200]}",
            stderr,
        ]
        return
    part = session.scalar(
        select(Partition)
        .join(Cluster, Cluster.id == Partition.cluster_id)
        .where(Cluster.name == run.cluster, Partition.name == run.partition)
    )
    refs: dict[str, list[float]] = {}
    gpu_refs: dict[str, list[float]] = {}
    if part is not None:
        refs = dict(part.quick_references if run.quick else part.references)
        gpu_refs = dict(part.gpu_quick_references if run.quick else part.gpu_references)
    verdict = judge(report, refs, settings.validation_min_gemm_peak_ratio)
    gpus = gpus_.judge(report.gpus, gpus_.node_gpus(node, part), gpu_refs)
    gpu_reasons = [why for g in gpus for why in g.reasons]
    run.result, run.reasons = raw, [*gpu_reasons, *verdict.reasons]
    run.gemm_gflops, run.fft_gflops = verdict.metrics["gemm_gflops"], verdict.metrics["fft_gflops"]
    run.stream_gbs, run.peak_gflops = verdict.metrics["stream_gbs"], verdict.metrics["peak_gflops"]
    session.flush()
    gpus_.record(session, node, run, gpus)
    if verdict.passed and not gpu_reasons:
        run.state = RunState.PASSED
        session.flush()
        precision = part.gpu_precision if part is not None else "fp64"
        _set_rate(session, node, run, settings.validation_rate_samples, now, precision, len(gpus))
        if node.validation is Validation.DEGRADED:  # a passing run returns it to service
            node.state, node.reason = "idle", ""
            node.validation = Validation.VALIDATED
            clusters.note_node_change(session, node)
            audit.record(
                session,
                SYSTEM,
                "node.resume",
                "node",
                node.name,
                cluster=run.cluster,
                run=run.id,
                why="passing validation run",
            )
        node.validation = Validation.VALIDATED
    else:
        run.state = RunState.FAILED
        session.flush()
        # A GPU missing from the report is missing at any size: that degrades the node
        # even in a quick run without references.
        missing = any(g.report is None for g in gpus)
        if run.quick and not refs and not gpu_refs and not missing:
            run.reasons = [
                *run.reasons,
                "quick run and the partition has no quick_references: the node is not "
                "degraded (run a full validation to judge it)",
            ]
            return
        _degrade(session, pool, node, run, now)


def _set_rate(
    session: Session,
    node: Node,
    run: ValidationRun,
    samples: int,
    now: datetime,
    precision: str = "fp64",
    gpus: int = 0,
) -> None:
    recent = list(
        session.scalars(
            select(ValidationRun.gemm_gflops)
            .where(
                ValidationRun.node_id == node.id,
                ValidationRun.state == RunState.PASSED,
                ValidationRun.gemm_gflops.is_not(None),
            )
            .order_by(ValidationRun.id.desc())
            .limit(samples)
        )
    )
    cpu = round(statistics.median(g for g in recent if g is not None) * 1000)
    gpu = gpus_.rates(session, node, gpus, precision, samples)
    session.add(
        NodeRate(
            node_id=node.id,
            rate_mflops=cpu + sum(gpu),
            run_id=run.id,
            samples=len(recent),
            # At the scheduler's resolution (whole seconds, as a job's start time is): a
            # job that started on the node in the second this run was judged, after the
            # run's job left it, is billed at this rate, not the one before.
            valid_from=now.replace(microsecond=0),
            cpu_mflops=cpu,
            gpu_mflops=gpu,
            precision=precision if gpus else None,
        )
    )
    node.rate_mflops, node.gpu_mflops = cpu + sum(gpu), gpu


def _degrade(
    session: Session, pool: clusters.AdapterPool, node: Node, run: ValidationRun, now: datetime
) -> None:
    reason = "validation failed: " + "; ".join(run.reasons)
    node.validation, node.reason = Validation.DEGRADED, reason[:500]
    try:
        pool.get(run.cluster).drain(node.name, reason[:200])
        node.state = "drain"
    except sa_.SchedulerError as exc:
        log.error("could not drain %s/%s: %s", run.cluster, node.name, exc)
    clusters.note_node_change(session, node)
    last_pass = last_passing_run(session, node, before=run.id)
    if last_pass is not None:
        billing.credit_node(
            session, SYSTEM, run.cluster, node.name, last_pass, "; ".join(run.reasons), now
        )
    else:
        log.warning("%s/%s never passed before: no job credited", run.cluster, node.name)
    audit.record(
        session,
        SYSTEM,
        "node.degrade",
        "node",
        node.name,
        cluster=run.cluster,
        run=run.id,
        reasons=run.reasons,
        credited_since=None if last_pass is None else last_pass.isoformat(),
    )


def last_passing_run(session: Session, node: Node, before: int | None = None) -> datetime | None:
    """When the node's last passing validation run (before run ``before``) finished."""
    query = select(ValidationRun.finished_at).where(
        ValidationRun.node_id == node.id, ValidationRun.state == RunState.PASSED
    )
    if before is not None:
        query = query.where(ValidationRun.id < before)
    return session.scalar(query.order_by(ValidationRun.id.desc()).limit(1))


@dataclass(frozen=True)
class CreditPreview:
    """What a failing validation of ``node`` would credit, as of now."""

    node: str
    since: datetime | None  # its last passing run; None: never passed, nothing credited
    jobs: int
    units: int
    enterprises: int


def failure_credits(session: Session, cluster: str, node: Node) -> CreditPreview:
    """The credits ``node``'s failure would give now (``nodes validate --dry-run``)."""
    since = last_passing_run(session, node)
    if since is None:
        return CreditPreview(node.name, None, 0, 0, 0)
    found = billing.node_credits(session, cluster, node.name, since)
    return CreditPreview(
        node.name,
        since,
        len(found),
        sum(c.units for c in found),
        len({c.enterprise_id for c in found}),
    )


_MAX_RESULT_BYTES = 4 << 20


def _tail(work_dir: str, name: str, limit: int = 500) -> str:
    try:
        return safefs.read_tail(work_dir, name, limit * 4).decode(errors="replace")[-limit:]
    except (OSError, safefs.UnsafeFile) as exc:
        return f"{name}: {exc}"


def drain_node(
    session: Session,
    pool: clusters.AdapterPool,
    principal: Principal,
    cluster: str,
    name: str,
    reason: str,
) -> Node:
    principal.require_staff()
    node = _node(session, cluster, name)
    pool.get(cluster).drain(name, reason)
    node.state, node.reason = "drain", reason[:500]
    audit.record(session, principal, "node.drain", "node", name, cluster=cluster, reason=reason)
    clusters.note_node_change(session, node)
    return node


def resume_node(
    session: Session,
    pool: clusters.AdapterPool,
    principal: Principal,
    cluster: str,
    name: str,
    *,
    force: bool = False,
    reason: str = "",
) -> Node:
    """Return a node to service. A degraded one resumes after a passing validation run,
    or now with ``force`` and a stated ``reason`` (audited, with what the failed run
    said); it is then unvalidated until its next run."""
    principal.require_staff()
    node = _node(session, cluster, name)
    degraded = node.validation is Validation.DEGRADED
    if degraded and not force:
        raise Conflict(
            f"node {name} is degraded: it resumes after a passing validation run, or "
            "with force and a stated reason (brokerctl nodes resume --force --reason)"
        )
    if force and not reason.strip():
        raise InvalidInput("reason", "a forced resume needs a reason")
    was = node.reason
    pool.get(cluster).resume(name)
    node.state, node.reason = "idle", ""
    if degraded:
        node.validation = Validation.UNVALIDATED
    audit.record(
        session,
        principal,
        "node.resume",
        "node",
        name,
        cluster=cluster,
        forced=force,
        reason=reason,
        was_degraded=degraded,
        was=was,
    )
    clusters.note_node_change(session, node)
    return node


def find_node(session: Session, cluster: str, name: str) -> Node:
    """The node ``name`` of ``cluster`` (NotFound naming both)."""
    return _node(session, cluster, name)


def _node(session: Session, cluster: str, name: str) -> Node:
    row = session.scalar(
        select(Node)
        .join(Cluster, Cluster.id == Node.cluster_id)
        .where(Cluster.name == cluster, Node.name == name)
    )
    if row is None:
        raise NotFound(f"node {name!r} not found on {cluster!r}")
    return row


def node_name(session: Session, run: ValidationRun) -> str:
    node = session.get(Node, run.node_id)
    return node.name if node is not None else "?"


def history(session: Session, cluster: str, name: str, limit: int = 50) -> list[ValidationRun]:
    node = _node(session, cluster, name)
    return list(
        session.scalars(
            select(ValidationRun)
            .where(ValidationRun.node_id == node.id)
            .order_by(ValidationRun.id.desc())
            .limit(limit)
        )
    )
