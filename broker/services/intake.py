"""Accepting submissions: every rule of ``POST /projects/{id}/jobs``, for a batch at once.

A submission goes through two steps:

``prepare`` (no database, before any lock; ``services.spec_checks``): the script's size
and bytes, the Idempotency-Key's length, the environment, the working directory, the
array's syntax, the callback URL's name lookup (up to seconds), the request's hash and
the script's neutralised directives.

``accept`` (one transaction, the caller's): for a batch of submissions, of one
enterprise or many, in arrival order, each gets its job or its own error, exactly as if
each had been submitted alone one after the other:

1. the project exists and the caller is a member of its enterprise (404/403);
2. ``prepare``'s refusal, if it had one (422 naming the field);
3. each enterprise's balance row and its projects' rows are locked, once for the batch,
   enterprises in id order;
4. Idempotency-Key: the same key and body again (stored, or earlier in the batch) is
   the same job, not a new one; the same key with another body is 422;
5. the project is active (409); ``depends_on`` names live jobs of the enterprise (422);
   the enterprise is not suspended (409);
6. routing (422 naming the field), within what the capacity cap leaves after the jobs
   accepted before it; the enterprise's POSIX user exists where it must run (409);
7. inputs, outputs and callback_url (422 naming one);
8. the hold: the enterprise's available budget, the project's allocation for the
   period, the capacity cap (409), each counting the holds accepted before it.

The rules read plain rows, not ORM objects: the projects (with whether they have
webhooks) before the lock; the locked balance rows with their enterprises in one
statement (``ledger.lock_batch``); the stored Idempotency-Keys; the routing snapshot
from the process's memory (``services.snapshot_cache``) when the caller has one. Each
hold is ``ledger.reserve``, the rule ``ledger.hold`` applies to one job too.

Nothing of a refused item is written (every check comes before its writes). The
accepted items are rows (a new job is a ``JobRow``): their jobs, HOLD entries, audit
rows, ACCEPTED events (``outbox.accepted_events``; the outbox writes them at commit
instead when one has a webhook delivery to make), array tasks and dependency rows, and
the balances' new counters, are written together, one statement on PostgreSQL
(``services.bulk``); then the few JobIO rows through the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

from sqlalchemy import ARRAY, String, Uuid, bindparam, exists, func, literal_column, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import BrokerError, Conflict, IdempotencyMismatch, NotFound
from ..models import (
    AuditEvent,
    Balance,
    Enterprise,
    EnterpriseStatus,
    Job,
    JobDependency,
    JobEvent,
    JobIO,
    JobStatus,
    JobTask,
    LedgerEntry,
    Project,
    ProjectStatus,
    Webhook,
)
from ..models._types import utcnow
from ..schemas.jobs import JobCreate
from . import (
    audit,
    brokering,
    bulk,
    dependencies,
    ledger,
    outbox,
    projects,
    staging,
    tenants,
    workspaces,
)
from .principal import Principal
from .snapshot_cache import SnapshotCache
from .spec_checks import MAX_WARNINGS as MAX_WARNINGS
from .spec_checks import Prepared as Prepared
from .spec_checks import directive_warnings as directive_warnings
from .spec_checks import prepare as prepare
from .spec_checks import request_hash as request_hash
from .spec_checks import with_shebang as with_shebang


@dataclass(frozen=True, slots=True)
class Submission:
    principal: Principal
    project_id: uuid.UUID
    req: JobCreate
    idempotency_key: str | None
    prepared: Prepared


@dataclass(slots=True)
class Outcome:
    """One submission's answer: its job (``created`` false for a replay) or its error.

    A new job is a ``JobRow``, with ``detail``: the job as ``GET /jobs/{id}`` shows it
    (``outbox.job_snapshot``, its ACCEPTED event's payload); a replay is the stored Job.
    """

    job: Job | JobRow | None = None
    io: JobIO | None = None
    created: bool = False
    error: BrokerError | None = None
    detail: dict[str, Any] | None = None


class JobRow:
    """A new job's column values (inserted set-based, not through the unit of work),
    read as attributes as a ``Job``'s are: they are its instance dictionary, which
    ``row`` gives as the row to insert. (A dict with ``__getattr__`` cost a failed
    lookup per attribute: ~45 per job for its ACCEPTED event and its answer.)"""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # a column it lacks (typed as a Job's)
        raise AttributeError(name)

    @property
    def row(self) -> dict[str, Any]:
        return self.__dict__


def _as_job(row: JobRow) -> Job:
    """A ``JobRow`` where a ``Job`` is read (``staging``, ``outbox``): the same attributes."""
    return cast(Job, row)


@dataclass
class _Batch:
    """The batch's state under its locks: enterprises, balance rows, capacity in use;
    what it has taken so far; and the rows it will write."""

    enterprises: dict[uuid.UUID, ledger.EnterpriseState | Enterprise]
    counters: dict[tuple[uuid.UUID, uuid.UUID | None], ledger.Counters]
    in_use: dict[uuid.UUID, int]  # capped enterprises only
    snap: brokering.Snapshot
    keys: dict[tuple[uuid.UUID, str], Job | JobRow]
    hooked: set[uuid.UUID]  # projects with webhooks
    accepted: list[Outcome] = field(default_factory=list)
    holds: list[dict[str, object]] = field(default_factory=list)
    audits: list[dict[str, object]] = field(default_factory=list)
    tasks: list[dict[str, object]] = field(default_factory=list)
    depends: list[dict[str, object]] = field(default_factory=list)


def accept(
    session: Session,
    items: Sequence[Submission],
    *,
    weights: brokering.Weights = brokering.Weights(),
    workspace: workspaces.WorkspaceConfig | None = None,
    routes: SnapshotCache | None = None,
    stored_keys: bool = True,
) -> list[Outcome]:
    """Accept or refuse each submission in order, in the caller's transaction (see the
    module). The items may be of any number of enterprises: each enterprise's balance
    rows are locked in enterprise id order (every batch writer keeps that order, so two
    never wait on each other in a cycle), and each item is checked against its own
    enterprise's state and the items of that enterprise before it. ``routes``: the
    process's routing snapshot (default: read it now).

    ``stored_keys`` false: the Idempotency-Keys are not looked up first (a statement
    per batch), as if none were stored; one that is makes the batch's insert fail on
    the unique index (``key_taken``), and the caller, having rolled back, runs the batch
    again with the lookup. Keys repeated within the batch are found either way."""
    outcomes = [Outcome() for _ in items]
    session.flush()  # the rules read plain rows: what the caller changed first is seen
    mine = _visible(session, items, outcomes)
    if not mine:
        return outcomes
    # Read before the lock: routing needs none.
    snap = brokering.snapshot(session) if routes is None else routes.get(session)
    wanted: dict[uuid.UUID, set[uuid.UUID]] = {}
    for _, _, project in mine:
        wanted.setdefault(project.enterprise_id, set()).add(project.id)
    counters, ents = ledger.lock_batch(session, wanted, _HOOKED)  # and the enterprises
    capped = [e.id for e in ents.values() if e.capacity_cap_mflops is not None]
    in_use = ledger.capacity_in_use_many(session, capped)
    keys = _stored_keys(session, [i for _, i, _ in mine]) if stored_keys else {}
    hooked = {c.project_id for c in counters.values() if c.project_id and c.also[0]}
    batch = _Batch(ents, counters, in_use, snap, keys, hooked)
    with session.no_autoflush:
        for n, item, project in mine:
            try:
                outcomes[n] = _accept_one(session, item, project, batch, weights, workspace)
            except BrokerError as exc:
                outcomes[n].error = exc
    _write(session, batch)
    details = {out.job.id: out.detail for out in batch.accepted if out.job is not None}
    for out in outcomes:
        if out.job is None or out.created:
            continue
        if isinstance(out.job, JobRow):  # a replay of an item before it in the batch
            out.detail = details[out.job.id]
        elif out.io is None:
            out.io = session.get(JobIO, out.job.id)
    return outcomes


def _write(session: Session, batch: _Batch) -> None:
    """The accepted items' rows: set-based (``bulk``), then the few objects (JobIO,
    workspace rows, an enterprise's first period) through the session."""
    new = [(_as_job(cast(JobRow, out.job)), out.io) for out in batch.accepted]
    with session.no_autoflush:  # nothing of the batch is flushed before its jobs
        events = outbox.accepted_events(session, new, hooked=batch.hooked) if new else []
    if events is None:  # deliveries to make: the outbox writes the events at commit
        outbox.note_inserted(session, [job for job, _ in new])
        for out, (job, io) in zip(batch.accepted, new, strict=True):
            out.detail = outbox.job_snapshot(job, io)
    else:
        for out, ev in zip(batch.accepted, events, strict=True):
            out.detail = ev["payload"]
    bulk.write(
        session,
        [
            (Job, [cast(JobRow, out.job).row for out in batch.accepted]),
            (LedgerEntry, batch.holds),
            (AuditEvent, batch.audits),
            (JobEvent, [bulk.complete(JobEvent, e) for e in events or []]),
            (JobTask, batch.tasks),
            (JobDependency, batch.depends),
        ],
        [(Balance, ledger.counter_updates(session, batch.counters.values()))],
    )
    session.add_all(out.io for out in batch.accepted if out.io is not None)
    session.flush()


