"""The HTTP protocol ``brokerctl`` serves with: a response's head and body in one write."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.server import ServerState

from broker.api.http_protocol import CoalescingHttpToolsProtocol


async def _json(_: Request) -> Response:
    return JSONResponse({"ok": True}, status_code=202)


async def _stream(_: Request) -> Response:
    async def chunks() -> Any:
        for i in range(3):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


APP = Starlette(routes=[Route("/json", _json, methods=["POST"]), Route("/stream", _stream)])


class _Transport(asyncio.Transport):
    """Records each write (what reached the socket) and the close."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _exchange(request: bytes) -> _Transport:
    config = uvicorn.Config(APP, http=CoalescingHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(100):
        await asyncio.sleep(0.005)
        if transport.closed or b"chunk 2" in b"".join(transport.writes):
            break
    await asyncio.sleep(0.02)
    return transport


def test_a_json_answer_is_one_write_and_a_close_sends_what_is_pending_first() -> None:
    body = b'{"a": 1}'
    head = b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    keep = asyncio.run(_exchange(head + b"Content-Length: 8\r\n\r\n" + body))
    assert len(keep.writes) == 1 and not keep.closed
    assert keep.writes[0].startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert keep.writes[0].endswith(b'{"ok":true}')
    # The client asks to close: the answer is written whole, then the connection closed.
    closing = asyncio.run(
        _exchange(head + b"Connection: close\r\nContent-Length: 8\r\n\r\n" + body)
    )
    assert closing.closed and len(closing.writes) == 1
    assert closing.writes[0].endswith(b'{"ok":true}')


def test_a_streamed_body_still_goes_out_chunk_by_chunk() -> None:
    t = asyncio.run(_exchange(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"))
    text = b"".join(t.writes)
    assert text.startswith(b"HTTP/1.1 200 OK\r\n") and b"chunk 0" in text and b"chunk 2" in text
    # Each chunk is written in the turn after it is sent, not held to the end.
    assert len(t.writes) >= 3 and b"chunk 2" not in t.writes[0]


@pytest.fixture
def server() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        APP, http=CoalescingHttpToolsProtocol, lifespan="off", log_config=None, access_log=False
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)


def test_a_real_server_answers_keep_alive_and_closing_requests_whole(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        for _ in range(50):  # one connection, kept alive
            r = client.post("/json", json={"a": 1})
            assert (r.status_code, r.json()) == (202, {"ok": True})
        r = client.post("/json", json={"a": 1}, headers={"Connection": "close"})
        assert (r.status_code, r.json()) == (202, {"ok": True})
        s = client.get("/stream")
        assert s.text == "chunk 0\nchunk 1\nchunk 2\n"


def test_brokerctl_serves_with_it() -> None:
    """``brokerctl serve`` and ``api`` hand uvicorn this protocol (by import path, as
    ``api --workers N``'s processes import it)."""
    from uvicorn.importer import import_from_string

    from broker.cli import _SERVER

    assert import_from_string(_SERVER["http"]) is CoalescingHttpToolsProtocol
    config = uvicorn.Config(APP, **_SERVER)
    config.load()
    assert config.http_protocol_class is CoalescingHttpToolsProtocol
