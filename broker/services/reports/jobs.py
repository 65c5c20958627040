"""One page of jobs at a time, filtered and keyset-paginated, with the filters' choices."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from ...errors import InvalidInput
from ...models import Cluster, Enterprise, Job, JobStatus, Project


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str


@dataclass(frozen=True, slots=True)
class JobRow:
    id: uuid.UUID
    name: str
    state: JobStatus
    reason: str
    native_state: str
    enterprise: str
    project: str
    cluster: str
    partition: str
    nodes: int
    scheduler_job_id: str | None
    hold_units: int
    charge_units: int | None
    elapsed_s: int | None
    cancel_requested: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobFilter:
    enterprise_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    cluster: str | None = None
    state: JobStatus | None = None


def enterprise_options(session: Session) -> list[Option]:
    rows = session.execute(select(Enterprise.id, Enterprise.name).order_by(Enterprise.name))
    return [Option(str(i), n) for i, n in rows]


def project_options(session: Session, enterprise_id: uuid.UUID) -> list[Option]:
    rows = session.execute(
        select(Project.id, Project.name)
        .where(Project.enterprise_id == enterprise_id)
        .order_by(Project.name)
    )
    return [Option(str(i), n) for i, n in rows]


def cluster_names(session: Session) -> list[str]:
    return list(session.scalars(select(Cluster.name).order_by(Cluster.name)))


def _conditions(f: JobFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.enterprise_id is not None:
        conds.append(Job.enterprise_id == f.enterprise_id)
    if f.project_id is not None:
        conds.append(Job.project_id == f.project_id)
    if f.cluster:
        conds.append(Job.cluster == f.cluster)
    if f.state is not None:
        conds.append(Job.state == f.state)
    return conds


_JOB_COLUMNS = (
    Job.id,
    Job.name,
    Job.state,
    Job.reason,
    Job.native_state,
    Job.enterprise_id,
    Job.project_id,
    Job.cluster,
    Job.partition,
    Job.nodes,
    Job.scheduler_job_id,
    Job.hold_units,
    Job.charge_units,
    Job.elapsed_s,
    Job.cancel_requested,
    Job.created_at,
)


def job_page(
    session: Session, f: JobFilter, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[JobRow], str | None]:
    """Newest first, keyset-paginated by (created_at, id): page N costs what page 1 does."""
    query = select(*_JOB_COLUMNS).where(*_conditions(f))
    if cursor:
        at, last = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < at, (Job.created_at == at) & (Job.id < last)))
    rows = list(
        session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    more, rows = len(rows) > limit, rows[:limit]
    ents = _names(session, Enterprise, {r.enterprise_id for r in rows})
    projs = _names(session, Project, {r.project_id for r in rows})
    out = [
        JobRow(
            id=r.id,
            name=r.name,
            state=r.state,
            reason=r.reason or "",
            native_state=r.native_state or "",
            enterprise=ents.get(r.enterprise_id, "?"),
            project=projs.get(r.project_id, "?"),
            cluster=r.cluster,
            partition=r.partition,
            nodes=r.nodes,
            scheduler_job_id=r.scheduler_job_id,
            hold_units=r.hold_units,
            charge_units=r.charge_units,
            elapsed_s=r.elapsed_s,
            cancel_requested=r.cancel_requested,
            created_at=r.created_at,
        )
        for r in rows
    ]
    nxt = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return out, nxt


def _names(
    session: Session, model: type[Enterprise] | type[Project], ids: set[uuid.UUID]
) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    rows = session.execute(select(model.id, model.name).where(model.id.in_(ids)))
    return {i: str(n) for i, n in rows}


def encode_cursor(at: datetime, job_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(at).astimezone(UTC), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor", "is not a cursor this page gave") from exc
