"""Webhook and callback URLs naming a non-public address, or a name that does not
resolve, are refused when they are created (422 naming the field), not only when they
are delivered; at delivery a name that does not resolve is retried."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from broker.app import create_app
from broker.db import session_scope
from broker.models import Webhook, WebhookDelivery
from broker.services import webhooks

from .conftest import Api, make_settings, operator_token
from .test_webhooks import Receiver, deliver_all, receiver  # noqa: F401 - a fixture

PRIVATE = [
    "http://127.0.0.1:16820/slurm/v0.0.38/job/submit",  # slurmrestd on the broker host
    "http://localhost:5432/",
    "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://[::ffff:10.0.0.1]/hook",
]


@pytest.fixture
def prod(db_url: str, tmp_path: Path) -> Iterator[Api]:
    """The API with the production default: public destinations only."""
    settings = make_settings(db_url, tmp_path, webhook_allow_networks=[])
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def _hook(api: Api, member: str, pid: str, url: str) -> Any:
    return api.post(f"/projects/{pid}/webhooks", member, json={"url": url})


def _nothing_stored(api: Api) -> None:
    factory = api.client.app.state.session_factory  # type: ignore[attr-defined]
    with session_scope(factory) as s:
        assert list(s.scalars(select(Webhook))) == []


@pytest.mark.parametrize("url", PRIVATE)
def test_a_webhook_to_a_private_address_is_422_naming_url(prod: Api, url: str) -> None:
    _, member, project = prod.tenant()
    r = _hook(prod, member, project["id"], url)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("url: ") and "not a public address" in detail, detail
    _nothing_stored(prod)


def test_a_name_that_does_not_resolve_is_422_naming_url(prod: Api) -> None:
    _, member, project = prod.tenant()
    r = _hook(prod, member, project["id"], f"https://{uuid.uuid4().hex}.invalid/hook")
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("url: cannot resolve"), r.text
    _nothing_stored(prod)


def test_public_and_allowed_addresses_are_accepted(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, webhook_allow_networks=["10.20.0.0/16"])
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        _, member, project = api.tenant()
        for url in ("http://93.184.216.34/hook", "https://10.20.1.2:8443/in"):
            assert _hook(api, member, project["id"], url).status_code == 201, url
        assert _hook(api, member, project["id"], "https://10.21.0.1/in").status_code == 422


def test_a_slow_name_lookup_is_given_up_on(prod: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def slow(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":
            time.sleep(3)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", slow)
    monkeypatch.setattr(webhooks, "RESOLVE_TIMEOUT_S", 0.3)
    _, member, project = prod.tenant()
    started = time.monotonic()
    r = _hook(prod, member, project["id"], "https://slow.example/hook")
    assert time.monotonic() - started < 2.5
    assert r.status_code == 422 and "did not resolve within 0.3 s" in r.json()["detail"]


@pytest.mark.parametrize("url", [PRIVATE[0], PRIVATE[3], "http://nowhere.invalid/cb"])
def test_a_callback_url_is_checked_at_submission(prod: Api, url: str) -> None:
    ent, member, project = prod.tenant()
    pid = project["id"]
    assert prod.post(f"/projects/{pid}/webhooks/secret", member).status_code == 201
    r = prod.submit(pid, member, callback_url=url)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("callback_url: "), r.text
    assert prod.get(f"/jobs?project_id={pid}", member).json()["items"] == []
    assert prod.get(f"/enterprises/{ent['id']}/balance", member).json()["held_pfh"] == 0
    assert prod.submit(pid, member, callback_url="http://93.184.216.34/cb").status_code == 202


def test_callback_urls_obey_the_apps_allowed_networks(api: Api, receiver: Receiver) -> None:  # noqa: F811
    """The request's settings reach the check deep in the submit path."""
    _, member, project = api.tenant()
    pid = project["id"]
    assert api.post(f"/projects/{pid}/webhooks/secret", member).status_code == 201
    assert api.submit(pid, member, callback_url=receiver.url).status_code == 202  # 127.0.0.0/8
    # Outside any request, nothing is allowed but public addresses.
    with pytest.raises(webhooks.InvalidInput):
        webhooks.check_url(receiver.url, "callback_url")


def test_at_delivery_a_name_that_does_not_resolve_is_retried(
    db_url: str,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    settings = make_settings(db_url, tmp_path, webhook_retry_base_s=0.05)
    app = create_app(settings, run_worker=False)
    factory = app.state.session_factory
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        _, member, project = api.tenant()
        assert _hook(api, member, project["id"], receiver.url).status_code == 201
        # The name stops resolving after it was checked (DNS down, a record removed).
        with session_scope(factory) as s:
            s.execute(update(Webhook).values(url="http://gone.invalid/hook"))
        api.submit(project["id"], member, script="true")
        app.state.worker.deliver_webhooks()
        (first,) = api.get(f"/projects/{project['id']}/webhooks/deliveries", member).json()
        assert first["status"] == "pending" and first["attempts"] == 1, first
        assert first["last_error"].startswith("cannot resolve 'gone.invalid'"), first
        # It resolves again: the next attempt delivers.
        with session_scope(factory) as s:
            s.execute(update(WebhookDelivery).values(url=receiver.url))
        time.sleep(0.1)
        deliver_all(api)
        (done,) = api.get(f"/projects/{project['id']}/webhooks/deliveries", member).json()
    assert done["status"] == "delivered" and done["attempts"] == 2, done
    assert len(receiver.seen) == 1
