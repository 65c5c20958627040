"""Job dependencies: a job waits for others of its enterprise to end (``depends_on``).

A dependent job is accepted (and its quota held) at once. When the worker comes to
submit it, each parent is judged (``verdict``):

* ended as the condition asks (``afterok``: completed, every task of an array;
  ``afternotok``: ended any other way; ``afterany``: ended): met;
* ended otherwise: never met: the job is cancelled with that reason and its hold
  released;
* live on the same cluster, under a scheduler that honours dependencies: Slurm's
  ``--dependency`` carries it (the job is queued there at once);
* anything else (not yet submitted, or on another cluster): the broker holds the job,
  state ``pending`` with the reason ``dependency: ...``, and looks again each pass.

A job submitted with Slurm's ``--dependency`` whose parent then ends the wrong way
would pend forever (``DependencyNeverSatisfied``): ``never_met`` finds such jobs and
the worker cancels them with the reason. Parents must exist and belong to the
enterprise when the job is submitted; a job cannot name itself or a later job, so
dependencies never form a cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import InvalidInput
from ..models import LIVE_STATES, DependencyCondition, Job, JobDependency, JobStatus
from ..schemas.jobs import Dependency

Verdict = Literal["met", "wait", "never"]


def verdict(parent: Job, condition: DependencyCondition) -> Verdict:
    """Whether ``parent``'s state meets ``condition`` now, may later, or never will."""
    if not parent.state.terminal:
        return "wait"
    if condition is DependencyCondition.AFTERANY:
        return "met"
    ok = parent.state is JobStatus.COMPLETED
    if condition is DependencyCondition.AFTEROK:
        return "met" if ok else "never"
    return "never" if ok else "met"


def _never_reason(parent: Job, condition: DependencyCondition) -> str:
    return (
        f"dependency can no longer be met: job {parent.id} ({parent.name}) ended "
        f"{parent.state.value}, and the job waited for it {condition.value}"
    )


def check_request(
    session: Session, enterprise_id: uuid.UUID, deps: Sequence[Dependency] | None
) -> list[dict[str, str]]:
    """The spec's ``depends_on`` if every parent is a job of the enterprise whose
    condition can still be met (``InvalidInput`` naming ``depends_on[i]`` otherwise)."""
    if not deps:
        return []
    seen: set[uuid.UUID] = set()
    parents = {
        j.id: j for j in session.scalars(select(Job).where(Job.id.in_([d.job_id for d in deps])))
    }
    out = []
    for i, dep in enumerate(deps):
        field = f"depends_on[{i}].job_id"
        if dep.job_id in seen:
            raise InvalidInput(field, f"job {dep.job_id} is named twice")
        seen.add(dep.job_id)
        parent = parents.get(dep.job_id)
        if parent is None or parent.enterprise_id != enterprise_id:
            raise InvalidInput(field, f"no job {dep.job_id} of this enterprise")
        if verdict(parent, dep.condition) == "never":
            raise InvalidInput(f"depends_on[{i}]", _never_reason(parent, dep.condition))
        out.append({"job_id": str(dep.job_id), "condition": dep.condition.value})
    return out


def rows_of(job_id: uuid.UUID, depends_on: Sequence[dict[str, str]]) -> list[dict[str, object]]:
    """The ``JobDependency`` rows of a job's ``depends_on`` (they index it for the
    worker's queries)."""
    return [
        {
            "job_id": job_id,
            "parent_id": uuid.UUID(dep["job_id"]),
            "condition": DependencyCondition(dep["condition"]),
        }
        for dep in depends_on
    ]


@dataclass(frozen=True)
class Readiness:
    """``ready`` (with Slurm's ``--dependency`` for live parents on its cluster, or
    None), ``wait`` or ``never``, with the reason to show."""

    state: Literal["ready", "wait", "never"]
    reason: str = ""
    native: str | None = None


def readiness(session: Session, job: Job, *, native: bool) -> Readiness:
    """Whether ``job`` may be submitted now (see the module); ``native``: its cluster's
    scheduler honours ``--dependency``."""
    rows = session.execute(
        select(JobDependency, Job)
        .join(Job, Job.id == JobDependency.parent_id)
        .where(JobDependency.job_id == job.id)
        .order_by(Job.created_at)
    ).all()
    slurm: list[str] = []
    waiting: list[str] = []
    for dep, parent in rows:
        found = verdict(parent, dep.condition)
        if found == "never":
            return Readiness("never", _never_reason(parent, dep.condition))
        if found == "met":
            continue
        if (
            native
            and parent.cluster == job.cluster
            and parent.scheduler_job_id is not None
            and parent.state in LIVE_STATES
        ):
            slurm.append(f"{dep.condition.value}:{parent.scheduler_job_id}")
        else:
            where = "not yet submitted" if parent.scheduler_job_id is None else parent.cluster
            waiting.append(f"job {parent.id} ({parent.name}, {where}) {dep.condition.value}")
    if waiting:
        return Readiness("wait", ("dependency: waiting for " + "; ".join(waiting))[:1000])
    return Readiness("ready", native=",".join(slurm) or None)


def never_met(session: Session) -> list[tuple[uuid.UUID, str]]:
    """Jobs in a scheduler (not cancelled yet) that one of their parents can no longer
    satisfy, with the reason: Slurm would keep them pending forever."""
    child = select(Job).where(
        Job.state.in_(LIVE_STATES),
        Job.scheduler_job_id.is_not(None),
        Job.cancel_requested.is_(False),
        Job.id.in_(select(JobDependency.job_id)),
    )
    out = []
    for job in session.scalars(child):
        found = readiness(session, job, native=True)
        if found.state == "never":
            out.append((job.id, found.reason))
    return out