@dataclass(frozen=True, slots=True)
class _Target:
    """A submission's project as known before the lock: its id and its enterprise's."""

    id: uuid.UUID
    enterprise_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class _Project:
    """What the rules read of a project: ``Project``'s columns, read under the lock."""

    id: uuid.UUID
    enterprise_id: uuid.UUID
    status: ProjectStatus
    allocation_units: int | None


#: Project id -> its enterprise's id, read once per process: a project never moves to
#: another enterprise and is never deleted (its state is read under the lock).
_ENTERPRISE_OF: dict[uuid.UUID, uuid.UUID] = {}
_MAX_REMEMBERED = 100_000
#: Read with each project's locked balance row: whether it has webhooks.
_HOOKED = (exists().where(Webhook.project_id == Project.id),)


@cache
def _projects(pg: bool) -> bulk.Query:
    """Built once (per dialect): a batch only binds its ids."""
    return select(Project.id, Project.enterprise_id).where(bulk.in_list(Project.id, "ids", pg=pg))


@cache
def _keys(pg: bool) -> bulk.Query:
    """The stored jobs of (project, key) pairs, each pair looked up in the unique index
    on (project_id, idempotency_key). On PostgreSQL the pairs are two parallel arrays
    read as rows (``unnest``): ``project_id = ANY(..) AND idempotency_key = ANY(..)``
    was planned as a scan of the project's every job, filtered by key (1.4 ms of the
    server's CPU per batch at 6,000 jobs in the project, growing with it). Each pair is
    a ``LATERAL`` lookup of at most one row (the index is unique): a plain join of the
    pairs with ``job`` was planned, from statistics taken while the table was small, as
    a hash join over a scan of every job (~0.25 ms per batch at 3,000 jobs), and a
    prepared statement keeps its plan until the table is analysed again."""
    columns = (Job.id, Job.project_id, Job.idempotency_key)
    if not pg:
        return select(*columns).where(
            bulk.in_list(Job.project_id, "projects", pg=False),
            bulk.in_list(Job.idempotency_key, "keys", pg=False),
        )
    pairs = (
        func.unnest(
            bindparam("projects", type_=ARRAY(Uuid())),
            bindparam("keys", type_=ARRAY(String())),
        )
        .table_valued("project_id", "key")
        .render_derived(name="wanted", with_types=False)
    )
    found = (
        select(*columns)
        .where(Job.project_id == pairs.c.project_id, Job.idempotency_key == pairs.c.key)
        .limit(literal_column("1"))
        .lateral("found")
    )
    return select(found.c.id, found.c.project_id, found.c.idempotency_key).join_from(
        pairs, found, true()
    )


