"""The lean path of ``POST /api/v1/projects/{id}/jobs``: body, validation, batch, bytes.

A submission is the one request clients send by the thousand, and FastAPI's middleware
(server errors, telemetry, its body limit, exception handling), routing (a regular
expression per route, tried in turn), dependency solving and response machinery cost
more than everything else the request needs. ``SubmitFront`` answers a submission
*in front of* the app's middleware stack when it can:

- the token's principal is in the ``TokenCache`` (else the route loads it), and the
  request does not announce a body over the body size limit;
- the body (read here, at most the limit) is ``application/json`` and a valid
  ``JobCreate`` (else the route answers with its 422 naming the field);

then the same steps as the route (``intake.prepare``, the per-token rate limit, the
``SubmitBatcher``) and the same answers: the job's JSON with 202, or the app's own
exception handlers' answer for an error. What the app's outer middleware does for
every request is done here too: the request's id, access log line and metrics
(``observability.RequestContext``, the same code). An anonymous request never comes
here (it has no cached token). Anything else goes on to the app, its middleware
included, with the body it sent, so the route stays the reference (and the OpenAPI
document's).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..observability import RequestContext
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
_SERVER_ERROR = b"Internal Server Error"  # Starlette's ServerErrorMiddleware's answer


class SubmitFront:
    """Submissions answered before the app's middleware stack (see the module)."""

    def __init__(
        self,
        *,
        settings: Settings,
        tokens: TokenCache,
        batcher: SubmitBatcher,
        limiter: RateLimiter | None,
        handlers: Mapping[Any, Handler],
    ) -> None:
        self.settings = settings
        self.max_bytes = settings.max_body_bytes
        self.tokens = tokens
        self.batcher = batcher
        self.limiter = limiter
        self.handlers = handlers  # the app's exception handlers (the same dict)

    def install(self, app: Starlette) -> None:
        """Put the front before the middleware stack the app builds at its first
        request (outside Starlette's server error middleware and FastAPI's own)."""
        build = app.build_middleware_stack

        def build_with_front() -> ASGIApp:
            return self.before(build())

        app.build_middleware_stack = build_with_front  # type: ignore[method-assign]

    def before(self, stack: ASGIApp) -> ASGIApp:
        """An ASGI app that answers what the front may and hands the rest to ``stack``,
        each request it answers observed as the stack's would be (ids, access log,
        metrics: ``RequestContext.observe``)."""
        context = RequestContext(stack)

        async def front(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                principal = self.principal_for(scope)
                if principal is not None:
                    serve = functools.partial(self._serve, app=stack, principal=principal)
                    await context.observe(serve, scope, receive, send)
                    return
            await stack(scope, receive, send)

        return front

    def principal_for(self, scope: Scope) -> Principal | None:
        """The cached principal of a submission this front may answer, else None."""
        if scope["method"] != "POST" or _PATH.fullmatch(scope["path"]) is None:
            return None
        principal = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not token:
                    return None
                principal = self.tokens.get(token.strip())
            elif name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                return None  # the app's body limit answers (413)
        return principal

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, *, app: ASGIApp, principal: Principal
    ) -> None:
        body, message = await _read_body(receive, self.max_bytes)
        req = None
        if body is not None and _is_json(scope):
            try:
                req = JobCreate.model_validate_json(body)
            except ValidationError:
                req = None  # the route's 422 names the field
        if req is None:
            await app(scope, _replay(message, receive), send)
            return
        match = _PATH.fullmatch(scope["path"])
        assert match is not None
        try:
            await self._submit(scope, send, principal, uuid.UUID(match[1]), req)
        except Exception as exc:
            await self._error(scope, receive, send, exc)

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
        """Answered as the app answers it (``api.errors``); else a 500 as Starlette's
        ``ServerErrorMiddleware`` answers one, and raised on to the server's log."""
        handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
        if handler is None:
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(_SERVER_ERROR)).encode()),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": _SERVER_ERROR})
            raise exc
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


async def _read_body(receive: Receive, max_bytes: int) -> tuple[bytes | None, Message]:
    """The whole body, and the one message that replays what was read of it. The body
    is None when the client went away (the message is then its disconnect) or it
    passed ``max_bytes`` (the app's body limit answers: 413)."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, message
        chunk = message.get("body", b"")
        chunks.append(chunk)
        seen += len(chunk)
        more = bool(message.get("more_body", False))
        if seen > max_bytes or not more:
            body = b"".join(chunks)
            replay = {"type": "http.request", "body": body, "more_body": more}
            return (None if more or seen > max_bytes else body), replay


def _is_json(scope: Scope) -> bool:
    value = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    return _JSON.fullmatch(value.strip()) is not None


def _replay(message: Message, receive: Receive) -> Receive:
    pending = [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
