"""Projects and job submission."""

from __future__ import annotations

import functools
import uuid
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Request, Response, status

from ...models import ProjectStatus
from ...schemas.jobs import JobCreate, JobDetail
from ...schemas.ledger import AllocationSet, ProjectBalanceRead
from ...schemas.tenants import ProjectCreate, ProjectRead
from ...services import intake, ledger, projects, slurm_sync
from ...units import pfh_to_units
from .. import views
from ..batching import SubmitBatcher
from ..deps import ClusterConfigsDep, CurrentPrincipal, SessionDep, SettingsDep

router = APIRouter(prefix="/projects", tags=["projects"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_project(body: ProjectCreate, session: SessionDep, me: CurrentPrincipal) -> ProjectRead:
    alloc = None if body.allocation_pfh is None else pfh_to_units(body.allocation_pfh)
    row = projects.create_project(
        session,
        me,
        enterprise_id=body.enterprise_id,
        name=body.name,
        description=body.description,
        allocation_units=alloc,
    )
    session.commit()
    return views.project(row)


@router.get("")
def list_projects(
    session: SessionDep,
    me: CurrentPrincipal,
    enterprise_id: uuid.UUID | None = None,
    status: ProjectStatus | None = None,
) -> list[ProjectRead]:
    rows = projects.list_projects(session, me, enterprise_id=enterprise_id, status=status)
    return [views.project(p) for p in rows]


@router.get("/{project_id}")
def get_project(project_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal) -> ProjectRead:
    return views.project(projects.get_project(session, me, project_id))


@router.put("/{project_id}/allocation")
def set_allocation(
    project_id: uuid.UUID, body: AllocationSet, session: SessionDep, me: CurrentPrincipal
) -> ProjectRead:
    project = projects.get_project(session, me, project_id)
    units = None if body.allocation_pfh is None else pfh_to_units(body.allocation_pfh)
    ledger.allocate(session, me, project, units)
    session.commit()
    return views.project(project)


@router.get("/{project_id}/balance")
def project_balance(
    project_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal
) -> ProjectBalanceRead:
    project = projects.get_project(session, me, project_id)
    return views.project_balance(project, ledger.project_balance(session, project))


@router.post("/{project_id}/approve")
def approve(
    project_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal, configs: ClusterConfigsDep
) -> ProjectRead:
    """Activate the project; its Slurm account and user association are created on
    every cluster at once (``slurm`` says how each went)."""
    project = projects.approve_project(session, me, project_id)
    session.commit()
    slurm_sync.push_enterprise(session, configs, project.enterprise_id)
    session.commit()
    return views.project(project)


@router.post("/{project_id}/close")
def close(
    project_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal, configs: ClusterConfigsDep
) -> ProjectRead:
    """Close the project; its Slurm account is blocked (no ``sbatch`` under it)."""
    project = projects.close_project(session, me, project_id)
    session.commit()
    slurm_sync.push_enterprise(session, configs, project.enterprise_id)
    session.commit()
    return views.project(project)


@router.post("/{project_id}/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=JobDetail)
async def submit_job(
    project_id: uuid.UUID,
    body: JobCreate,
    request: Request,
    me: CurrentPrincipal,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Accept a job (202): the job as ``GET /jobs/{id}`` shows it, with its routing.

    Answered once the batch it joined is committed (``api.batching``).
    """
    prepare = functools.partial(
        intake.prepare,
        body,
        idempotency_key,
        max_script_bytes=settings.max_script_bytes,
        allow_networks=settings.webhook_allow_networks,
    )
    # The callback URL's name lookup may take seconds: on a thread, not the event loop.
    if body.callback_url is None:
        prepared = prepare()
    else:
        prepared = await anyio.to_thread.run_sync(prepare)
    batcher: SubmitBatcher = request.app.state.submit_batcher
    answer = await batcher.submit(me, project_id, body, idempotency_key, prepared)
    if answer.error is not None:
        raise answer.error
    assert answer.body is not None
    headers = None if answer.created else {"Idempotent-Replayed": "true"}
    return Response(
        answer.body,
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
        headers=headers,
    )