def _visible(
    session: Session, items: Sequence[Submission], outcomes: list[Outcome]
) -> list[tuple[int, Submission, _Target]]:
    """The items whose project the caller may submit to and whose ``prepare`` passed;
    the others' outcomes get their error (404/403/422)."""
    missing = sorted({i.project_id for i in items} - _ENTERPRISE_OF.keys())
    if missing:
        query = _projects(bulk.is_pg(session))
        for project_id, enterprise_id in bulk.fetch(session, query, {"ids": missing}):
            if len(_ENTERPRISE_OF) >= _MAX_REMEMBERED:
                _ENTERPRISE_OF.clear()
            _ENTERPRISE_OF[project_id] = enterprise_id
    found = {
        i.project_id: _Target(i.project_id, _ENTERPRISE_OF[i.project_id])
        for i in items
        if i.project_id in _ENTERPRISE_OF
    }
    mine: list[tuple[int, Submission, _Target]] = []
    for n, item in enumerate(items):
        try:
            project = found.get(item.project_id)
            if project is None or not item.principal.can_see(project.enterprise_id):
                raise NotFound("project not found")
            item.principal.require_member_of(project.enterprise_id, "project")
            if item.prepared.error is not None:
                raise item.prepared.error
            mine.append((n, item, project))
        except BrokerError as exc:
            outcomes[n].error = exc
    return mine


