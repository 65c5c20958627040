"""Webhooks: signed POSTs of every job state change, in order, retried with backoff, logged.

The receiver is a small HTTP server on 127.0.0.1 in this process.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.app import create_app
from broker.db import session_scope
from broker.models import JobEvent, ProjectSecret, WebhookDelivery
from broker.services import webhooks

from .conftest import Api, make_settings, operator_token


@dataclass
class Receiver:
    """Records each POST; answers 500 to the first ``fail_first`` ones."""

    url: str = ""
    fail_first: int = 0
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            code = 500 if len(self.answered) < self.fail_first else 200
            self.answered.append(code)
            if code == 200:
                self.seen.append((headers, body))
            return code


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            code = rec.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture
def fast(db_url: str, tmp_path: Path) -> Iterator[Api]:
    """The API with retries after 0.05 s, 0.1 s, ..."""
    settings = make_settings(
        db_url, tmp_path, webhook_retry_base_s=0.05, webhook_timeout_s=2, webhook_max_attempts=4
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    stamp = headers["x-broker-timestamp"]
    assert abs(time.time() - int(stamp)) < 300  # a receiver refuses stale (replayed) posts
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers["x-broker-signature"], "sha256=" + expected.hexdigest())
    doc: dict[str, Any] = json.loads(body)
    return doc


def deliver_all(api: Api, timeout_s: float = 10) -> None:
    """Worker passes until no delivery is pending."""
    app = api.client.app
    deadline = time.monotonic() + timeout_s
    while True:
        app.state.worker.deliver_webhooks()  # type: ignore[attr-defined]
        with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
            pending = s.scalars(select(WebhookDelivery).where(WebhookDelivery.status == "pending"))
            if not list(pending):
                return
        assert time.monotonic() < deadline, "deliveries still pending"
        time.sleep(0.05)


def event_states(api: Api, job_id: str) -> list[str]:
    with session_scope(api.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        query = select(JobEvent.state).where(JobEvent.job_id == uuid.UUID(job_id))
        return list(s.scalars(query.order_by(JobEvent.id)))


def test_receiver_gets_every_state_change_in_order_signed(api: Api, receiver: Receiver) -> None:
    _, member, project = api.tenant()
    pid = project["id"]
    r = api.post(f"/projects/{pid}/webhooks", member, json={"url": receiver.url})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert secret.startswith("whsec_")
    again = api.post(f"/projects/{pid}/webhooks", member, json={"url": receiver.url + "?2"})
    assert again.json()["secret"] is None  # shown once
    api.client.delete(
        f"/api/v1/projects/{pid}/webhooks/{again.json()['id']}", headers=api.h(member)
    )

    job = api.submit(pid, member, script="sleep 1; echo hi").json()
    done = api.drive_until(job["id"], {"completed"})
    deliver_all(api)
    docs = [verify(secret, h, b) for h, b in receiver.seen]
    states = [d["state"] for d in docs]
    assert states == event_states(api, job["id"])
    assert states[0] == "accepted" and states[-1] == "completed" and "pending" in states
    assert len(set(states)) == len(states)  # each change once
    assert [d["previous_state"] for d in docs[1:]] == states[:-1]
    last = docs[-1]["job"]
    assert last["id"] == job["id"] and last["charge_pfh"] == done["charge_pfh"]
    assert set(done) <= set(last)  # the job as GET /jobs/{id} shows it
    log = api.get(f"/projects/{pid}/webhooks/deliveries", member).json()
    assert [d["state"] for d in reversed(log)] == states
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in log)


def test_a_receiver_that_fails_twice_gets_the_delivery_on_retry(
    fast: Api, receiver: Receiver
) -> None:
    api = fast
    receiver.fail_first = 2
    _, member, project = api.tenant()
    pid = project["id"]
    secret = api.post(f"/projects/{pid}/webhooks", member, json={"url": receiver.url}).json()[
        "secret"
    ]
    job = api.submit(pid, member, script="true").json()
    api.drive_until(job["id"], {"completed"})
    deliver_all(api)
    assert receiver.answered[:3] == [500, 500, 200]
    states = [verify(secret, h, b)["state"] for h, b in receiver.seen]
    assert states == event_states(api, job["id"])  # the retried first event came first
    log = api.get(f"/projects/{pid}/webhooks/deliveries", member).json()
    first = log[-1]
    assert first["state"] == "accepted" and first["attempts"] == 3
    assert first["status"] == "delivered" and first["last_status_code"] == 200


def test_gives_up_after_the_last_attempt_and_logs_why(fast: Api, receiver: Receiver) -> None:
    api = fast
    receiver.fail_first = 1000
    _, member, project = api.tenant()
    pid = project["id"]
    api.post(
        f"/projects/{pid}/webhooks", member, json={"url": receiver.url, "events": ["completed"]}
    )
    job = api.submit(pid, member, script="true").json()
    api.drive_until(job["id"], {"completed"})
    deliver_all(api)
    (only,) = api.get(f"/projects/{pid}/webhooks/deliveries", member).json()
    assert only["state"] == "completed"  # the subscription's event filter
    assert only["status"] == "failed" and only["attempts"] == 4
    assert only["last_status_code"] == 500 and only["last_error"].startswith("HTTP 500")


def test_job_callback_url_needs_the_projects_secret(api: Api, receiver: Receiver) -> None:
    _, member, project = api.tenant()
    pid = project["id"]
    r = api.submit(pid, member, callback_url=receiver.url)
    assert r.status_code == 422 and r.json()["detail"].startswith("callback_url: "), r.text
    secret = api.post(f"/projects/{pid}/webhooks/secret", member).json()["secret"]
    job = api.submit(pid, member, callback_url=receiver.url, script="true").json()
    api.drive_until(job["id"], {"completed"})
    deliver_all(api)
    states = [verify(secret, h, b)["state"] for h, b in receiver.seen]
    assert states == event_states(api, job["id"]) and states[-1] == "completed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/"}, "url"),
        ({"url": "http://127.0.0.1/", "events": ["done"]}, "events[0]"),
    ],
)
def test_bad_subscriptions_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    _, member, project = api.tenant()
    r = api.post(f"/projects/{project['id']}/webhooks", member, json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: "), r.text


def test_other_tenants_see_no_webhooks(api: Api, receiver: Receiver) -> None:
    _, member, project = api.tenant()
    _, stranger, _ = api.tenant()
    pid = project["id"]
    hook = api.post(f"/projects/{pid}/webhooks", member, json={"url": receiver.url}).json()
    assert (
        api.post(f"/projects/{pid}/webhooks", stranger, json={"url": receiver.url}).status_code
        == 404
    )
    assert api.get(f"/projects/{pid}/webhooks", stranger).status_code == 404
    assert api.get(f"/projects/{pid}/webhooks/deliveries", stranger).status_code == 404
    assert api.post(f"/projects/{pid}/webhooks/secret", stranger).status_code == 404
    r = api.client.delete(f"/api/v1/projects/{pid}/webhooks/{hook['id']}", headers=api.h(stranger))
    assert r.status_code == 404
    assert [h["id"] for h in api.get(f"/projects/{pid}/webhooks", member).json()] == [hook["id"]]


def test_a_refused_submission_emits_nothing(api: Api, receiver: Receiver) -> None:
    """The outbox rows share the state change's transaction: a rollback leaves none."""
    _, member, project = api.tenant()
    pid = project["id"]
    api.post(f"/projects/{pid}/webhooks", member, json={"url": receiver.url})
    assert api.submit(pid, member, inputs=["missing.txt"]).status_code == 422
    with session_scope(api.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        assert list(s.scalars(select(JobEvent))) == []
        assert list(s.scalars(select(WebhookDelivery))) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:16820/slurm/v0.0.38/job/submit",  # slurmrestd on the broker host
        "http://localhost:5432/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.1.2.3/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
        "http://0.0.0.0/hook",
        "http://no-such-host.invalid/hook",
    ],
)
def test_destinations_outside_the_public_internet_are_refused(url: str) -> None:
    with pytest.raises(webhooks.RefusedDestination):
        webhooks.pin_destination(url, [])


