"""Shape ORM rows into response models (ledger units become PFlop·h here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from ..models import (
    ApiToken,
    AuditEvent,
    Cluster,
    Enterprise,
    GpuResult,
    Job,
    JobIO,
    JobTask,
    LedgerEntry,
    Node,
    NodeRate,
    Partition,
    Project,
)
from ..schemas.clusters import ClusterRead, NodeGpuRead, NodeRateRead, NodeRead, PartitionRead
from ..schemas.jobs import Dependency, JobDetail, JobRead, TaskRead
from ..schemas.ledger import AuditEventRead, BalanceRead, LedgerEntryRead, ProjectBalanceRead
from ..schemas.me import EnterpriseRef, MeRead, ProjectRef
from ..schemas.tenants import EnterpriseRead, ProjectRead, TokenRead
from ..services.ledger import BalanceView
from ..services.tokens import WhoAmI
from ..units import mflops_to_tflops, units_to_pfh


def enterprise(e: Enterprise) -> EnterpriseRead:
    cap = e.capacity_cap_mflops
    return EnterpriseRead(
        id=e.id,
        name=e.name,
        posix_user=e.posix_user,
        slurm_account=e.slurm_account,
        status=e.status.value,
        period=e.period_kind.value,
        carry_over=e.carry_over,
        current_period=e.current_period,
        created_at=e.created_at,
        capacity_cap_pflops=None if cap is None else cap / 1e9,
        slurm=dict(e.slurm_status or {}),
    )


def token(t: ApiToken) -> TokenRead:
    return TokenRead(
        id=t.id,
        name=t.name,
        role=t.role.value,
        enterprise_id=t.enterprise_id,
        prefix=t.prefix,
        created_at=t.created_at,
        revoked_at=t.revoked_at,
        expires_at=t.expires_at,
    )


def project(p: Project) -> ProjectRead:
    alloc = p.allocation_units
    return ProjectRead(
        id=p.id,
        enterprise_id=p.enterprise_id,
        name=p.name,
        description=p.description,
        status=p.status.value,
        allocation_pfh=None if alloc is None else units_to_pfh(alloc),
        created_at=p.created_at,
        approved_at=p.approved_at,
        closed_at=p.closed_at,
        slurm=dict(p.slurm_status or {}),
    )


def balance(enterprise_id: uuid.UUID, b: BalanceView) -> BalanceRead:
    return BalanceRead(
        enterprise_id=enterprise_id,
        granted_pfh=units_to_pfh(b.granted_units),
        held_pfh=units_to_pfh(b.held_units),
        charged_pfh=units_to_pfh(b.charged_units),
        available_pfh=units_to_pfh(b.available_units),
    )


def project_balance(p: Project, b: BalanceView) -> ProjectBalanceRead:
    alloc = p.allocation_units
    return ProjectBalanceRead(
        project_id=p.id,
        allocation_pfh=None if alloc is None else units_to_pfh(alloc),
        held_pfh=units_to_pfh(b.held_units),
        charged_pfh=units_to_pfh(b.charged_units),
        remaining_pfh=None if alloc is None else units_to_pfh(b.available_units),
    )


def audit_event(a: AuditEvent) -> AuditEventRead:
    return AuditEventRead.model_validate(a)


def entry(e: LedgerEntry) -> LedgerEntryRead:
    return LedgerEntryRead(
        id=e.id,
        kind=e.kind.value,
        amount_pfh=units_to_pfh(e.amount_units),
        project_id=e.project_id,
        job_id=e.job_id,
        reverses_id=e.reverses_id,
        period=e.period,
        memo=e.memo,
        actor=e.actor,
        created_at=e.created_at,
    )


def job(j: Job) -> JobRead:
    return JobRead(
        id=j.id,
        project_id=j.project_id,
        enterprise_id=j.enterprise_id,
        name=j.name,
        state=j.state.value,
        reason=j.reason,
        native_state=j.native_state or "",
        cluster=j.cluster,
        partition=j.partition,
        scheduler_job_id=j.scheduler_job_id,
        exit_code=j.exit_code,
        nodes=j.nodes,
        ntasks=j.ntasks,
        cpus_per_task=j.cpus_per_task,
        memory_mb=j.memory_mb,
        gpus_per_node=j.gpus_per_node,
        time_limit_minutes=j.time_limit_minutes,
        node_list=list(j.node_list or []),
        elapsed_s=j.elapsed_s,
        hold_pfh=units_to_pfh(j.hold_units),
        charge_pfh=None if j.charge_units is None else units_to_pfh(j.charge_units),
        routing=j.routing or {},
        warnings=list(j.warnings or []),
        created_at=j.created_at,
        submitted_at=j.submitted_at,
        started_at=j.started_at,
        ended_at=j.ended_at,
        settled_at=j.settled_at,
        environment=dict(j.environment or {}),
        working_directory=j.working_directory,
        qos=j.qos,
        reservation=j.reservation,
        constraints=list((j.routing or {}).get("constraints") or []),
        array=j.array,
        array_tasks=j.array_tasks,
        depends_on=[Dependency.model_validate(d) for d in j.depends_on or []],
    )


def task(t: JobTask) -> TaskRead:
    return TaskRead(
        index=t.index,
        state=t.state.value,
        reason=t.reason,
        exit_code=t.exit_code,
        node_list=list(t.node_list or []),
        started_at=t.started_at,
        ended_at=t.ended_at,
        elapsed_s=t.elapsed_s,
        charge_pfh=None if t.charge_units is None else units_to_pfh(t.charge_units),
    )


def job_detail(j: Job, io: JobIO | None) -> JobDetail:
    """The job as ``GET /jobs/{id}`` shows it: ``job`` plus its script and data movement."""
    return JobDetail(
        **job(j).model_dump(),
        script=j.script,
        inputs=list(io.inputs) if io else [],
        outputs=None if io is None or io.outputs is None else list(io.outputs),
    )


_DETAIL_FIELDS = tuple(JobDetail.model_fields)
_TIMES = ("created_at", "submitted_at", "started_at", "ended_at", "settled_at")


def job_detail_json(snapshot: dict[str, Any]) -> bytes:
    """``job_detail(...).model_dump_json()`` of a job from its ``outbox.job_snapshot``
    (a new job's, which the batch has at hand): the same fields and values, without a
    model built and validated per job."""
    body = {k: snapshot[k] for k in _DETAIL_FIELDS}
    for k in _TIMES:
        at = body[k]
        if at is not None and at.endswith("+00:00"):  # pydantic writes UTC as Z
            body[k] = at[:-6] + "Z"
    return orjson.dumps(body)


def partition(p: Partition) -> PartitionRead:
    return PartitionRead(
        name=p.name,
        nodes=p.nodes,
        cpus_per_node=p.cpus_per_node,
        memory_mb_per_node=p.memory_mb_per_node,
        gpus_per_node=p.gpus_per_node,
        max_nodes=p.max_nodes,
        max_time_minutes=p.max_time_minutes,
        rate_tflops=mflops_to_tflops(p.rated_mflops),
        price_per_pfh=p.price_per_pfh,
        features=list(p.features or []),
        allowed_qos=list(p.allowed_qos or []),
        allowed_reservations=list(p.allowed_reservations or []),
        max_array_tasks=p.max_array_tasks,
        gpu_precision=p.gpu_precision,
        shared=p.shared,
    )


def cluster(c: Cluster, parts: list[Partition]) -> ClusterRead:
    return ClusterRead(
        name=c.name,
        adapter=c.adapter,
        status=c.status.value,
        version=c.version,
        last_seen_at=c.last_seen_at,
        last_error=c.last_error,
        load=c.load or {},
        partitions=[partition(p) for p in parts],
    )


def node_gpu(g: GpuResult, rate_mflops: int | None) -> NodeGpuRead:
    return NodeGpuRead(
        index=g.gpu_index,
        name=g.name,
        uuid=g.gpu_uuid,
        simulated=g.simulated,
        rate_tflops=None if rate_mflops is None else mflops_to_tflops(rate_mflops),
        dgemm_gflops=g.dgemm_gflops,
        sgemm_gflops=g.sgemm_gflops,
        triad_gbs=g.triad_gbs,
        peak_gflops=g.peak_gflops,
        passed=g.passed,
        reasons=list(g.reasons or []),
        run_id=g.run_id,
    )


def node_rate(r: NodeRate) -> NodeRateRead:
    return NodeRateRead(
        valid_from=r.valid_from,
        rate_tflops=mflops_to_tflops(r.rate_mflops),
        cpu_rate_tflops=None if r.cpu_mflops is None else mflops_to_tflops(r.cpu_mflops),
        gpu_rates_tflops=[mflops_to_tflops(g) for g in r.gpu_mflops or []],
        precision=r.precision,
        samples=r.samples,
        run_id=r.run_id,
    )


def node(n: Node, rated_mflops: int, gpus: Sequence[GpuResult] = ()) -> NodeRead:
    rates = list(n.gpu_mflops or [])
    return NodeRead(
        name=n.name,
        cpus=n.cpus,
        memory_mb=n.memory_mb,
        gpus=n.gpus,
        partitions=list(n.partitions or []),
        state=n.state,
        reason=n.reason,
        rate_tflops=mflops_to_tflops(n.rate_mflops or rated_mflops),
        measured=n.rate_mflops is not None,
        validation=n.validation.value,
        updated_at=n.updated_at,
        gpu_type=n.gpu_type,
        gpu_rates_tflops=[mflops_to_tflops(r) for r in rates],
        gpu_figures=[
            node_gpu(g, rates[g.gpu_index] if g.gpu_index < len(rates) else None) for g in gpus
        ],
    )


def me(who: WhoAmI) -> MeRead:
    p, ent = who.principal, who.enterprise
    return MeRead(
        token_id=p.token_id,
        name=p.name,
        role=p.role.value,
        enterprise=None if ent is None else EnterpriseRef(id=ent.id, name=ent.name),
        projects=[ProjectRef(id=x.id, name=x.name, status=x.status.value) for x in who.projects],
        expires_at=who.expires_at,
    )
