"""Anonymous requests cost nothing lasting (issue 24, found by a penetration test).

20,000 unauthenticated requests with unique paths (long file paths, job ids, made-up
routes, made-up methods, made-up tokens) once grew the API process by about 390 MB and
``/metrics`` to 348 MB, listing other tenants' file paths and job ids: request paths
became metric labels. Here they go through the ASGI app in-process, each from its own
client address (so the anonymous rate limit, on at its default, lets every one through
while its table of addresses is exercised too), and afterwards:

* ``/metrics`` holds exactly the series it held after a warm-up, names none of the
  paths or ids, and is the same size give or take a few bytes of counter digits;
* the process's resident memory grew by less than 10 MB;
* the anonymous limiter's table holds at most its fixed number of addresses.

The limiter itself is tested below the load test; who may read ``/metrics`` in
test_metrics.py.
"""

from __future__ import annotations

import gc
import random
import shutil
import string
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from broker.app import create_app
from broker.config import Settings

from .conftest import make_settings, operator_token

pytestmark = pytest.mark.filterwarnings("ignore:PluginImportFixer:ImportWarning")

METRICS_TOKEN = "scrape-" + "k3y" * 10
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
WARM_UP = 2_000
LOAD = 20_000
PATH_CHARS = string.ascii_letters + string.digits + "._-"
ANON_DEFAULT = Settings.model_fields["anon_rate_limit_per_minute"].default


def _make_app(sqlite_template: Path, tmp_path: Path, **overrides: Any) -> Any:
    db = tmp_path / "broker.db"
    shutil.copy(sqlite_template, db)
    overrides.setdefault("anon_rate_limit_per_minute", ANON_DEFAULT)  # production's, on
    settings = make_settings(f"sqlite:///{db}", tmp_path, metrics_token=METRICS_TOKEN, **overrides)
    return create_app(settings, run_worker=False)


@pytest.fixture
def client(sqlite_template: Path, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(_make_app(sqlite_template, tmp_path)) as c:
        yield c


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def _address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _requests(start: int, n: int, rng: random.Random) -> Iterator[tuple[str, str, str, list[str]]]:
    """(client address, method, path, headers' Authorization or "") with unique paths.

    Also yields the strings that must never reach ``/metrics`` (the ids and paths).
    """
    for i in range(start, start + n):
        uid = str(uuid.UUID(int=rng.getrandbits(128)))
        name = "".join(rng.choices(PATH_CHARS, k=200))
        long_path = "/".join(name[k : k + 25] for k in range(0, 200, 25))
        kind = i % 6
        if kind == 0:  # another tenant's workspace file
            yield (
                _address(i),
                "GET",
                f"/api/v1/projects/{uid}/files/{long_path}",
                ["", uid, name[:25]],
            )
        elif kind == 1:  # another tenant's job
            yield _address(i), "GET", f"/api/v1/jobs/{uid}", ["", uid]
        elif kind == 2:  # a made-up token
            yield _address(i), "GET", f"/api/v1/jobs/{uid}/output", [f"Bearer {name}", uid]
        elif kind == 3:  # a made-up method on a real route
            method = "X" + "".join(rng.choices(string.ascii_uppercase, k=9))
            yield _address(i), method, f"/api/v1/jobs/{uid}", ["", uid, method]
        elif kind == 4:  # no route at all
            yield _address(i), "GET", f"/{name[:40]}/{uid}", ["", uid, name[:25]]
        else:  # the dashboard's static files
            yield _address(i), "GET", f"/ops/static/{name[:60]}", ["", name[:25]]


async def _send_all(app: Any, batch: list[tuple[str, str, str, list[str]]]) -> list[int]:
    statuses = []
    for address, method, path, (authorization, *_) in batch:
        transport = httpx.ASGITransport(app, client=(address, 40000))
        headers = {"Authorization": authorization} if authorization else {}
        request = httpx.Request(method, f"http://testserver{path}", headers=headers)
        response = await transport.handle_async_request(request)
        await response.aread()
        statuses.append(response.status_code)
    return statuses


def _http_series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("broker_http_")
    }


