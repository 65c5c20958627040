"""Tokens may carry an expiry: set at creation (never in the past), enforced, listed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from broker.db import session_scope
from broker.models import ApiToken, Role
from broker.services import tokens
from broker.services.principal import SYSTEM

from ..web.conftest import log_in
from .conftest import Api


def _expire(api: Api, token_id: str) -> None:
    """The clock moves on: the token's expiry is now a second ago."""
    factory = api.client.app.state.session_factory  # type: ignore[attr-defined]
    with session_scope(factory) as s:
        s.execute(
            update(ApiToken)
            .where(ApiToken.id == uuid.UUID(token_id))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def _token(api: Api, ent_id: str, **body: Any) -> Any:
    return api.post(f"/enterprises/{ent_id}/tokens", json={"name": "t", **body})


def test_an_expiring_token_works_until_it_expires_then_is_like_an_unknown_one(api: Api) -> None:
    ent = api.enterprise()
    when = datetime.now(UTC) + timedelta(days=30)
    r = _token(api, ent["id"], expires_at=when.isoformat())
    assert r.status_code == 201, r.text
    created = r.json()
    assert datetime.fromisoformat(created["expires_at"]) == when
    token = created["token"]
    assert api.get(f"/enterprises/{ent['id']}", token).status_code == 200
    listed = {t["id"]: t for t in api.get(f"/enterprises/{ent['id']}/tokens").json()}
    assert datetime.fromisoformat(listed[created["id"]]["expires_at"]) == when

    _expire(api, created["id"])
    expired = api.get(f"/enterprises/{ent['id']}", token)
    unknown = api.get(f"/enterprises/{ent['id']}", "hcb_" + "x" * 43)
    assert expired.status_code == unknown.status_code == 401
    assert expired.json() == unknown.json()
    # Still listed, with its expiry: an admin sees why it stopped working.
    listed = {t["id"]: t for t in api.get(f"/enterprises/{ent['id']}/tokens").json()}
    assert datetime.fromisoformat(listed[created["id"]]["expires_at"]) < datetime.now(UTC)


def test_a_token_without_expiry_never_expires(api: Api) -> None:
    ent = api.enterprise()
    created = _token(api, ent["id"]).json()
    assert created["expires_at"] is None
    (listed,) = api.get(f"/enterprises/{ent['id']}/tokens").json()
    assert listed["expires_at"] is None
    assert api.get(f"/enterprises/{ent['id']}", created["token"]).status_code == 200


def test_an_expiry_in_the_past_is_422_naming_it(api: Api) -> None:
    ent = api.enterprise()
    for when in (datetime.now(UTC) - timedelta(minutes=1), datetime(2001, 1, 1, tzinfo=UTC)):
        r = _token(api, ent["id"], expires_at=when.isoformat())
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("expires_at: "), r.text
    r = _token(api, ent["id"], expires_at="not a time")
    assert r.status_code == 422 and "expires_at" in r.text
    assert api.get(f"/enterprises/{ent['id']}/tokens").json() == []


def test_an_expiry_without_offset_is_utc(api: Api) -> None:
    ent = api.enterprise()
    naive = (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None, microsecond=0)
    r = _token(api, ent["id"], expires_at=naive.isoformat())
    assert r.status_code == 201, r.text
    assert datetime.fromisoformat(r.json()["expires_at"]) == naive.replace(tzinfo=UTC)


def test_an_expired_operator_token_leaves_the_dashboard(api: Api) -> None:
    client: TestClient = api.client
    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    with session_scope(factory) as s:
        row, clear = tokens.create_token(
            s,
            SYSTEM,
            name="night shift",
            role=Role.OPERATOR,
            enterprise_id=None,
            expires_at=datetime.now(UTC) + timedelta(hours=8),
        )
        token_id = str(row.id)
    assert log_in(client, clear).status_code == 303
    assert client.get("/ops", follow_redirects=False).status_code == 200
    _expire(api, token_id)
    # The session is re-checked against the token on every page: back to the login.
    page = client.get("/ops", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/ops/login")
    client.cookies.clear()
    refused = log_in(client, clear)
    assert refused.status_code == 401 and "expired" in refused.text
