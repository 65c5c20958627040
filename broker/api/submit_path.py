"""The lean path of ``POST /api/v1/projects/{id}/jobs``: body, validation, batch, bytes.

A submission is the one request clients send by the thousand, and FastAPI's routing
(a regular expression per route, tried in turn), its dependency solving and its
response machinery cost more than everything else the request needs. This ASGI layer
sits inside the app's own middleware (request id, access log, metrics, body size limit,
anonymous rate limit all still apply) and answers a submission itself when it can:

- the token's principal is in the ``TokenCache`` (else the route loads it);
- the body is ``application/json`` and a valid ``JobCreate`` (else the route answers
  with its 422 naming the field);

then the same steps as the route (``intake.prepare``, the per-token rate limit, the
``SubmitBatcher``) and the same answers: the job's JSON with 202, or the app's own
exception handlers' answer for an error. Anything else goes on to the route with the
body it sent, so the route stays the reference (and the OpenAPI document's).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..schemas.jobs import JobCreate
from ..services import intake, webhooks
from ..services.principal import Principal
from ..services.token_cache import TokenCache
from .batching import SubmitBatcher
from .limits import RateLimiter

_PATH = re.compile(
    r"/api/v1/projects/([0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})/jobs"
)
_JSON = re.compile(rb"application/json\s*(;.*)?", re.IGNORECASE)
Handler = Callable[[Request, Exception], Any]


class SubmitFastPath:
    """ASGI middleware: submissions answered without FastAPI's routing (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        tokens: TokenCache,
        batcher: SubmitBatcher,
        limiter: RateLimiter | None,
        handlers: Mapping[Any, Handler],
    ) -> None:
        self.app = app
        self.settings = settings
        self.tokens = tokens
        self.batcher = batcher
        self.limiter = limiter
        self.handlers = handlers  # the app's exception handlers (the same dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PATH.fullmatch(scope["path"])
        principal = None if match is None else self._principal(scope)
        if match is None or principal is None:
            await self.app(scope, receive, send)
            return
        body, message = await _read_body(receive)
        req = None
        if message is not None and _is_json(scope):
            try:
                req = JobCreate.model_validate_json(body)
            except ValidationError:
                req = None  # the route's 422 names the field
        if req is None:
            await self.app(scope, _replay(message, receive), send)
            return
        try:
            await self._submit(scope, send, principal, uuid.UUID(match[1]), req)
        except Exception as exc:
            await self._error(scope, receive, send, exc)

    def _principal(self, scope: Scope) -> Principal | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not token:
                    return None
                return self.tokens.get(token.strip())
        return None

    async def _submit(
        self,
        scope: Scope,
        send: Send,
        principal: Principal,
        project_id: uuid.UUID,
        req: JobCreate,
    ) -> None:
        key = next((v for k, v in scope["headers"] if k == b"idempotency-key"), None)
        idempotency_key = None if key is None else key.decode("latin-1")
        if self.limiter is not None:
            self.limiter.check(str(principal.token_id))
        scope.setdefault("state", {})["principal"] = principal
        webhooks.ALLOW_NETWORKS.set(self.settings.webhook_allow_networks)
        prepare = functools.partial(
            intake.prepare,
            req,
            idempotency_key,
            max_script_bytes=self.settings.max_script_bytes,
            allow_networks=self.settings.webhook_allow_networks,
        )
        # The callback URL's name lookup may take seconds: on a thread, not the event loop.
        if req.callback_url is None:
            prepared = prepare()
        else:
            prepared = await anyio.to_thread.run_sync(prepare)
        answer = await self.batcher.submit(principal, project_id, req, idempotency_key, prepared)
        if answer.error is not None:
            raise answer.error
        assert answer.body is not None
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer.body)).encode()),
        ]
        if not answer.created:
            headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """Answered as the app answers it (``api.errors``); else a 500 as for any route."""
        handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
        if handler is None:
            raise exc
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body (the body size limit outside has already bounded it), and the
    message to replay; None when the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            body = b"".join(chunks)
            return body, {"type": "http.request", "body": body, "more_body": False}


def _is_json(scope: Scope) -> bool:
    value = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    return _JSON.fullmatch(value.strip()) is not None


def _replay(message: Message | None, receive: Receive) -> Receive:
    pending = [] if message is None else [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