@pytest.mark.slow
def test_20000_anonymous_requests_leave_metrics_and_memory_flat(client: TestClient) -> None:
    app = client.app
    portal = client.portal
    assert portal is not None
    rng = random.Random(24)
    baseline = client.get("/metrics", headers=SCRAPER).text

    warm = list(_requests(0, WARM_UP, rng))
    assert set(portal.call(_send_all, app, warm)) <= {401, 404, 405}
    load = list(_requests(WARM_UP, LOAD, rng))  # made before measuring: not the app's
    gc.collect()
    before = client.get("/metrics", headers=SCRAPER).text
    rss_before = _rss_mb()

    started = time.perf_counter()
    statuses = portal.call(_send_all, app, load)
    elapsed = time.perf_counter() - started
    gc.collect()
    rss_after = _rss_mb()
    after = client.get("/metrics", headers=SCRAPER).text
    print(
        f"\n{LOAD} anonymous requests in {elapsed:.1f} s; /metrics {len(baseline)} B before"
        f" any, {len(before)} B after {WARM_UP}, {len(after)} B after {LOAD} more;"
        f" RSS {rss_before:.1f} -> {rss_after:.1f} MB"
    )

    # Every request was answered as anonymous traffic is: none was let in, none limited.
    assert set(statuses) <= {401, 404, 405}, sorted(set(statuses))
    # No path, id, method or token of theirs became a label: the same series as after
    # the warm-up, and the body grew by a few bytes of counter digits at most.
    assert _http_series(after) == _http_series(before)
    assert len(after) - len(before) < 2048, (len(before), len(after))
    assert len(after) < len(baseline) + 32 * 1024, (len(baseline), len(after))
    leaked = [s for *_, secrets in load for s in secrets[1:] if s in after]
    assert not leaked, leaked[:5]
    routes = {dict(labels).get("route") for _, labels in _http_series(after)}
    assert {
        "/api/v1/projects/{project_id}/files/{path:path}",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/output",
        "/ops/static/{name}",
        "unmatched",
    } <= routes
    # Memory is flat: the resident set grew by less than 10 MB over 20,000 requests.
    assert rss_after - rss_before < 10, (rss_before, rss_after)
    # The anonymous limiter saw 22,000 addresses and keeps a bounded table of them.
    limiter = app.state.anon_rate_limiter  # type: ignore[attr-defined]
    assert 0 < len(limiter) <= limiter.max_keys


# -- the anonymous rate limit ---------------------------------------------------------
ANON_PER_MINUTE = 20


def test_anonymous_requests_are_limited_per_address(sqlite_template: Path, tmp_path: Path) -> None:
    app = _make_app(sqlite_template, tmp_path, anon_rate_limit_per_minute=ANON_PER_MINUTE)
    with TestClient(app, client=("198.51.100.7", 1000)) as noisy:
        token = operator_token(app)
        codes = [
            noisy.get(f"/api/v1/jobs/{uuid.uuid4()}").status_code for _ in range(ANON_PER_MINUTE)
        ]
        assert codes == [401] * ANON_PER_MINUTE
        r = noisy.get(f"/api/v1/jobs/{uuid.uuid4()}")
        assert r.status_code == 429
        assert r.json()["error"] == "RateLimited" and str(ANON_PER_MINUTE) in r.json()["detail"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60 // ANON_PER_MINUTE + 1
        # Made-up tokens are anonymous too; so is anything without credentials.
        assert (
            noisy.get("/api/v1/jobs", headers={"Authorization": "Bearer made-up"}).status_code
            == 429
        )
        assert noisy.get("/no-such-page").status_code == 429
        assert noisy.post("/ops/login", data={"token": "guess"}).status_code == 429
        # A real token from the same address is served: only anonymous traffic is limited.
        assert (
            noisy.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )
        # The load balancer's probes are never limited.
        assert noisy.get("/healthz").status_code == 200
        assert noisy.get("/readyz").status_code == 200
        assert noisy.get("/api/v1/healthz").status_code == 200
    # Another address has a bucket of its own.
    with TestClient(app, client=("198.51.100.8", 1000)) as other:
        assert other.get("/api/v1/jobs").status_code == 401
    # An IPv6 client's /64 is one address: rotating the low bits does not help.
    for i in range(ANON_PER_MINUTE):
        with TestClient(app, client=(f"2001:db8:1:2::{i + 1:x}", 1000)) as v6:
            assert v6.get("/api/v1/jobs").status_code == 401
    with TestClient(app, client=("2001:db8:1:2:ffff::1", 1000)) as v6:
        assert v6.get("/api/v1/jobs").status_code == 429
    with TestClient(app, client=("2001:db8:1:3::1", 1000)) as v6:
        assert v6.get("/api/v1/jobs").status_code == 401


def test_anonymous_limit_can_be_turned_off(sqlite_template: Path, tmp_path: Path) -> None:
    app = _make_app(sqlite_template, tmp_path, anon_rate_limit_per_minute=0)
    with TestClient(app) as c:
        assert {c.get("/api/v1/jobs").status_code for _ in range(150)} == {401}
