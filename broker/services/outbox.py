"""The outbox: a ``JobEvent`` (and its deliveries) in the transaction of every job change.

Every change of a job's state, wherever it happens (API, worker, CLI, reconciliation),
is written as a ``JobEvent`` in the same transaction as the change, with one
``WebhookDelivery`` per subscriber: the outbox pattern. A rolled-back change emits
nothing; a committed one cannot be lost. The worker sends deliveries later
(``services.webhooks``), and ``GET /jobs/{id}/events`` reads the events.

The rule is a pair of session events, registered when this module is imported
(``broker.services`` imports it, so every path that changes a job has it):
``before_flush`` notes each transition; ``before_commit`` writes the events with a
snapshot of the job as committed, so the payload of a terminal event carries the
charge that was settled in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy import bindparam, event, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import get_history

from ..models import Job, JobEvent, JobIO, JobStatus, Webhook, WebhookDelivery
from ..models._types import utcnow
from ..units import units_to_pfh

_PENDING_KEY = "broker.job_transitions"
_NEW_IO_KEY = "broker.new_job_io"  # JobIO rows added in this transaction, by job id
_Transition = tuple[Job, str | None, str, bool]  # job, previous state, state, created now


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def job_snapshot(job: Job, io: JobIO | None) -> dict[str, Any]:
    """The job as ``GET /jobs/{id}`` shows it (its spec, the script included), plus its
    data movement."""
    charge = job.charge_units
    return {
        "id": str(job.id),
        "project_id": str(job.project_id),
        "enterprise_id": str(job.enterprise_id),
        "name": job.name,
        "state": job.state.value,
        "reason": job.reason or "",
        "native_state": job.native_state or "",
        "cluster": job.cluster,
        "partition": job.partition,
        "scheduler_job_id": job.scheduler_job_id,
        "exit_code": job.exit_code,
        "nodes": job.nodes,
        "ntasks": job.ntasks,
        "cpus_per_task": job.cpus_per_task,
        "memory_mb": job.memory_mb,
        "gpus_per_node": job.gpus_per_node,
        "time_limit_minutes": job.time_limit_minutes,
        "node_list": list(job.node_list or []),
        "elapsed_s": job.elapsed_s,
        "hold_pfh": units_to_pfh(job.hold_units or 0),
        "charge_pfh": None if charge is None else units_to_pfh(charge),
        "routing": job.routing or {},
        "warnings": list(job.warnings or []),
        "created_at": _iso(job.created_at),
        "submitted_at": _iso(job.submitted_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
        "settled_at": _iso(job.settled_at),
        "script": job.script,
        "environment": dict(job.environment or {}),
        "working_directory": job.working_directory,
        "qos": job.qos,
        "reservation": job.reservation,
        "constraints": list((job.routing or {}).get("constraints") or []),
        "array": job.array,
        "array_tasks": job.array_tasks,
        "depends_on": [dict(d) for d in job.depends_on or []],
        "inputs": list(io.inputs) if io else [],
        "outputs": None if io is None or io.outputs is None else list(io.outputs),
        "stage_in": dict(io.stage_in) if io else {},
        "stage_out": dict(io.stage_out) if io else {},
    }


@event.listens_for(Session, "before_flush")
def _note_transitions(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in chain(session.new, session.dirty):
        if isinstance(obj, JobIO) and obj in session.new:
            session.info.setdefault(_NEW_IO_KEY, {})[obj.job_id] = obj
        if not isinstance(obj, Job):
            continue
        pending: list[_Transition] = session.info.setdefault(_PENDING_KEY, [])
        if obj in session.new:
            pending.append((obj, None, (obj.state or JobStatus.ACCEPTED).value, True))
            continue
        hist = get_history(obj, "state")  # (inspect(obj).attrs builds every attribute's)
        if not hist.added:
            continue
        new = JobStatus(hist.added[0])
        old = JobStatus(hist.deleted[0]) if hist.deleted and hist.deleted[0] else None
        if new is not old:
            pending.append((obj, None if old is None else old.value, new.value, False))


def note_inserted(session: Session, jobs: Sequence[Job]) -> None:
    """Jobs inserted set-based, not through the unit of work (``intake``): their
    ACCEPTED events are written at commit as for the jobs the session flushed."""
    pending: list[_Transition] = session.info.setdefault(_PENDING_KEY, [])
    pending += [(job, None, (job.state or JobStatus.ACCEPTED).value, True) for job in jobs]


@event.listens_for(Session, "before_commit")
def _write_outbox(session: Session) -> None:
    if session.info.get(_PENDING_KEY) or any(
        isinstance(o, Job) for o in chain(session.new, session.dirty)
    ):
        # Commit flushes only after this hook: note the last transitions, and the
        # JobIO rows added with new jobs, now.
        session.flush()
    if not session.info.get(_PENDING_KEY):
        return
    pending: list[_Transition] = session.info.pop(_PENDING_KEY, [])
    new_io: dict[uuid.UUID, JobIO] = session.info.pop(_NEW_IO_KEY, {})
    hooks = _hooks_of(session, {job.project_id for job, _, _, _ in pending})
    rows: list[tuple[JobEvent, list[_Target]]] = []
    # A job created in this transaction has its JobIO, if any, added in it too; the
    # others' are read in one query (most jobs have none: a get would ask for each).
    older = {job.id for job, _, _, created in pending if not created and job.id not in new_io}
    if older:
        ios = session.scalars(select(JobIO).where(JobIO.job_id.in_(sorted(older))))
        new_io |= {io.job_id: io for io in ios}
    for job, previous, state, _created in pending:
        io = new_io.get(job.id)
        payload = job_snapshot(job, io) | {"state": state}
        ev = JobEvent(
            job_id=job.id,
            project_id=job.project_id,
            state=state,
            previous_state=previous,
            payload=payload,
        )
        rows.append((ev, _targets(hooks[job.project_id], job, io, state)))
    if not any(targets for _, targets in rows):
        # Nothing to deliver: the events in one statement, in order (no ids to read
        # back, which the unit of work would ask for each).
        session.execute(insert(JobEvent), [_event_row(ev) for ev, _ in rows])
        return
    session.add_all([ev for ev, _ in rows])
    session.flush()
    for ev, targets in rows:
        for target, url, webhook_id in targets:
            session.add(
                WebhookDelivery(
                    event_id=ev.id,
                    project_id=ev.project_id,
                    job_id=ev.job_id,
                    webhook_id=webhook_id,
                    target=target,
                    url=url,
                )
            )


_Target = tuple[str, str, uuid.UUID | None]  # target, url, webhook id
_Hook = tuple[uuid.UUID, str, list[str]]  # id, url, events


_HOOKS = (  # built once
    select(Webhook.project_id, Webhook.id, Webhook.url, Webhook.events)
    .where(Webhook.project_id.in_(bindparam("ids", expanding=True)))
    .order_by(Webhook.created_at)
)


def _hooks_of(session: Session, project_ids: set[uuid.UUID]) -> dict[uuid.UUID, list[_Hook]]:
    """The projects' webhooks, each project's in the order they were made (one query)."""
    found: dict[uuid.UUID, list[_Hook]] = {p: [] for p in project_ids}
    if project_ids:
        query, params = _HOOKS, {"ids": sorted(project_ids)}
        for project_id, hook_id, url, events in session.connection().execute(query, params):
            found[project_id].append((hook_id, url, events))  # plain rows: no ORM step
    return found


def _targets(hooks: list[_Hook], job: Job, io: JobIO | None, state: str) -> list[_Target]:
    """Where an event of ``job`` entering ``state`` is delivered."""
    targets: list[_Target] = [
        (f"webhook:{hook_id}", url, hook_id)
        for hook_id, url, events in hooks
        if not events or state in events
    ]
    if io is not None and io.callback_url:
        targets.append((f"job:{job.id}", io.callback_url, None))
    return targets


def accepted_events(
    session: Session,
    new: Sequence[tuple[Job, JobIO | None]],
    *,
    hooked: Collection[uuid.UUID] | None = None,
) -> list[dict[str, Any]] | None:
    """The ACCEPTED events of jobs inserted set-based (``intake``), as rows to insert
    with them; None when any of them has a delivery to make (then ``note_inserted``:
    the deliveries need the events' ids). ``hooked``: the projects with webhooks, as
    read earlier in the transaction (None: read them now)."""
    projects = {job.project_id for job, _ in new}
    if hooked is None:
        hooks = _hooks_of(session, projects)
    elif projects.isdisjoint(hooked):
        hooks = {p: [] for p in projects}
    else:
        return None
    state = JobStatus.ACCEPTED.value
    if any(_targets(hooks[job.project_id], job, io, state) for job, io in new):
        return None
    return [
        {
            "job_id": job.id,
            "project_id": job.project_id,
            "state": state,
            "previous_state": None,
            "payload": job_snapshot(job, io) | {"state": state},
            "at": utcnow(),
        }
        for job, io in new
    ]


def _event_row(ev: JobEvent) -> dict[str, Any]:
    return {
        "job_id": ev.job_id,
        "project_id": ev.project_id,
        "state": ev.state,
        "previous_state": ev.previous_state,
        "payload": ev.payload,
        "at": utcnow(),
    }


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_transitions(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(_NEW_IO_KEY, None)
