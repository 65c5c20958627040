"""Event streams: at most BROKER_SSE_MAX_STREAMS_PER_TOKEN open per token (429 beyond),
and a stream ends, giving its slot back, when its client goes. Over a real uvicorn
server: only a real connection can go away."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from broker.api.routes.events import stream_slots
from broker.app import create_app

from .conftest import Api, make_settings, operator_token

LIMIT = 3


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[Api, str, Any]]:
    """The app under uvicorn on a free port; an Api over TestClient to set things up."""
    settings = make_settings(db_url, tmp_path, sse_max_streams_per_token=LIMIT)
    app = create_app(settings, run_worker=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    with TestClient(app) as client:  # runs the lifespan (clusters into the database)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield Api(client, operator_token(app)), f"http://127.0.0.1:{port}/api/v1", app
        finally:
            server.should_exit = True
            thread.join(10)


class Stream:
    """A client reading an event stream; open on the server once its first frame came."""

    def __init__(self, base: str, token: str, job_id: str) -> None:
        self.client = httpx.Client(timeout=10)
        request = self.client.build_request(
            "GET", f"{base}/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"}
        )
        self.response = self.client.send(request, stream=True)
        if self.response.status_code == 200:
            self.frames = self.response.iter_bytes()  # kept: dropping it closes the stream
            next(self.frames)
        else:
            self.response.read()

    def close(self) -> None:
        self.response.close()
        self.client.close()


def _wait_for(predicate: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_streams_per_token_are_capped_and_freed_when_clients_go(
    served: tuple[Api, str, Any],
) -> None:
    api, base, app = served
    _, member, project = api.tenant()
    _, other, other_project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 60").json()  # never driven
    theirs = api.submit(other_project["id"], other, script="sleep 60").json()
    slots = stream_slots(app)
    opened = [Stream(base, member, job["id"]) for _ in range(LIMIT)]
    try:
        assert all(s.response.status_code == 200 for s in opened)
        refused = Stream(base, member, job["id"])
        refused.close()
        one_more = refused.response
        assert one_more.status_code == 429, one_more.text
        assert one_more.json()["error"] == "RateLimited"
        assert "BROKER_SSE_MAX_STREAMS_PER_TOKEN" in one_more.json()["detail"]
        assert one_more.headers["retry-after"]
        # Another token is not affected.
        theirs_open = Stream(base, other, theirs["id"])
        assert theirs_open.response.status_code == 200
        theirs_open.close()
        # One client goes away: its stream ends on the server and its slot comes back.
        (key,) = [k for k in list(slots._open) if slots.open(k) == LIMIT]
        opened.pop().close()
        _wait_for(lambda: slots.open(key) == LIMIT - 1)
        again = Stream(base, member, job["id"])
        opened.append(again)
        assert again.response.status_code == 200
    finally:
        for stream in opened:
            stream.close()
    _wait_for(lambda: all(slots.open(k) == 0 for k in list(slots._open)))


def test_a_finished_stream_gives_its_slot_back(served: tuple[Api, str, Any]) -> None:
    api, base, app = served
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="true").json()
    api.drive_until(job["id"], {"completed"})
    for _ in range(LIMIT + 2):  # each ends with the job's last event: the cap never bites
        r = httpx.get(
            f"{base}/jobs/{job['id']}/events",
            headers={"Authorization": f"Bearer {member}"},
            timeout=10,
        )
        assert r.status_code == 200 and "completed" in r.text
    # The server frees a slot once its response has returned, which may be a moment after
    # the client read the last byte.
    deadline = time.monotonic() + 5
    while stream_slots(app)._open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stream_slots(app)._open == {}
