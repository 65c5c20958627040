"""Monthly usage statements: per project and job, node hours, PFlop·h, rates and proof.

A statement is the charge lines of one month (charges and credits), grouped by project
and job. Its totals are sums of ledger units (integers of 1 GFLOP, added in Python or
with ``ledger.sum_units``), so they match the ledger to the last unit: ``net_units``
is the exact integer beside the PFlop·h floats.

A month's lines are written once: a credit given later for a job of a closed month is
booked in the month it is given, each credit line naming the line it corrects
(``corrects_line``, ``corrects_period``), so a statement already sent never changes.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from ..errors import InvalidInput
from ..models import ChargeLine, Cluster, Job, Partition, Project
from ..units import units_to_pfh
from . import ledger, tenants
from .principal import Principal

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass
class JobUsage:
    job_id: uuid.UUID
    name: str
    cluster: str
    partition: str
    node_seconds: int = 0
    charged_units: int = 0
    credited_units: int = 0
    lines: list[Any] = field(default_factory=list)  # rows of charge-line columns


@dataclass
class ProjectUsage:
    project_id: uuid.UUID
    name: str
    jobs: dict[uuid.UUID, JobUsage] = field(default_factory=dict)

    @property
    def charged_units(self) -> int:
        return sum(j.charged_units for j in self.jobs.values())

    @property
    def credited_units(self) -> int:
        return sum(j.credited_units for j in self.jobs.values())

    @property
    def node_seconds(self) -> int:
        return sum(j.node_seconds for j in self.jobs.values())


def check_month(month: str) -> str:
    if not _MONTH.match(month):
        raise InvalidInput("month", "must be YYYY-MM")
    return month


def current_month(now: datetime | None = None) -> str:
    """``YYYY-MM`` of ``now`` (default: this instant) in UTC, the ledger's months."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")


def statement(
    session: Session, principal: Principal, enterprise_id: uuid.UUID, month: str | None = None
) -> dict[str, Any]:
    """The enterprise's statement for ``month`` (default: the current month, so far) as a
    JSON-ready document."""
    ent = tenants.get_enterprise(session, principal, enterprise_id)
    month = check_month(month or current_month())
    # Plain columns, not ORM objects: a large tenant's month has tens of thousands of lines.
    corrected = aliased(ChargeLine)
    rows = session.execute(
        select(
            ChargeLine.id,
            ChargeLine.corrects_id,
            corrected.period.label("corrects_period"),
            ChargeLine.project_id,
            ChargeLine.job_id,
            ChargeLine.cluster,
            ChargeLine.partition,
            ChargeLine.node,
            ChargeLine.node_seconds,
            ChargeLine.rate_mflops,
            ChargeLine.rate_id,
            ChargeLine.run_id,
            ChargeLine.units,
            ChargeLine.memo,
            ChargeLine.gpu_mflops,
            ChargeLine.precision,
            ChargeLine.gpus,
            ChargeLine.node_gpus,
            Job.name.label("job_name"),
            Project.name.label("project_name"),
        )
        .join(Job, Job.id == ChargeLine.job_id)
        .join(Project, Project.id == ChargeLine.project_id)
        .outerjoin(corrected, corrected.id == ChargeLine.corrects_id)
        .where(ChargeLine.enterprise_id == enterprise_id, ChargeLine.period == month)
        .order_by(Project.name, ChargeLine.job_id, ChargeLine.id)
    ).all()
    prices = {
        (c, p): price
        for c, p, price in session.execute(
            select(Cluster.name, Partition.name, Partition.price_per_pfh).join(
                Partition, Partition.cluster_id == Cluster.id
            )
        )
    }
    projects: dict[uuid.UUID, ProjectUsage] = {}
    currency = 0.0
    for line in rows:
        proj = projects.setdefault(
            line.project_id, ProjectUsage(line.project_id, line.project_name)
        )
        job = proj.jobs.setdefault(
            line.job_id, JobUsage(line.job_id, line.job_name, line.cluster, line.partition)
        )
        job.lines.append(line)
        if line.units >= 0:
            job.charged_units += line.units
            job.node_seconds += line.node_seconds
        else:
            job.credited_units -= line.units
        currency += units_to_pfh(line.units) * prices.get((line.cluster, line.partition), 0.0)
    charged = sum(p.charged_units for p in projects.values())
    credited = sum(p.credited_units for p in projects.values())
    return {
        "enterprise_id": str(ent.id),
        "enterprise": ent.name,
        "month": month,
        "charged_pfh": units_to_pfh(charged),
        "credited_pfh": units_to_pfh(credited),
        "net_pfh": units_to_pfh(charged - credited),
        "net_units": charged - credited,
        "node_hours": round(sum(p.node_seconds for p in projects.values()) / 3600, 6),
        "price_total": round(currency, 6),
        "projects": [_project(p) for p in projects.values()],
    }