def test_allowed_networks_and_public_addresses_are_pinned() -> None:
    allow = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "127.0.0.0/8", "::1/128")]
    assert webhooks.pin_destination("https://10.1.2.3/h?x=1", allow) == (
        "https://10.1.2.3:443/h?x=1",
        "10.1.2.3",
        "10.1.2.3",
    )
    assert webhooks.pin_destination("http://93.184.216.34/hook", []) == (
        "http://93.184.216.34:80/hook",
        "93.184.216.34",
        "93.184.216.34",
    )
    # A name is resolved once; the request goes to that address with the name as Host.
    url, host, server_name = webhooks.pin_destination("http://localhost:8080/hook", allow)
    assert url in ("http://127.0.0.1:8080/hook", "http://[::1]:8080/hook")
    assert (host, server_name) == ("localhost:8080", "localhost")


def test_delivery_to_a_refused_address_fails_at_once_and_says_why(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    app = create_app(make_settings(db_url, tmp_path), run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        _, member, project = api.tenant()
        r = api.post(f"/projects/{project['id']}/webhooks", member, json={"url": receiver.url})
        assert r.status_code == 201, r.text
        api.submit(project["id"], member, script="true")
        # Loopback allowed when it was created, not any more when it is delivered.
        production = make_settings(db_url, tmp_path, webhook_allow_networks=[])
        app.state.worker.settings = production
        deliver_all(api)
        (only,) = api.get(f"/projects/{project['id']}/webhooks/deliveries", member).json()
    assert only["status"] == "failed" and only["attempts"] == 1
    assert only["last_error"].startswith("refused: 127.0.0.1 resolves to 127.0.0.1")
    assert receiver.answered == []


def test_a_named_receiver_gets_its_own_host_header(api: Api, receiver: Receiver) -> None:
    _, member, project = api.tenant()
    named = receiver.url.replace("127.0.0.1", "localhost")
    r = api.post(f"/projects/{project['id']}/webhooks", member, json={"url": named})
    assert r.status_code == 201, r.text
    api.submit(project["id"], member, script="true")
    deliver_all(api)
    assert receiver.seen and receiver.seen[0][0]["host"] == named.split("/")[2]


def test_the_secret_is_stored_sealed_and_a_wrong_host_key_says_so(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    settings = make_settings(db_url, tmp_path, secrets_key="key-one")
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        _, member, project = api.tenant()
        pid = project["id"]
        r = api.post(f"/projects/{pid}/webhooks", member, json={"url": receiver.url})
        clear = r.json()["secret"]
        with session_scope(app.state.session_factory) as s:
            (stored,) = s.scalars(select(ProjectSecret.secret))
        assert stored.startswith("fernet:") and clear not in stored
        job = api.submit(pid, member, script="true").json()
        deliver_all(api)
        assert verify(clear, *receiver.seen[0])["job"]["id"] == job["id"]  # signed in clear
        # A host whose key is not the one that sealed it: the log says why, nothing is sent.
        app.state.worker.settings = make_settings(db_url, tmp_path, secrets_key="key-two")
        api.submit(pid, member, script="true")
        app.state.worker.deliver_webhooks()
        log = api.get(f"/projects/{pid}/webhooks/deliveries", member).json()
    stuck = [d for d in log if d["status"] == "pending"]
    assert stuck and all(d["attempts"] == 1 for d in stuck)
    assert (
        stuck[0]["last_error"] == "the project's webhook secret does not open with this host's key"
    )
    assert len(receiver.seen) == 1
