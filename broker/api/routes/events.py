"""A job's state changes as Server-Sent Events, and its data movement record.

Each open stream holds a connection and polls the database, so a token may hold at
most ``BROKER_SSE_MAX_STREAMS_PER_TOKEN`` of them at once in an API process (429
beyond), and a stream ends as soon as its client goes: the slot is given back then.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...errors import InvalidInput, RateLimited
from ...models import JobEvent
from ...schemas.workspaces import JobIORead
from ...services import staging, webhooks
from ..deps import CurrentPrincipal, SessionDep, SettingsDep

router = APIRouter(prefix="/jobs", tags=["jobs"])

KEEPALIVE_S = 15.0


class StreamSlots:
    """Open event streams per token (in this process)."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: int) -> Callable[[], None] | None:
        """A slot for ``key``, or None at ``limit``; returns its (idempotent) release."""
        with self._lock:
            if self._open.get(key, 0) >= limit:
                return None
            self._open[key] = self._open.get(key, 0) + 1
        done = threading.Event()

        def release() -> None:
            if done.is_set():
                return
            done.set()
            with self._lock:
                left = self._open.get(key, 0) - 1
                if left > 0:
                    self._open[key] = left
                else:
                    self._open.pop(key, None)

        return release

    def open(self, key: str) -> int:
        with self._lock:
            return self._open.get(key, 0)


def stream_slots(app: FastAPI) -> StreamSlots:
    slots: StreamSlots | None = getattr(app.state, "event_streams", None)
    if slots is None:  # handlers run on the event loop: no race in creating it
        slots = app.state.event_streams = StreamSlots()
    return slots


class _SlotStream(StreamingResponse):
    """A stream that gives its slot back when it ends, whichever way it ends (the
    client gone included: Starlette cancels the stream when the client disconnects)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._release = release
        weakref.finalize(self, release)  # a response never sent still frees its slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


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
    (or after ``Last-Event-ID``); the stream ends once the job is terminal, or when the
    client goes. A token holds at most ``BROKER_SSE_MAX_STREAMS_PER_TOKEN`` open
    streams: 429 beyond."""
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
    limit = settings.sse_max_streams_per_token
    release = stream_slots(request.app).acquire(str(me.token_id or me.actor), limit)
    if release is None:
        raise RateLimited(
            f"this token has {limit} event streams open (BROKER_SSE_MAX_STREAMS_PER_TOKEN):"
            " close one first",
            retry_after_s=5,
        )
    return _SlotStream(
        _stream(read, first, after, settings.events_poll_s, settings.events_max_duration_s),
        release,
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
