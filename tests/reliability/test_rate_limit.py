"""Per-token rate limiting (429 with Retry-After), the limiters' bounded tables, and
immediate token revocation (the anonymous limit: tests/broker/test_anonymous_load.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.api import limits
from broker.app import create_app
from broker.errors import RateLimited

from ..broker.conftest import Api, make_settings, operator_token

pytestmark = pytest.mark.filterwarnings("ignore:PluginImportFixer:ImportWarning")

PER_MINUTE = 30


@pytest.fixture
def limited(db_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(db_url, tmp_path, rate_limit_per_minute=PER_MINUTE)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def test_429_with_retry_after_per_token(limited: Api) -> None:
    api = limited
    # Set-up calls spend the operator's bucket; tenants' tokens have buckets of their own.
    ent = api.enterprise()
    a = api.token(ent["id"])
    b = api.token(ent["id"])
    codes = [api.get("/jobs", a).status_code for _ in range(PER_MINUTE)]
    assert codes == [200] * PER_MINUTE
    r = api.get("/jobs", a)
    assert r.status_code == 429
    assert r.json()["error"] == "RateLimited" and str(PER_MINUTE) in r.json()["detail"]
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 60 // PER_MINUTE + 1
    # Writes count too, and are refused before they touch anything.
    assert api.submit("00000000-0000-0000-0000-000000000000", a).status_code == 429
    # Another token of the same enterprise is not affected.
    assert api.get("/jobs", b).status_code == 200
    # The bucket refills: after Retry-After seconds one more request goes through.
    time.sleep(retry)
    assert api.get("/jobs", a).status_code == 200
    assert api.get("/jobs", a).status_code == 429


def test_unauthenticated_requests_are_not_counted_against_a_token(limited: Api) -> None:
    api = limited
    ent = api.enterprise()
    a = api.token(ent["id"])
    for _ in range(3 * PER_MINUTE):
        assert api.client.get("/api/v1/jobs").status_code == 401
    assert api.get("/jobs", a).status_code == 200


def test_revocation_takes_effect_at_once(api: Api) -> None:
    ent, member, project = api.tenant()
    r = api.post(f"/enterprises/{ent['id']}/tokens", json={"name": "adm", "role": "admin"})
    admin, admin_id = r.json()["token"], r.json()["id"]
    assert api.get("/jobs", member).status_code == 200
    tokens = api.get(f"/enterprises/{ent['id']}/tokens", admin).json()
    member_id = next(t["id"] for t in tokens if t["role"] == "member")
    # The enterprise admin revokes the member: its very next request is refused.
    assert api.post(f"/tokens/{member_id}/revoke", admin).status_code == 200
    for path in ("/jobs", f"/projects/{project['id']}", f"/enterprises/{ent['id']}/balance"):
        r = api.get(path, member)
        assert r.status_code == 401 and r.json()["error"] == "Unauthenticated"
    assert api.submit(project["id"], member).status_code == 401
    # The admin revokes itself: also at once.
    assert api.post(f"/tokens/{admin_id}/revoke", admin).status_code == 200
    assert api.get("/jobs", admin).status_code == 401
    assert api.post(f"/tokens/{admin_id}/revoke", admin).status_code == 401


def test_limiter_table_is_bounded_and_forgets_refilled_buckets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys can be made up (client addresses, login attempts): the table stays small."""
    clock = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock[0])
    limiter = limits.RateLimiter(2, max_keys=100)
    for i in range(20_000):
        limiter.check(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100  # the least recently used went first
    # The newest keys kept their state: their buckets are one request lighter.
    limiter.check("10.0.78.31")
    with pytest.raises(RateLimited):
        limiter.check("10.0.78.31")
    # A bucket unused for a minute is full again, so it is dropped, not kept.
    clock[0] += 61
    limiter.check("late")
    assert len(limiter) == 1
    # A client that comes back after that starts with a full bucket, as it would anyway.
    limiter.check("10.0.78.31")
    limiter.check("10.0.78.31")
    with pytest.raises(RateLimited):
        limiter.check("10.0.78.31")


def test_client_key_groups_an_ipv6_slash_64() -> None:
    def key(host: str) -> str:
        return limits.client_key({"client": (host, 1)})

    assert key("203.0.113.9") == "203.0.113.9"
    assert key("::ffff:203.0.113.9") == "203.0.113.9"
    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert limits.client_key({"client": None}) == "unknown"
