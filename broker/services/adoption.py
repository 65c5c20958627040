"""Whose is a tagged scheduler job: adoption by tag checks the account and the user.

The tag (``--comment=broker:<job uuid>``) is what the broker writes, but anyone who can
submit to the cluster can write the same comment, and a job's UUID is no secret (it is
in URLs, webhooks, the tenant's own listings). Adopting such a planted job would bind
the broker's job to it: its usage charged to the tenant, its output served as theirs.
So a tagged job is the broker's only when it runs under the account and the POSIX user
the broker submits that job with; any other is ignored, and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..models import Enterprise, Job, Project
from . import slurm_sync

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """The scheduler account and POSIX user the broker submits a job under."""

    account: str
    user: str


def owner_of(session: Session, job: Job) -> Owner:
    """As ``scheduling.begin_submission`` builds the spec: the project's account, else
    the enterprise's, and the enterprise's POSIX user."""
    ent = session.get(Enterprise, job.enterprise_id)
    assert ent is not None  # FK guarantees it
    project = session.get(Project, job.project_id)
    account = slurm_sync.project_account(ent, project) if project else ent.slurm_account
    return Owner(account, ent.posix_user)


def adoptable(session: Session, job: Job, info: sa_.JobInfo) -> bool:
    """Whether the scheduler job ``info``, carrying ``job``'s tag, is the broker's own.

    A job whose scheduler does not say its account or user is not adopted either: the
    worst a wrong refusal costs is a second submission (reconcile reports it as a
    duplicate), while a wrong adoption bills a tenant for someone else's job.
    """
    owner = owner_of(session, job)
    account_ok = (info.account or "").lower() == owner.account.lower()
    if account_ok and info.user == owner.user:
        return True
    log.warning(
        "ignoring scheduler job %s on %s: it carries the tag of job %s but runs as"
        " user %r, account %r (the broker submits it as %r, account %r)",
        info.job_id,
        job.cluster,
        job.id,
        info.user,
        info.account,
        owner.user,
        owner.account,
    )
    return False
