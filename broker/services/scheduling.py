"""The worker's rules: turn accepted jobs into scheduler jobs, follow them, settle them.

Crash safety: a job's ``submit_attempts`` is committed *before* the adapter is called,
so after a crash a job with attempts > 0 is first looked up by its tag
(``list_tagged``) and adopted if the scheduler has it; it is submitted again only when
the scheduler has no job carrying its tag. Settlement goes through ``ledger.settle``,
which charges a job at most once.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..errors import Conflict, InvalidInput
from ..models import LIVE_STATES, Cluster, Enterprise, Job, JobIO, JobStatus, JobTask, Project
from ..units import units_to_pfh
from . import (
    billing,
    brokering,
    collection,
    dependencies,
    end_states,
    ledger,
    names,
    slurm_sync,
    staging,
)
from .adoption import adoptable

log = logging.getLogger(__name__)

TAG_LOOKBACK = timedelta(minutes=10)


def tag_of(job: Job) -> str:
    """The tag the adapters carry (Slurm: ``--comment=broker:<tag>``): the job's UUID."""
    return str(job.id)


def due_for_submit(session: Session, now: datetime, limit: int) -> list[Job]:
    """Jobs to submit: accepted ones, and those held for their dependencies."""
    held = (Job.state == JobStatus.PENDING) & Job.scheduler_job_id.is_(None)
    query = (
        select(Job)
        .where((Job.state == JobStatus.ACCEPTED) | held)
        .where((Job.next_attempt_at.is_(None)) | (Job.next_attempt_at <= now))
        .order_by(Job.created_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def prepare_job_dir(job: Job, cluster: Cluster, posix_user: str) -> None:
    """Create the job's directory ``<scratch>/<enterprise>/<job>`` (``OSError`` if unsafe).

    Run as root with the enterprise's user known here, the enterprise's folder is the
    broker's, mode 0710 with the user's group (its jobs pass through; they cannot
    rename or plant anything in it, and other tenants cannot even look), and the job's
    folder is the user's, 0700. Run as root without that user here, the enterprise's
    folder is 0711 (the local adapter's fallback user, to whom it gives the job's
    folder, passes through; nobody lists it). Otherwise (jobs run as the broker's
    user) both are 0700. The spec's ``working_directory`` is made inside the job's
    folder like it, one component at a time. Nothing is created or changed through a
    link.
    """
    scratch = Path(cluster.scratch_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    ids = staging.owner_ids(posix_user)
    top = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ent = _own_dir(top, str(job.enterprise_id), _enterprise_mode(ids), ids and (0, ids[1]))
        try:
            work = _own_dir(ent, str(job.id), 0o700, ids)
            try:
                for part in job.working_directory.split("/") if job.working_directory else []:
                    below = _own_dir(work, part, 0o700, ids)
                    os.close(work)
                    work = below
            finally:
                os.close(work)
        finally:
            os.close(ent)
    finally:
        os.close(top)
    path = scratch / str(job.enterprise_id) / str(job.id)
    job.work_dir = str(path)
    suffix = "_%a" if job.array else ""  # each task of an array its own (Slurm's %a)
    job.stdout_path = str(path / f"stdout{suffix}.txt")
    job.stderr_path = str(path / f"stderr{suffix}.txt")


def _enterprise_mode(ids: tuple[int, int] | None) -> int:
    if ids is not None:
        return 0o710
    return 0o711 if os.geteuid() == 0 else 0o700


def _own_dir(dir_fd: int, name: str, mode: int, owner: tuple[int, int] | None) -> int:
    """Open (creating it if needed) directory ``name`` without following a link, and set
    its mode and owner through the descriptor."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=dir_fd)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        raise OSError(f"{name} in the scratch directory is not a directory (a link?)") from exc
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def spec_for(
    job: Job,
    posix_user: str,
    account: str | None = None,
    *,
    array: str | None = None,
    dependency: str | None = None,
) -> sa_.JobSpec:
    """What the adapter submits: the stored spec, the broker's identity and paths.

    The job starts in its ``working_directory`` (made by ``prepare_job_dir``); its
    output files stay in its directory's root. Constraints are all required
    (Slurm's ``a&b``). ``array``: the tasks to run (``array_to_submit``);
    ``dependency``: Slurm's ``--dependency`` (``dependencies.readiness``).
    """
    constraints = (job.routing or {}).get("constraints") or []
    work = job.work_dir
    if job.working_directory:
        work = str(Path(job.work_dir, job.working_directory))
    return sa_.JobSpec(
        name=names.slurm_job_name(job.name),
        script=job.script,
        time_limit_minutes=job.time_limit_minutes,
        nodes=job.nodes,
        ntasks=job.ntasks,
        cpus_per_task=job.cpus_per_task,
        memory_mb=job.memory_mb,
        gpus_per_node=job.gpus_per_node,
        partition=job.partition,
        constraints="&".join(constraints) or None,
        qos=job.qos,
        reservation=job.reservation,
        account=account,
        user=posix_user,
        tag=tag_of(job),
        working_dir=work,
        job_dir=job.work_dir,
        stdout_path=job.stdout_path,
        stderr_path=job.stderr_path,
        environment=dict(job.environment or {}),
        broker_job_id=str(job.id),
        array=array,
        dependency=dependency,
        # A shared partition's jobs share nodes (charged by GPU share); else whole nodes.
        exclusive=not (job.routing or {}).get("shared", False),
    )


def array_to_submit(session: Session, job: Job) -> str | None:
    """The array's tasks still wanted (those cancelled before submission left out), in
    Slurm's syntax with the submitted throttle; None for a plain job."""
    if not job.array:
        return None
    spec = sa_.parse_array(job.array, max_tasks=brokering.MAX_ARRAY_TASKS)
    wanted = session.scalars(
        select(JobTask.index)
        .where(JobTask.job_id == job.id, JobTask.cancel_requested.is_(False))
        .order_by(JobTask.index)
    )
    return sa_.ArraySpec(tuple(wanted), spec.throttle).slurm()


def give_to(path: Path, user: str) -> None:
    """Hand a directory to a POSIX user when we are root and the user exists here."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return  # embedded default: no such POSIX user here, the job runs as the broker
    os.chown(path, pw.pw_uid, pw.pw_gid)


def enterprise_of(session: Session, job: Job) -> Enterprise:
    ent = session.get(Enterprise, job.enterprise_id)
    assert ent is not None  # FK guarantees it
    return ent


@dataclass(frozen=True, slots=True)
class Known:
    """The rows a round of submissions needs, read together (``known_for``) rather than
    job by job; holding them also keeps them in the session's (weak) identity map."""

    enterprises: dict[uuid.UUID, Enterprise]
    projects: dict[uuid.UUID, Project]
    clusters: dict[str, Cluster]
    inputs: dict[uuid.UUID, JobIO]  # a job missing here has no JobIO row


def known_for(session: Session, jobs: Sequence[Job]) -> Known:
    """Four queries for any number of jobs (``begin_submission``'s ``known``)."""

    def by(model: Any, column: Any, keys: set[Any]) -> dict[Any, Any]:
        if not keys:
            return {}
        rows = session.scalars(select(model).where(column.in_(sorted(keys, key=str))))
        return {getattr(row, column.key): row for row in rows}

    return Known(
        by(Enterprise, Enterprise.id, {j.enterprise_id for j in jobs}),
        by(Project, Project.id, {j.project_id for j in jobs}),
        by(Cluster, Cluster.name, {j.cluster for j in jobs if j.cluster}),
        by(JobIO, JobIO.job_id, {j.id for j in jobs}),
    )


class Step(enum.StrEnum):
    """What ``begin_submission`` decided for a job (the value names the pass's counter)."""

    ADOPTED = "adopted"  # an earlier attempt reached the scheduler: its job is adopted
    CANCELLED = "cancelled"  # cancelled before submission, or a dependency never met
    REJECTED = "rejected"  # its directory or inputs could not be prepared
    HELD = "held"  # waits for its dependencies (looked at again next pass)
    SUBMIT = "submit"  # to be submitted now, with its spec and stage-in plan


def begin_submission(
    session: Session,
    job: Job,
    tagged: dict[str, sa_.JobInfo],
    now: datetime,
    *,
    native_dependencies: bool = False,
    known: Known | None = None,
) -> tuple[Step, sa_.JobSpec | None, staging.StagePlan | None]:
    """Decide what to do with a job awaiting submission before calling the scheduler.

    Returns ``(ADOPTED | CANCELLED | REJECTED | HELD, None, None)`` when settled or
    held (its dependencies not met yet) here, or ``(SUBMIT, spec, stage
    plan)`` after counting the attempt: the caller commits, *then* copies the inputs
    (``staging.run_stage_in``, if there is a plan) and submits.
    ``native_dependencies``: the cluster's scheduler honours ``--dependency``.
    ``known``: the rows read together for a round of jobs (``known_for``).
    """
    found = tagged.get(tag_of(job)) if job.submit_attempts else None
    if found is not None and not adoptable(session, job, found):
        found = None  # a copy of our tag under another account or user: not ours (logged)
    if found is not None:  # an earlier attempt reached the scheduler: adopt, never resubmit
        mark_submitted(job, found.job_id, now)
        return Step.ADOPTED, None, None
    if job.cancel_requested:
        job.state, job.ended_at = JobStatus.CANCELLED, now
        job.reason = "cancelled before submission"
        ledger.settle(session, job, 0, memo="cancelled before submission")
        job.settled_at = now
        return Step.CANCELLED, None, None
    ready = dependencies.Readiness("ready")
    if job.depends_on:
        ready = dependencies.readiness(session, job, native=native_dependencies)
        if ready.state == "never":
            job.cancel_requested, job.cancel_reason = True, ready.reason[:300]
            cancel_unsubmitted(session, job, ready.reason, now)
            return Step.CANCELLED, None, None
        if ready.state == "wait":
            job.state, job.reason = JobStatus.PENDING, ready.reason
            return Step.HELD, None, None
    job.submit_attempts += 1
    if known is None:
        known = known_for(session, [job])
    ent = known.enterprises[job.enterprise_id]  # FK guarantees it
    cluster = known.clusters.get(job.cluster or "")
    try:
        if cluster is None:
            raise OSError(f"cluster {job.cluster!r} is no longer configured")
        prepare_job_dir(job, cluster, ent.posix_user)
    except OSError as exc:
        reject(session, job, f"cannot prepare the job directory: {exc}", now)
        return Step.REJECTED, None, None
    try:
        plan = staging.plan_stage_in(
            session, job, cluster, ent.posix_user, io=known.inputs.get(job.id)
        )
    except staging.StagingError as exc:
        fail_stage_in(session, job, str(exc), now)
        return Step.REJECTED, None, None
    project = known.projects.get(job.project_id)
    account = slurm_sync.project_account(ent, project) if project else ent.slurm_account
    spec = spec_for(
        job,
        ent.posix_user,
        account,
        array=array_to_submit(session, job),
        dependency=ready.native,
    )
    return Step.SUBMIT, spec, plan


def awaiting_submission(job: Job) -> bool:
    """Accepted, or held by the broker for its dependencies: not in a scheduler yet."""
    return job.scheduler_job_id is None and job.state in (JobStatus.ACCEPTED, JobStatus.PENDING)


def cancel_unsubmitted(session: Session, job: Job, reason: str, now: datetime) -> None:
    """End a job that never reached a scheduler: nothing ran, its hold comes back."""
    job.state, job.reason, job.ended_at = JobStatus.CANCELLED, reason[:1000], now
    for task in session.scalars(select(JobTask).where(JobTask.job_id == job.id)):
        if not task.state.terminal:
            task.state, task.reason, task.ended_at = JobStatus.CANCELLED, reason[:1000], now
            task.charge_units = 0
    ledger.settle(session, job, 0, memo=reason[:500])
    job.settled_at = now


def fail_stage_in(session: Session, job: Job, error: str, now: datetime) -> None:
    """Reject a job whose inputs could not be staged (its hold is released)."""
    staging.record_stage_in(session, job.id, staging.failed_stage_in(error))
    if job.work_dir:
        shutil.rmtree(job.work_dir, ignore_errors=True)
    reject(session, job, f"stage-in failed: {error}", now)


def mark_submitted(job: Job, scheduler_job_id: str, now: datetime) -> None:
    job.scheduler_job_id = scheduler_job_id
    job.state = JobStatus.PENDING
    job.submitted_at = now
    job.next_attempt_at = None
    job.reason = ""


def backoff(job: Job, now: datetime, error: str, base_s: float, max_s: float) -> None:
    delay = min(max_s, base_s * 2 ** max(0, job.submit_attempts - 1))
    job.next_attempt_at = now + timedelta(seconds=delay)
    job.reason = f"scheduler unavailable, retrying: {error}"[:1000]


def reroute(session: Session, job: Job, reason: str, weights: brokering.Weights) -> bool:
    """Move a job the scheduler refused to another cluster, once, under the same hold.

    Only jobs the broker routed (not an explicit cluster or partition) move, and only
    to partitions whose hold fits in the one already taken: no second HOLD entry.
    """
    routing = dict(job.routing or {})
    if routing.get("explicit") or routing.get("rerouted_from"):
        return False
    req = brokering.JobRequest(
        nodes=job.nodes,
        ntasks=job.ntasks,
        cpus_per_task=job.cpus_per_task,
        memory_mb=job.memory_mb,
        gpus_per_node=job.gpus_per_node,
        time_limit_minutes=job.time_limit_minutes,
        constraints=routing.get("constraints") or None,
        qos=job.qos,
        reservation=job.reservation,
    )
    try:
        decision = brokering.choose(
            session, req, weights, exclude={job.cluster}, max_hold_units=job.hold_units
        )
    except InvalidInput:
        return False
    job.routing = {
        **decision.as_json(),
        "explicit": False,
        "constraints": routing.get("constraints", []),
        "rerouted_from": {
            "cluster": job.cluster,
            "partition": job.partition,
            "reason": reason[:500],
        },
    }
    job.cluster, job.partition = decision.chosen.cluster.name, decision.chosen.partition.name
    job.rate_mflops = decision.chosen.rate_mflops
    job.next_attempt_at, job.reason = None, f"re-routed: {reason}"[:1000]
    return True


def reject(session: Session, job: Job, reason: str, now: datetime) -> None:
    job.state, job.reason, job.ended_at = JobStatus.REJECTED, reason[:1000], now
    ledger.settle(session, job, 0, memo="rejected by the scheduler")
    job.settled_at = now


_STATE_MAP = {
    sa_.JobState.PENDING: JobStatus.PENDING,
    sa_.JobState.RUNNING: JobStatus.RUNNING,
    sa_.JobState.SUSPENDED: JobStatus.SUSPENDED,
    sa_.JobState.COMPLETED: JobStatus.COMPLETED,
    sa_.JobState.FAILED: JobStatus.FAILED,
    sa_.JobState.CANCELLED: JobStatus.CANCELLED,
    sa_.JobState.TIMEOUT: JobStatus.TIMEOUT,
    sa_.JobState.NODE_FAIL: JobStatus.NODE_FAIL,
    sa_.JobState.BOOT_FAIL: JobStatus.BOOT_FAIL,
    sa_.JobState.PREEMPTED: JobStatus.PREEMPTED,
    sa_.JobState.OUT_OF_MEMORY: JobStatus.OUT_OF_MEMORY,
    sa_.JobState.UNKNOWN: JobStatus.UNKNOWN,
}


def apply_info(
    session: Session,
    job: Job,
    info: sa_.JobInfo,
    now: datetime,
    *,
    center_failures: billing.CenterFailurePolicy = "none",
) -> bool:
    """Record what the scheduler says; settle on a terminal state. True if settled now.

    A requeued job is pending again under the same id and is followed on: it is settled
    at its final end, once, for all its runs (``settle``). An array's tasks are followed
    one by one (``JobTask``) and the array is settled when the last one ends.
    ``center_failures`` is ``BROKER_CHARGE_CENTER_FAILURES``.
    """
    if job.state.terminal:
        return False
    job.unseen_since = None
    job.state = _STATE_MAP[info.state]
    job.native_state = info.native_state[:64]
    if info.nodes:
        job.node_list = list(info.nodes)
    job.started_at = info.start_time or job.started_at
    charged = center_failures == "full"
    tasks = _apply_tasks(session, job, info, now, charged) if job.array else []
    if not info.state.terminal:
        job.reason = end_states.array_reason(tasks) if job.array else end_states.live_reason(info)
        return False
    job.exit_code = info.exit_code
    job.ended_at = info.end_time or now
    if job.array:
        # Its end is its tasks' (those cancelled before submission too): completed when
        # all completed, else the first unsuccessful task's end.
        bad = next((t for t in tasks if t.state is not JobStatus.COMPLETED), None)
        job.state = JobStatus.COMPLETED if bad is None else bad.state
        settled = settle_array(session, job, info, tasks, now, center_failures=center_failures)
        job.reason = end_states.array_reason(tasks)
    else:
        settled = settle(session, job, info, now, center_failures=center_failures)
        job.reason = end_states.end_reason(job, job.state, info, center_failures_charged=charged)
    collection.mark_due(session, job)  # the worker collects outputs after this transaction
    return settled


@dataclass(frozen=True)
class Seen:
    """What the broker last recorded of a live job, read before asking the scheduler:
    a pass opens a transaction only for the jobs whose answer differs (``changed``)."""

    job_id: uuid.UUID
    state: JobStatus
    native_state: str
    reason: str
    node_list: tuple[str, ...]
    started_at: datetime | None
    unseen: bool
    array: bool

    @classmethod
    def live(cls, session: Session, cluster: str) -> dict[str, Seen]:
        """The cluster's live jobs in the scheduler, by scheduler id: columns, not ORM
        objects (a pass reads thousands and changes few)."""
        rows = session.execute(
            select(
                Job.id,
                Job.scheduler_job_id,
                Job.state,
                Job.native_state,
                Job.reason,
                Job.node_list,
                Job.started_at,
                Job.unseen_since,
                Job.array,
            ).where(
                Job.cluster == cluster,
                Job.state.in_(LIVE_STATES),
                Job.scheduler_job_id.is_not(None),
            )
        )
        return {
            sched: cls(
                job_id,
                state,
                native,
                reason,
                tuple(nodes or ()),
                started,
                unseen is not None,
                bool(array),
            )
            for job_id, sched, state, native, reason, nodes, started, unseen, array in rows
            if sched
        }

    def changed(self, info: sa_.JobInfo) -> bool:
        """Whether ``apply_info`` would record anything new."""
        if self.array or self.unseen or info.state.terminal:
            return True
        return (
            _STATE_MAP[info.state] is not self.state
            or info.native_state[:64] != self.native_state
            or end_states.live_reason(info) != self.reason
            or (bool(info.nodes) and tuple(info.nodes) != self.node_list)
            or (info.start_time or self.started_at) != self.started_at
        )


def mark_unseen(session: Session, job: Job, now: datetime, grace_s: float) -> bool:
    """The scheduler (controller and accounting) did not know the job this pass. Past
    ``grace_s`` of that, it is ``lost``: its hold is released (nothing is charged until an
    operator resolves it: ``resolve_lost``). True if it became lost now."""
    if job.state.terminal:
        return False
    if job.unseen_since is None:
        job.unseen_since = now
        return False
    if (now - job.unseen_since).total_seconds() < grace_s:
        return False
    since = job.unseen_since.strftime("%Y-%m-%d %H:%M:%S UTC")
    job.state, job.ended_at = JobStatus.LOST, now
    job.reason = (
        f"lost: neither the controller nor the accounting of {job.cluster} has known "
        f"scheduler job {job.scheduler_job_id} since {since}; its hold is released and "
        "an operator resolves it (charge from evidence, or close)"
    )
    for task in session.scalars(select(JobTask).where(JobTask.job_id == job.id)):
        if not task.state.terminal:
            task.state, task.ended_at, task.reason = JobStatus.LOST, now, "lost with its array"
    ledger.release_hold(session, job, f"lost: unseen since {since}")
    return True


def resolve_lost(
    session: Session,
    job: Job,
    *,
    elapsed_s: int | None,
    nodes: Sequence[str],
    memo: str,
    now: datetime,
) -> None:
    """An operator's resolution of a lost job: charged for ``elapsed_s`` on ``nodes``
    (its recorded nodes if none given) from its start, as any run is priced; or, with
    ``elapsed_s`` None, closed uncharged. Either way the job is settled, once."""
    if job.state is not JobStatus.LOST or job.settled_at is not None:
        raise Conflict("only a lost job not yet resolved can be resolved")
    if elapsed_s is None:
        ledger.settle(session, job, 0, memo=f"lost job closed: {memo}"[:500])
    else:
        start = job.started_at or job.submitted_at or now
        run = billing.Run(start, elapsed_s, tuple(nodes or job.node_list), JobStatus.COMPLETED)
        # Its hold was released when it was lost: the charge comes from what the
        # enterprise has left now, which it must not exceed (the operator grants first).
        wanted = min(
            sum(ln.units for ln in billing.price(session, job, start, elapsed_s, run.nodes)),
            job.hold_units,
        )
        left = ledger.available_units(session, job.enterprise_id)
        if wanted > left:
            raise Conflict(
                f"charging {units_to_pfh(wanted)} PFlop·h would take the enterprise below "
                f"zero (available {units_to_pfh(left)}): grant or adjust first, or charge less"
            )
        job.elapsed_s = elapsed_s
        billing.settle_runs(session, job, [run], "full")
    job.settled_at = now
    how = "closed uncharged" if elapsed_s is None else f"charged {elapsed_s} s from evidence"
    job.reason = f"{job.reason}; resolved by an operator: {how} ({memo})"[:1000]


def _apply_tasks(
    session: Session, job: Job, info: sa_.JobInfo, now: datetime, charged: bool
) -> list[JobTask]:
    """Record each task's state; once the array has ended, a task the scheduler never
    reported (it cannot have run) ends cancelled."""
    rows = list(
        session.scalars(select(JobTask).where(JobTask.job_id == job.id).order_by(JobTask.index))
    )
    by_index = {t.index: t for t in rows}
    for ti in info.tasks:
        row = by_index.get(ti.array_task_id) if ti.array_task_id is not None else None
        if row is None or row.state.terminal:
            continue
        row.state = _STATE_MAP[ti.state]
        row.native_state = ti.native_state[:64]
        if ti.nodes:
            row.node_list = list(ti.nodes)
        row.started_at = ti.start_time or row.started_at
        if not ti.state.terminal:
            row.reason = end_states.live_reason(ti)
            continue
        row.exit_code = ti.exit_code
        row.ended_at = ti.end_time or now
        row.elapsed_s = sum(r.elapsed_s for r in _runs(ti, row.started_at or now, ()))
        row.reason = end_states.end_reason(
            job,
            row.state,
            ti,
            center_failures_charged=charged,
            by_user=row.cancel_requested or job.cancel_requested,
        )
    if info.state.terminal:
        for row in rows:
            if not row.state.terminal:
                row.state, row.ended_at = JobStatus.CANCELLED, now
                row.reason = "not run: the scheduler reported no such task when the array ended"
    return rows


def settle_array(
    session: Session,
    job: Job,
    info: sa_.JobInfo,
    tasks: list[JobTask],
    now: datetime,
    *,
    center_failures: billing.CenterFailurePolicy = "none",
) -> bool:
    """Charge an array once for every run of every task that started; each task's
    share of the charge is recorded on it (``billing.settle_tasks``)."""
    seen = {ti.array_task_id: ti for ti in info.tasks}
    runs: dict[int, list[billing.Run]] = {}
    for task in tasks:
        ti = seen.get(task.index)
        started = ti is not None and (ti.start_time is not None or bool(ti.runs))
        runs[task.index] = _runs(ti, task.started_at or now, ()) if ti and started else []
    job.elapsed_s = sum(r.elapsed_s for task_runs in runs.values() for r in task_runs)
    shares = billing.settle_tasks(session, job, runs, center_failures)
    if shares is None:
        return False
    for task in tasks:
        task.charge_units = shares.get(task.index, 0)
    job.settled_at = now
    return True


def settle(
    session: Session,
    job: Job,
    info: sa_.JobInfo,
    now: datetime,
    *,
    center_failures: billing.CenterFailurePolicy = "none",
) -> bool:
    """Charge Σ over the job's runs and nodes of node rate × elapsed, exactly once.

    A job requeued by the scheduler ran more than once: ``info`` is its last run and
    ``info.runs`` the earlier ones; each is priced on its own nodes from its own start,
    and runs ended by the center's failures are charged by the policy
    (``billing.settle_runs`` says why). ``job.elapsed_s`` is the time of all runs.
    """
    runs = _runs(info, job.started_at or job.ended_at or now, tuple(job.node_list))
    job.elapsed_s = sum(r.elapsed_s for r in runs)
    if len(runs) > 1:
        job.started_at = min(r.start for r in runs)
    settled = billing.settle_runs(session, job, runs, center_failures)
    if settled:
        job.settled_at = now
    return settled


def _runs(info: sa_.JobInfo, start: datetime, nodes: tuple[str, ...]) -> list[billing.Run]:
    """Every run of a job (or task): the earlier ones that started, then the last."""
    earlier = [
        _run(r, start, nodes)
        for r in info.runs
        if r.start_time is not None  # a run that never started held no node
    ]
    return [*earlier, _run(info, start, nodes)]


def _run(info: sa_.JobInfo, start: datetime, nodes: tuple[str, ...]) -> billing.Run:
    """One run as billing sees it; ``start`` and ``nodes`` where the scheduler gave none."""
    elapsed = info.elapsed_s
    if elapsed is None and info.start_time and info.end_time:
        elapsed = int((info.end_time - info.start_time).total_seconds())
    return billing.Run(
        start=info.start_time or start,
        elapsed_s=max(0, elapsed or 0),
        nodes=tuple(info.nodes) or nodes,
        ended=_STATE_MAP[info.state],
        gpus=info.alloc_gpus,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
