"""Request limits: body size (413), a per-token rate limit and a per-address limit on
unauthenticated requests (429 with Retry-After), each in a table of bounded size."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from ipaddress import IPv6Address, ip_address, ip_network

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RateLimited

#: Most keys (tokens, client addresses) a limiter remembers: about 250 bytes each.
MAX_KEYS = 10_000


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests, refilled continuously.

    Keys are API tokens or client addresses, and anyone can make up new addresses, so
    the table is an LRU of at most ``max_keys`` entries: a bucket idle for a minute is
    full again, as good as absent, and is dropped; past ``max_keys`` the least recently
    used bucket goes, whatever its level (a client that comes back starts afresh).
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_keys: int = MAX_KEYS,
        subject: str = "requests per minute for this token",
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.per_minute = per_minute
        self.max_keys = max_keys
        self.subject = subject
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str) -> None:
        """Spend one request of ``key``'s bucket, or raise ``RateLimited`` if it is empty."""
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._store(key, tokens, now)
                raise RateLimited(
                    f"more than {self.per_minute} {self.subject}",
                    retry_after_s=max(1, math.ceil((1.0 - tokens) / rate)),
                )
            self._store(key, tokens - 1.0, now)

    def _store(self, key: str, tokens: float, now: float) -> None:
        buckets = self._buckets
        buckets[key] = (tokens, now)
        buckets.move_to_end(key)
        while len(buckets) > self.max_keys:
            buckets.popitem(last=False)
        # Oldest first: drop the buckets that have refilled (a minute without requests).
        while buckets:
            oldest, (_, last) = next(iter(buckets.items()))
            if now - last < 60.0:
                break
            del buckets[oldest]


def client_key(scope: Scope) -> str:
    """The client's address as a rate-limit key; an IPv6 client's /64 is one key.

    An IPv6 host usually holds a whole /64 and can rotate through it at no cost.
    """
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        address = ip_address(host)
    except ValueError:
        return host[:64] or "unknown"  # a unix socket, a test client
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ip_network(f"{address}/64", strict=False))
    return str(address)


#: The load balancer's probes: cheap, public, polled often from one address.
PROBES = frozenset({"/healthz", "/readyz", "/api/v1/healthz", "/api/v1/readyz"})


class AnonymousRateLimit:
    """Limit unauthenticated requests per client address (429 with Retry-After).

    A request is anonymous when it carries no credentials (no ``Authorization`` header
    and no ``session_cookie``), or when its credentials are refused (the app answers
    401). Each anonymous request spends one from its address's bucket in ``limiter``:
    one without credentials before the app runs, so a refused one costs no routing and
    no database; one with refused credentials when its 401 is sent, which becomes the
    429 once the bucket is empty. Requests whose credentials are accepted are never
    counted nor refused here (the per-token limit applies to them), so clients behind
    one address as an attacker keep working. ``exempt`` paths (the probes) are never
    counted.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        session_cookie: str = "",
        exempt: Collection[str] = PROBES,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.cookie = session_cookie.encode() + b"="
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.limiter.per_minute <= 0
            or scope.get("path") in self.exempt
        ):
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        if not self._has_credentials(scope):
            try:
                self.limiter.check(key)
            except RateLimited as exc:
                await _rate_limited(send, exc)
                return
            await self.app(scope, receive, send)
            return
        refused = False

        async def count_401(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 401:
                try:
                    self.limiter.check(key)
                except RateLimited as exc:
                    refused = True
                    await _rate_limited(send, exc)
                    return
            elif refused:
                return  # the body of the 401 the 429 replaced
            await send(message)

        await self.app(scope, receive, count_401)

    def _has_credentials(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value.strip():
                return True
            if name == b"cookie" and self.cookie != b"=" and self.cookie in value:
                return True
        return False


async def _rate_limited(send: Send, exc: RateLimited) -> None:
    body = json.dumps({"error": "RateLimited", "detail": exc.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(exc.retry_after_s).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
        # Read the whole body (at most max_bytes) before the app runs: an error raised
        # from inside receive() would reach FastAPI's body parser, which answers 400.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: the app sees the disconnect
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        pending: list[Message] = [message]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, max_bytes: int) -> None:
    body = (
        b'{"error":"PayloadTooLarge","detail":"request body exceeds '
        + str(max_bytes).encode()
        + b' bytes"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
