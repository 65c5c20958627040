"""PoC projects: drafted by an enterprise, approved (activated) and closed by the center."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound
from ..models import Balance, Project, ProjectStatus
from . import audit, tenants
from .principal import Principal


def create_project(
    session: Session,
    principal: Principal,
    *,
    enterprise_id: uuid.UUID,
    name: str,
    description: str = "",
    allocation_units: int | None = None,
) -> Project:
    principal.require_enterprise_admin(enterprise_id, "enterprise")
    tenants.get_enterprise(session, principal, enterprise_id)
    exists = select(Project.id).where(Project.enterprise_id == enterprise_id, Project.name == name)
    if session.scalar(exists) is not None:
        raise Conflict(f"the enterprise already has a project named {name!r}")
    project = Project(
        enterprise_id=enterprise_id,
        name=name,
        description=description,
        allocation_units=allocation_units,
    )
    session.add(project)
    session.flush()
    session.add(Balance(enterprise_id=enterprise_id, project_id=project.id))
    audit.record(
        session,
        principal,
        "project.create",
        "project",
        project.id,
        enterprise_id=enterprise_id,
        name=name,
    )
    return project


def get_project(session: Session, principal: Principal, project_id: uuid.UUID) -> Project:
    project = session.get(Project, project_id)
    if project is None or not principal.can_see(project.enterprise_id):
        raise NotFound("project not found")
    return project


def list_projects(
    session: Session,
    principal: Principal,
    *,
    enterprise_id: uuid.UUID | None = None,
    status: ProjectStatus | None = None,
) -> list[Project]:
    query = select(Project).order_by(Project.created_at)
    if not principal.is_staff:
        query = query.where(Project.enterprise_id == principal.enterprise_id)
    if enterprise_id is not None:
        query = query.where(Project.enterprise_id == enterprise_id)
    if status is not None:
        query = query.where(Project.status == status)
    return list(session.scalars(query))


def approve_project(session: Session, principal: Principal, project_id: uuid.UUID) -> Project:
    principal.require_operator()
    project = get_project(session, principal, project_id)
    if project.status is ProjectStatus.CLOSED:
        raise Conflict("a closed project cannot be approved")
    if project.status is ProjectStatus.DRAFT:
        project.status = ProjectStatus.ACTIVE
        project.approved_at = datetime.now(UTC)
        audit.record(
            session,
            principal,
            "project.approve",
            "project",
            project.id,
            enterprise_id=project.enterprise_id,
        )
    return project


def close_project(session: Session, principal: Principal, project_id: uuid.UUID) -> Project:
    project = get_project(session, principal, project_id)
    principal.require_enterprise_admin(project.enterprise_id, "project")
    if project.status is not ProjectStatus.CLOSED:
        project.status = ProjectStatus.CLOSED
        project.closed_at = datetime.now(UTC)
        audit.record(
            session,
            principal,
            "project.close",
            "project",
            project.id,
            enterprise_id=project.enterprise_id,
        )
    return project


class _Stated(Protocol):
    @property
    def status(self) -> ProjectStatus: ...


def require_active(project: _Stated) -> None:
    if project.status is not ProjectStatus.ACTIVE:
        raise Conflict(f"project is {project.status.value}; only active projects accept jobs")


def project_or_404(session: Session, project_id: uuid.UUID) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("project not found")
    return project
