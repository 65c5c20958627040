"""Project webhooks: subscribe a URL, rotate the signing secret, read the delivery log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from ...schemas.workspaces import DeliveryRead, SecretRead, WebhookCreate, WebhookRead
from ...services import webhooks
from ..deps import CurrentPrincipal, SessionDep, SettingsDep

router = APIRouter(prefix="/projects", tags=["webhooks"])


@router.post("/{project_id}/webhooks", status_code=status.HTTP_201_CREATED)
def create_webhook(
    project_id: uuid.UUID,
    body: WebhookCreate,
    session: SessionDep,
    me: CurrentPrincipal,
    settings: SettingsDep,
) -> WebhookRead:
    """Subscribe ``url`` to the project's job state changes (``events``: states; default all).

    ``url`` must resolve now, to public addresses (or ones in an allowed network): else
    422 naming it. The first subscription creates the project's signing secret and
    returns it, once.
    """
    box = webhooks.secret_box(settings)
    hook, secret = webhooks.create_webhook(
        session,
        me,
        project_id,
        body.url,
        body.events,
        box,
        allow=settings.webhook_allow_networks,
    )
    session.commit()
    return WebhookRead.model_validate(hook).model_copy(update={"secret": secret})


@router.get("/{project_id}/webhooks")
def list_webhooks(
    project_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal
) -> list[WebhookRead]:
    return [WebhookRead.model_validate(h) for h in webhooks.list_webhooks(session, me, project_id)]


@router.delete("/{project_id}/webhooks/{webhook_id}", status_code=204)
def delete_webhook(
    project_id: uuid.UUID, webhook_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal
) -> Response:
    webhooks.delete_webhook(session, me, project_id, webhook_id)
    session.commit()
    return Response(status_code=204)


@router.post("/{project_id}/webhooks/secret", status_code=status.HTTP_201_CREATED)
def rotate_secret(
    project_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal, settings: SettingsDep
) -> SecretRead:
    """Create or replace the project's signing secret; it is shown only in this answer."""
    secret = webhooks.rotate_secret(session, me, project_id, webhooks.secret_box(settings))
    session.commit()
    return SecretRead(project_id=project_id, secret=secret)


@router.get("/{project_id}/webhooks/deliveries")
def list_deliveries(
    project_id: uuid.UUID,
    session: SessionDep,
    me: CurrentPrincipal,
    job_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryRead]:
    """The delivery log, newest first: target, attempts, last status or error."""
    rows = webhooks.list_deliveries(session, me, project_id, job_id=job_id, limit=limit)
    return [
        DeliveryRead(
            id=d.id,
            event_id=d.event_id,
            job_id=d.job_id,
            webhook_id=d.webhook_id,
            url=d.url,
            state=e.state,
            status=d.status.value,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )
        for d, e in rows
    ]