#: The unique index a stored Idempotency-Key makes an insert fail on.
KEY_INDEX = "uq_job_project_id_idempotency_key"


def key_taken(exc: BaseException) -> bool:
    """Whether ``exc`` is an insert refused because a job with that project and
    Idempotency-Key is stored (``accept`` without ``stored_keys``)."""
    if not isinstance(exc, IntegrityError):
        return False
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == KEY_INDEX


def _stored_keys(
    session: Session, items: Sequence[Submission]
) -> dict[tuple[uuid.UUID, str], Job | JobRow]:
    """The stored jobs of the items' Idempotency-Keys, by (project, key)."""
    wanted = {(i.project_id, i.idempotency_key) for i in items if i.idempotency_key}
    if not wanted:
        return {}
    pg = bulk.is_pg(session)
    if pg:  # the pairs themselves
        pairs = sorted(wanted)
        params = {"projects": [p for p, _ in pairs], "keys": [k for _, k in pairs]}
    else:  # each list alone; the pairs are picked below
        params = {
            "projects": sorted({p for p, _ in wanted}),
            "keys": sorted({k for _, k in wanted}),
        }
    rows = bulk.fetch(session, _keys(pg), params)
    ids = [row[0] for row in rows if (row[1], row[2]) in wanted]
    if not ids:  # the usual case: no replay, no Job object loaded
        return {}
    jobs = session.scalars(select(Job).where(Job.id.in_(ids)))
    return {(job.project_id, job.idempotency_key or ""): job for job in jobs}


