"""A job's state changes as Server-Sent Events, and its data movement record."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from ...errors import InvalidInput
from ...models import JobEvent
from ...schemas.workspaces import JobIORead
from ...services import staging, webhooks
from ..deps import CurrentPrincipal, SessionDep, SettingsDep

router = APIRouter(prefix="/jobs", tags=["jobs"])

KEEPALIVE_S = 15.0


def _frame(ev: JobEvent) -> bytes:
    data = {
        "event_id": ev.id,
        "state": ev.state,
        "previous_state": ev.previous_state,
        "at": ev.at.isoformat(),
        "job": ev.payload,
    }
    text = json.dumps(data, separators=(",", ":"))
    return f"id: {ev.id}\nevent: state\ndata: {text}\n\n".encode()


def _snapshot_frame(snapshot: dict[str, Any]) -> bytes:
    data = {"event_id": None, "state": snapshot["state"], "job": snapshot}
    return f"event: state\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: uuid.UUID,
    request: Request,
    me: CurrentPrincipal,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Each state change as ``event: state`` with the job as ``data``, from the first one
    (or after ``Last-Event-ID``); the stream ends once the job is terminal."""
    after = 0
    if last_event_id:
        if not last_event_id.isdigit():
            raise InvalidInput("Last-Event-ID", "must be an event id this stream sent")
        after = int(last_event_id)
    factory = request.app.state.read_session_factory

    def read(after_id: int) -> tuple[list[JobEvent], bool, dict[str, Any] | None]:
        with factory() as s:
            return webhooks.events_after(s, me, job_id, after_id)

    first = await anyio.to_thread.run_sync(read, after)  # 404 before the stream starts
    return StreamingResponse(
        _stream(read, first, after, settings.events_poll_s, settings.events_max_duration_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    read: Any,
    first: tuple[list[JobEvent], bool, dict[str, Any] | None],
    after: int,
    poll_s: float,
    max_s: float,
) -> AsyncIterator[bytes]:
    events, terminal, snapshot = first
    if not events and after == 0 and snapshot is not None and terminal:
        yield _snapshot_frame(snapshot)  # a job older than the event log
        return
    started = last_sent = time.monotonic()
    yield b"retry: 2000\n\n"
    while True:
        for ev in events:
            yield _frame(ev)
            after, last_sent = ev.id, time.monotonic()
        if terminal and len(events) < webhooks.BATCH:
            return  # the terminal event was committed with the state this read saw
        if time.monotonic() - started > max_s:
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield b": keepalive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(poll_s)
        events, terminal, _ = await anyio.to_thread.run_sync(read, after)


@router.get("/{job_id}/io")
def job_io(job_id: uuid.UUID, session: SessionDep, me: CurrentPrincipal) -> JobIORead:
    """The job's inputs, output globs, callback and what stage-in and stage-out did."""
    io = staging.job_io(session, me, job_id)
    if io is None:
        return JobIORead(
            job_id=job_id, inputs=[], outputs=None, callback_url=None, stage_in={}, stage_out={}
        )
    return JobIORead.model_validate(io)
