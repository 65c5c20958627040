"""One job for the dashboard's job page: its fields, state timeline, charge lines, tasks.

The fields are those of ``GET /api/v1/jobs/{id}`` (``schemas.jobs.JobDetail``), read
generically: a field the API gains (``array``, ``depends_on``) shows on the page
without a change here. Amount fields (``*_pfh``) come from the job's ``*_units``.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ... import models
from ...models import ChargeLine, Enterprise, Job, JobEvent, JobIO, NodeRate, Project
from ...schemas.jobs import JobDetail
from ...units import units_to_pfh


@dataclass(frozen=True, slots=True)
class TimelineStep:
    at: datetime
    previous: str | None
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChargeLineRow:
    entry_id: int
    period: str
    node: str
    partition: str
    node_seconds: int
    rate_mflops: int
    units: int
    rate_id: int | None
    rate_valid_from: datetime | None
    rate_samples: int | None
    run_id: int | None
    credit: bool
    gpu_mflops: int | None = None  # GPU nodes: the GPUs' part of the rate
    precision: str | None = None
    gpus: int | None = None
    node_gpus: int | None = None


@dataclass(frozen=True, slots=True)
class JobPageData:
    job: Job
    io: JobIO | None
    enterprise: str
    project: str
    fields: dict[str, Any]
    timeline: list[TimelineStep]
    charge_lines: list[ChargeLineRow]
    tasks: list[dict[str, Any]] | None  # None: not an array


def api_fields(job: Job, io: JobIO | None) -> dict[str, Any]:
    """Every field of ``GET /jobs/{id}``, by the API's names, in the API's order."""
    out: dict[str, Any] = {}
    for name in JobDetail.model_fields:
        if name.endswith("_pfh"):
            units = getattr(job, name.removesuffix("_pfh") + "_units", None)
            value: Any = None if units is None else units_to_pfh(units)
        elif name in ("inputs", "outputs"):
            value = getattr(io, name, None) if io is not None else None
            if value is None and name == "inputs":
                value = []
        elif name == "constraints":
            value = list((job.routing or {}).get("constraints") or [])
        else:
            value = getattr(job, name, None)
        out[name] = value.value if isinstance(value, enum.Enum) else value
    return out


def timeline(session: Session, job_id: uuid.UUID) -> list[TimelineStep]:
    """The job's state changes, oldest first (the outbox's events: one per change)."""
    rows = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id).limit(200)
    )
    return [
        TimelineStep(e.at, e.previous_state, e.state, str((e.payload or {}).get("reason") or ""))
        for e in rows
    ]


def charge_lines(session: Session, job_id: uuid.UUID) -> list[ChargeLineRow]:
    """Per node and month, what the job was charged (and credited) at which rate version."""
    lines = list(
        session.scalars(
            select(ChargeLine).where(ChargeLine.job_id == job_id).order_by(ChargeLine.id)
        )
    )
    rate_ids = {line.rate_id for line in lines if line.rate_id is not None}
    rates = (
        {r.id: r for r in session.scalars(select(NodeRate).where(NodeRate.id.in_(rate_ids)))}
        if rate_ids
        else {}
    )
    out = []
    for line in lines:
        rate = rates.get(line.rate_id) if line.rate_id is not None else None
        out.append(
            ChargeLineRow(
                entry_id=line.entry_id,
                period=line.period,
                node=line.node,
                partition=line.partition,
                node_seconds=line.node_seconds,
                rate_mflops=line.rate_mflops,
                units=line.units,
                rate_id=line.rate_id,
                rate_valid_from=rate.valid_from if rate else None,
                rate_samples=rate.samples if rate else None,
                run_id=line.run_id,
                credit=line.units < 0,
                gpu_mflops=line.gpu_mflops,
                precision=line.precision,
                gpus=line.gpus,
                node_gpus=line.node_gpus,
            )
        )
    return out


def tasks(session: Session, job: Job) -> list[dict[str, Any]] | None:
    """An array's tasks (as ``GET /jobs/{id}/tasks`` lists them); None for a single job."""
    task_model = getattr(models, "JobTask", None)
    if not getattr(job, "array", None) or task_model is None:
        return None
    rows = session.scalars(
        select(task_model).where(task_model.job_id == job.id).order_by(task_model.index)
    )
    return [
        {
            "index": t.index,
            "state": t.state.value,
            "exit_code": t.exit_code,
            "charge_pfh": None if t.charge_units is None else units_to_pfh(t.charge_units),
            "started_at": t.started_at,
            "ended_at": t.ended_at,
            "node_list": list(t.node_list or []),
            "reason": t.reason,
        }
        for t in rows
    ]


def job_page(session: Session, job_id: uuid.UUID) -> JobPageData | None:
    """Everything the job page shows, or None if there is no such job."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    io = session.get(JobIO, job.id)
    ent = session.get(Enterprise, job.enterprise_id)
    proj = session.get(Project, job.project_id)
    return JobPageData(
        job=job,
        io=io,
        enterprise=ent.name if ent else "?",
        project=proj.name if proj else "?",
        fields=api_fields(job, io),
        timeline=timeline(session, job.id),
        charge_lines=charge_lines(session, job.id),
        tasks=tasks(session, job),
    )
