"""Reconciliation: what the scheduler runs with a broker tag versus what the database says.

After a crash between ``submit`` and the commit that records the scheduler's job id,
the scheduler has a job the database does not know as submitted. ``reconcile`` finds
jobs by tag and adopts them; it reports (and optionally cancels) duplicates and jobs
whose tag names no broker job. The worker does the same for each job before any
resubmission, so a job is never submitted twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..models import Job, JobStatus
from . import adoption, scheduling

#: Tags of node-validation jobs (see services.validation), not tenants' jobs.
VALIDATION_TAG = "validate:"


@dataclass
class ReconcileReport:
    cluster: str
    seen: int = 0
    adopted: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    #: (tag, scheduler id) of jobs carrying a broker job's tag under another account or
    #: user: not the broker's, left alone.
    foreign: list[tuple[str, str]] = field(default_factory=list)


def reconcile(
    session: Session,
    adapter: sa_.SchedulerAdapter,
    cluster: str,
    *,
    since: datetime,
    now: datetime,
    dry_run: bool,
    cancel_strays: bool = False,
) -> ReconcileReport:
    """Adopt tagged jobs the database lost track of; report the rest."""
    report = ReconcileReport(cluster)
    tagged = adapter.list_tagged(since)
    report.seen = len(tagged)
    for tag, info in sorted(tagged.items()):
        if tag.startswith(VALIDATION_TAG):
            continue  # the broker's own node-validation jobs
        try:
            job_id = uuid.UUID(tag)
        except ValueError:
            report.orphans.append((tag, info.job_id))
            continue
        job = session.get(Job, job_id)
        if job is None or job.cluster != cluster:
            report.orphans.append((tag, info.job_id))
            if cancel_strays and not dry_run:
                adapter.cancel(info.job_id)
                report.cancelled.append(info.job_id)
            continue
        if job.scheduler_job_id == info.job_id:
            continue
        if not adoption.adoptable(session, job, info):
            report.foreign.append((tag, info.job_id))
            continue
        if job.scheduler_job_id is None and job.state is JobStatus.ACCEPTED:
            report.adopted.append((str(job.id), info.job_id))
            if not dry_run:
                scheduling.mark_submitted(job, info.job_id, now)
            continue
        report.duplicates.append((str(job.id), info.job_id))
        if cancel_strays and not dry_run:
            adapter.cancel(info.job_id)
            report.cancelled.append(info.job_id)
    return report