def _accept_one(
    session: Session,
    item: Submission,
    target: _Target,
    batch: _Batch,
    weights: brokering.Weights,
    workspace: workspaces.WorkspaceConfig | None,
) -> Outcome:
    req, prep = item.req, item.prepared
    key = None if item.idempotency_key is None else (target.id, item.idempotency_key)
    if key is not None and key in batch.keys:
        prior = batch.keys[key]
        if prior.request_hash != prep.digest:
            raise IdempotencyMismatch(
                "Idempotency-Key was already used with a different request body"
            )
        return Outcome(prior, None, created=False)
    ent = batch.enterprises.get(target.enterprise_id)
    if ent is None:
        raise NotFound("enterprise not found")
    ent_row = batch.counters.get((ent.id, None))
    proj_row = batch.counters.get((ent.id, target.id))
    if ent_row is None or proj_row is None or proj_row.project_status is None:
        raise NotFound("balance not found")
    # The project as it is under the lock (read before it, it may have changed since).
    status, allocation = proj_row.project_status, proj_row.allocation_units
    project = _Project(target.id, target.enterprise_id, status, allocation)
    projects.require_active(project)
    depends_on = dependencies.check_request(session, ent.id, req.depends_on)
    if ent.status is not EnterpriseStatus.ACTIVE:
        raise Conflict("the enterprise is suspended")
    cap, used = ent.capacity_cap_mflops, batch.in_use.get(ent.id)
    left = None if cap is None or used is None else cap - used
    decision = brokering.choose_in(batch.snap, req, weights, capacity_left_mflops=left)
    tenants.require_submit_user(ent, decision.chosen.cluster)  # 409 now, not a rejection later
    job = _new_job(item, project, decision, depends_on)
    if req.inputs is not None or req.outputs is not None:
        session.flush()  # a workspace row an earlier item added is found, not added twice
    io = None
    if req.inputs is not None or req.outputs is not None or req.callback_url is not None:
        stored = session.get(Project, project.id)  # the few with data movement
        assert stored is not None
        io = staging.io_for(session, _as_job(job), stored, req, workspace)  # inputs must exist
    if io is not None:
        bulk.fill(io)  # added after the jobs are inserted, read (outbox) before
    ent_row.changed = proj_row.changed = True  # a refusal may still roll the project's period
    wanted = job.nodes * job.array_width * job.rate_mflops
    period = ledger.reserve(ent_row, proj_row, ent, project, job.hold_units, wanted, used)
    # Accepted: from here on, only rows to write.
    out = Outcome(job, io, created=True)
    batch.accepted.append(out)
    batch.holds.append(
        bulk.complete(
            LedgerEntry,
            ledger.hold_entry(ent.id, project.id, job.id, job.hold_units, period, job.submitted_by),
        )
    )
    audit_row = audit.row(
        item.principal,
        "job.submit",
        "job",
        job.id,
        enterprise_id=ent.id,
        cluster=job.cluster,
        partition=job.partition,
    )
    batch.audits.append(bulk.complete(AuditEvent, audit_row))
    if prep.array is not None:
        batch.tasks.extend(_task_rows(job.id, prep.array.indices))
    batch.depends.extend(dependencies.rows_of(job.id, depends_on))
    if used is not None:
        batch.in_use[ent.id] = used + wanted
    if key is not None:
        batch.keys[key] = job
    return out


def _new_job(
    item: Submission,
    project: _Project,
    decision: brokering.RoutingDecision,
    depends_on: list[dict[str, str]],
) -> JobRow:
    req, prep = item.req, item.prepared
    rate = decision.chosen.rate_mflops
    now = utcnow()
    row = JobRow(
        id=uuid.uuid4(),
        enterprise_id=project.enterprise_id,
        project_id=project.id,
        submitted_by=item.principal.actor,
        idempotency_key=item.idempotency_key,
        request_hash=prep.digest,
        name=req.name,
        script=prep.script,
        warnings=prep.warnings,
        nodes=req.nodes,
        ntasks=req.ntasks,
        cpus_per_task=req.cpus_per_task,
        memory_mb=req.memory_mb,
        gpus_per_node=req.gpus_per_node,
        time_limit_minutes=req.time_limit_minutes,
        environment=prep.environment or {},
        working_directory=prep.working_directory,
        qos=req.qos,
        reservation=req.reservation,
        cluster=decision.chosen.cluster.name,
        partition=decision.chosen.partition.name,
        routing={
            **decision.as_json(),
            "explicit": req.cluster is not None or req.partition is not None,
            "constraints": req.constraints or [],
        },
        state=JobStatus.ACCEPTED,
        rate_mflops=rate,
        hold_units=brokering.hold_units(req, rate),
        array=req.array,
        array_tasks=None if prep.array is None else len(prep.array.indices),
        array_width=1 if prep.array is None else prep.array.width,
        depends_on=depends_on,
        created_at=now,
        updated_at=now,
    )
    bulk.complete(Job, row.row)
    return row


def _task_rows(job_id: uuid.UUID, indices: Sequence[int]) -> list[dict[str, object]]:
    return [
        bulk.complete(
            JobTask,
            {"job_id": job_id, "index": i, "state": JobStatus.ACCEPTED, "node_list": []},
        )
        for i in indices
    ]
