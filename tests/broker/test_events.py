"""Server-Sent Events: ``GET /jobs/{id}/events`` streams a job's state changes until it ends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app

from .conftest import Api, make_settings, operator_token


def parse(text: str) -> list[dict[str, Any]]:
    """The ``state`` events of an SSE body: ``{"id": ..., "data": {...}}`` each."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields.get("event") == "state":
            out.append({"id": fields.get("id"), "data": json.loads(fields["data"])})
    return out


@pytest.fixture
def quick(db_url: str, tmp_path: Path) -> Iterator[Api]:
    """Streams poll every 0.1 s and end after 1.5 s."""
    settings = make_settings(db_url, tmp_path, events_poll_s=0.1, events_max_duration_s=1.5)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def test_finished_job_replays_every_state_then_ends(api: Api) -> None:
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 1").json()
    api.drive_until(job["id"], {"completed"})
    r = api.client.get(f"/api/v1/jobs/{job['id']}/events", headers=api.h(member))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse(r.text)
    states = [e["data"]["state"] for e in events]
    assert states[0] == "accepted" and states[-1] == "completed" and "pending" in states
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[-1]["data"]["job"]["charge_pfh"] is not None

    # Reconnecting with Last-Event-ID resumes after that event.
    resumed = api.client.get(
        f"/api/v1/jobs/{job['id']}/events", headers=api.h(member, **{"Last-Event-ID": str(ids[0])})
    )
    assert [int(e["id"]) for e in parse(resumed.text)] == ids[1:]


def test_stream_follows_a_running_job_live(quick: Api) -> None:
    api = quick
    api.client.app.state.settings.events_max_duration_s = 30  # type: ignore[attr-defined]
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 1").json()
    got: list[Any] = []
    reader = threading.Thread(
        target=lambda: got.append(
            api.client.get(f"/api/v1/jobs/{job['id']}/events", headers=api.h(member))
        )
    )
    reader.start()
    time.sleep(0.3)  # the stream is open, having sent "accepted"
    api.drive_until(job["id"], {"completed"})
    reader.join(timeout=10)
    assert not reader.is_alive(), "the stream did not end with the job"
    states = [e["data"]["state"] for e in parse(got[0].text)]
    assert states[0] == "accepted" and states[-1] == "completed" and "pending" in states


def test_stream_ends_after_its_maximum_duration(quick: Api) -> None:
    api = quick
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 30").json()  # never driven
    started = time.monotonic()
    r = api.client.get(f"/api/v1/jobs/{job['id']}/events", headers=api.h(member))
    assert 1.4 < time.monotonic() - started < 5
    assert [e["data"]["state"] for e in parse(r.text)] == ["accepted"]


def test_other_tenants_and_bad_ids_are_refused(api: Api) -> None:
    _, member, project = api.tenant()
    _, stranger, _ = api.tenant()
    job = api.submit(project["id"], member).json()
    url = f"/api/v1/jobs/{job['id']}/events"
    r = api.client.get(url, headers=api.h(stranger))
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    r = api.client.get(url, headers=api.h(member, **{"Last-Event-ID": "abc"}))
    assert r.status_code == 422 and r.json()["detail"].startswith("Last-Event-ID: ")


def test_any_service_import_installs_the_outbox() -> None:
    """The rule lives in services.outbox: importing any service module registers it."""
    code = (
        "from sqlalchemy import event; from sqlalchemy.orm import Session\n"
        "import sys, broker.services.tenants\n"
        "o = sys.modules['broker.services.outbox']\n"
        "hooks = [('before_flush', o._note_transitions), ('before_commit', o._write_outbox),"
        " ('after_commit', o._forget_transitions), ('after_rollback', o._forget_transitions)]\n"
        "print(all(event.contains(Session, name, fn) for name, fn in hooks))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True"