def _project(p: ProjectUsage) -> dict[str, Any]:
    return {
        "project_id": str(p.project_id),
        "name": p.name,
        "node_hours": round(p.node_seconds / 3600, 6),
        "charged_pfh": units_to_pfh(p.charged_units),
        "credited_pfh": units_to_pfh(p.credited_units),
        "net_pfh": units_to_pfh(p.charged_units - p.credited_units),
        "jobs": [_job(j) for j in p.jobs.values()],
    }


def _job(j: JobUsage) -> dict[str, Any]:
    return {
        "job_id": str(j.job_id),
        "name": j.name,
        "cluster": j.cluster,
        "partition": j.partition,
        "node_hours": round(j.node_seconds / 3600, 6),
        "charged_pfh": units_to_pfh(j.charged_units),
        "credited_pfh": units_to_pfh(j.credited_units),
        "lines": [
            {
                "line_id": ln.id,
                "node": ln.node,
                "node_seconds": ln.node_seconds,
                "rate_tflops": ln.rate_mflops / 1e6,
                "rate_version": ln.rate_id,
                "benchmark_run": ln.run_id,
                "pfh": units_to_pfh(ln.units),
                "units": ln.units,
                "memo": ln.memo,
                "corrects_line": ln.corrects_id,
                "corrects_period": ln.corrects_period,
                # GPU nodes: the precision the GPUs are billed at, their part of the
                # rate, and the GPUs charged of the node's (None on CPU-only lines).
                "precision": ln.precision,
                "gpu_rate_tflops": None if ln.gpu_mflops is None else ln.gpu_mflops / 1e6,
                "gpus": ln.gpus,
                "node_gpus": ln.node_gpus,
            }
            for ln in j.lines
        ],
    }


CSV_COLUMNS = [
    "month",
    "project",
    "job_id",
    "job",
    "cluster",
    "partition",
    "node",
    "node_seconds",
    "rate_tflops",
    "rate_version",
    "benchmark_run",
    "pfh",
    "units",
    "memo",
    "line_id",
    "corrects_line",
    "corrects_period",
    "precision",
    "gpu_rate_tflops",
    "gpus",
    "node_gpus",
]


def as_csv(doc: dict[str, Any]) -> str:
    """One row per charge line; a last row carries the month's totals."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for proj in doc["projects"]:
        for job in proj["jobs"]:
            for ln in job["lines"]:
                writer.writerow(
                    [
                        doc["month"],
                        proj["name"],
                        job["job_id"],
                        job["name"],
                        job["cluster"],
                        job["partition"],
                        ln["node"],
                        ln["node_seconds"],
                        ln["rate_tflops"],
                        ln["rate_version"] or "",
                        ln["benchmark_run"] or "",
                        ln["pfh"],
                        ln["units"],
                        ln["memo"],
                        ln["line_id"],
                        ln["corrects_line"] or "",
                        ln["corrects_period"] or "",
                        ln["precision"] or "",
                        "" if ln["gpu_rate_tflops"] is None else ln["gpu_rate_tflops"],
                        "" if ln["gpus"] is None else ln["gpus"],
                        "" if ln["node_gpus"] is None else ln["node_gpus"],
                    ]
                )
    writer.writerow(
        [
            doc["month"],
            "TOTAL",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            doc["net_pfh"],
            doc["net_units"],
            f"node_hours={doc['node_hours']}",
            *[""] * 7,
        ]
    )
    return out.getvalue()


def monthly_totals(session: Session, month: str) -> dict[tuple[uuid.UUID, uuid.UUID], int]:
    """Net units per (enterprise, project) for a month across the center (bulk)."""
    check_month(month)
    totals: dict[tuple[uuid.UUID, uuid.UUID], int] = defaultdict(int)
    for ent, proj, high, low in session.execute(
        select(ChargeLine.enterprise_id, ChargeLine.project_id, *ledger.sum_units(ChargeLine.units))
        .where(ChargeLine.period == month)
        .group_by(ChargeLine.enterprise_id, ChargeLine.project_id)
    ):
        totals[(ent, proj)] = ledger.joined_units(high, low)
    return totals
