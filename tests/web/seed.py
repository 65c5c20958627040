"""A small, realistic center for dashboard tests: enterprises, projects, a month of jobs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.models import (
    JobStatus,
    LedgerEntry,
    Node,
    NodeRate,
    Role,
    RunState,
    Validation,
    ValidationRun,
)
from broker.schemas.jobs import JobCreate
from broker.services import billing, clusters, jobs, ledger, projects, tenants, tokens
from broker.services.principal import SYSTEM, Principal
from broker.units import pfh_to_units

CLUSTERS_TOML = """
[[clusters]]
name = "alpha"
adapter = "local"
scratch_dir = "{root}/alpha"
options = {{ root_dir = "{root}/alpha-sched", node_names = [{alpha_nodes}], partition = "batch" }}
[[clusters.partitions]]
name = "batch"
nodes = 8
cpus_per_node = 4
max_time_minutes = 1440
rate_tflops = 2.0

[[clusters]]
name = "beta"
adapter = "local"
scratch_dir = "{root}/beta"
options = {{ root_dir = "{root}/beta-sched", node_names = [{beta_nodes}], partition = "gpu" }}
[[clusters.partitions]]
name = "gpu"
nodes = 4
cpus_per_node = 8
gpus_per_node = 4
max_time_minutes = 720
rate_tflops = 5.0
"""


def clusters_toml(root: str) -> str:
    alpha = ", ".join(f'"a{i:02d}"' for i in range(1, 9))
    beta = ", ".join(f'"b{i:02d}"' for i in range(1, 5))
    return CLUSTERS_TOML.format(root=root, alpha_nodes=alpha, beta_nodes=beta)


@dataclass
class Seeded:
    operator_token: str
    member_token: str
    admin_token: str
    enterprises: dict[str, uuid.UUID] = field(default_factory=dict)
    projects: dict[str, uuid.UUID] = field(default_factory=dict)
    drafts: dict[str, uuid.UUID] = field(default_factory=dict)
    jobs: list[uuid.UUID] = field(default_factory=list)


def _member(session: Session, enterprise_id: uuid.UUID) -> Principal:
    row, _ = tokens.create_token(
        session, SYSTEM, name="seed", role=Role.MEMBER, enterprise_id=enterprise_id
    )
    return Principal(row.id, row.name, row.role, enterprise_id)


def seed(session: Session, pool: clusters.AdapterPool, now: datetime) -> Seeded:
    """Three enterprises with jobs spread over the current month (back-dated entries)."""
    _, op = tokens.create_token(session, SYSTEM, name="ops", role=Role.OPERATOR, enterprise_id=None)
    for c in clusters.list_clusters(session):
        clusters.refresh(session, pool, c)
    _nodes(session, now)
    # Grants in PFlop·h: a 2 TFLOP/s node-hour is 0.002 PFlop·h.
    plan = [
        ("Acme Fusion", 0.12, ["plasma-sim", "tokamak-opt"]),
        ("Borealis Bio", 0.06, ["fold"]),
        ("Cirrus CFD", 0.03, ["wing-les"]),
    ]
    out: Seeded | None = None
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span_s = max(3600.0, (now - start).total_seconds() - 600)
    for i, (name, grant_pfh, names) in enumerate(plan):
        ent = tenants.create_enterprise(session, SYSTEM, name=name)
        ledger.grant(session, SYSTEM, ent.id, pfh_to_units(grant_pfh), "initial grant")
        session.execute(
            update(LedgerEntry).where(LedgerEntry.enterprise_id == ent.id).values(created_at=start)
        )
        if out is None:
            _, member = tokens.create_token(
                session, SYSTEM, name="alice", role=Role.MEMBER, enterprise_id=ent.id
            )
            _, admin = tokens.create_token(
                session, SYSTEM, name="root", role=Role.ADMIN, enterprise_id=ent.id
            )
            out = Seeded(op, member, admin)
        out.enterprises[name] = ent.id
        who = _member(session, ent.id)
        for pname in names:
            proj = projects.create_project(session, SYSTEM, enterprise_id=ent.id, name=pname)
            projects.approve_project(session, SYSTEM, proj.id)
            out.projects[pname] = proj.id
            for k in range(6 + 3 * (2 - i)):
                at = start + timedelta(seconds=span_s * (k + 1) / (8 + 3 * (2 - i)))
                out.jobs.append(_job(session, who, proj.id, f"{pname}-{k:02d}", k, at, now))
        draft = projects.create_project(
            session,
            SYSTEM,
            enterprise_id=ent.id,
            name=f"{name.split()[0].lower()}-poc",
            description="Proof of concept awaiting approval",
        )
        out.drafts[name] = draft.id
    assert out is not None
    # a03 failed its last run: the jobs it ran since its previous pass are credited.
    billing.credit_node(session, SYSTEM, "alpha", "a03", now - timedelta(days=25), "GEMM low")
    return out


def _job(
    session: Session,
    who: Principal,
    project_id: uuid.UUID,
    name: str,
    k: int,
    at: datetime,
    now: datetime,
) -> uuid.UUID:
    cluster = "beta" if k % 3 == 2 else "alpha"
    req = JobCreate(
        name=name, script="srun ./solver", nodes=1 + k % 2, time_limit_minutes=60, cluster=cluster
    )
    job = jobs.submit(session, who, project_id, req, idempotency_key=None, max_script_bytes=65536)
    j = job.job
    j.created_at = at
    live = at > now - timedelta(hours=2) or k == 1
    size = 8 if cluster == "alpha" else 4
    j.node_list = [f"{cluster[0]}{(k + n) % size + 1:02d}" for n in range(j.nodes)]
    if live:
        j.state, j.started_at = JobStatus.RUNNING, at
        j.scheduler_job_id = str(j.id.int % 10_000_000)
    else:
        elapsed = min(3600, 900 + 400 * k)
        j.state = JobStatus.FAILED if k % 5 == 4 else JobStatus.COMPLETED
        j.started_at, j.ended_at, j.elapsed_s = at, at + timedelta(seconds=elapsed), elapsed
        j.scheduler_job_id = str(j.id.int % 10_000_000)
        billing.settle_job(session, j, at, elapsed, "")  # charge lines per node, rate versions
        j.settled_at = j.ended_at
    session.flush()
    session.execute(update(LedgerEntry).where(LedgerEntry.job_id == j.id).values(created_at=at))
    if j.ended_at is not None:
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.job_id == j.id, LedgerEntry.kind != "HOLD")
            .values(created_at=j.ended_at)
        )
    return j.id


#: Per validation campaign (days before now): GEMM GFLOP/s of a healthy node at index 0.
CAMPAIGNS = [(40, 1900.0), (25, 1960.0), (10, 1930.0)]


def _runs(session: Session, node: Node, degraded: bool, now: datetime) -> None:
    """Three campaigns of validation runs and the rate versions the passing ones set."""
    idx = int(node.name[1:])
    for k, (days_ago, gemm) in enumerate(CAMPAIGNS):
        at = now - timedelta(days=days_ago)
        failed = degraded and k == len(CAMPAIGNS) - 1
        value = 1400.0 if failed else gemm + 20.0 * idx
        run = ValidationRun(
            node_id=node.id,
            cluster="alpha" if node.name.startswith("a") else "beta",
            partition="batch" if node.name.startswith("a") else "gpu",
            campaign=str(uuid.UUID(int=k + 1)),
            state=RunState.FAILED if failed else RunState.PASSED,
            scheduler_job_id=str(900 + 10 * k + idx),
            gemm_gflops=value,
            fft_gflops=88.0 + idx,
            stream_gbs=41.5 + idx / 10,
            peak_gflops=2300.0,
            reasons=["gemm_gflops 1.4e+03 below 1.8e+03 (reference 2e+03, lower -10%)"]
            if failed
            else [],
            created_at=at,
            finished_at=at + timedelta(minutes=9),
        )
        session.add(run)
        session.flush()
        if not failed:
            session.add(
                NodeRate(
                    node_id=node.id,
                    rate_mflops=round(value * 1000),
                    run_id=run.id,
                    samples=k + 1,
                    valid_from=at + timedelta(minutes=9),
                )
            )


def _nodes(session: Session, now: datetime) -> None:
    for n in session.scalars(select(Node)):
        if n.name.startswith("a") and int(n.name[1:]) in (1, 2, 3, 4, 5, 7):
            _runs(session, n, int(n.name[1:]) in (3, 7), now)
        idx = int(n.name[1:])
        if idx in (3, 7):
            n.validation, n.rate_mflops = Validation.DEGRADED, 1_400_000
        elif idx in (1, 2, 4, 5):
            n.validation, n.rate_mflops = Validation.VALIDATED, 1_900_000 + 20_000 * idx
    node = session.scalar(select(Node).where(Node.name == "a07"))
    if node is not None:
        node.state, node.reason = "drained", "GEMM 1.40 TFLOP/s below reference 1.80"


def now_utc() -> datetime:
    return datetime.now(UTC)
