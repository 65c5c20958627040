"""/metrics in the Prometheus text format, request ids, JSON logs and /readyz."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from starlette.staticfiles import StaticFiles

import scheduler_adapters as sa_
from broker import leader, observability
from broker.app import create_app
from broker.config import Settings
from broker.db import make_session_factory

from .conftest import Api, make_settings

METRICS_TOKEN = "scraper-token-0123456789"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """The tests scrape as Prometheus does in production: with the metrics token."""
    return make_settings(db_url, tmp_path, metrics_token=METRICS_TOKEN)


def scrape(api: Api) -> dict[str, list[Any]]:
    r = api.client.get("/metrics", headers=SCRAPER)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(
    samples: dict[str, list[Any]], name: str, *, required: bool = True, **labels: str
) -> float:
    found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert found or not required, f"no {name}{labels} in {sorted(samples)}"
    return float(sum(found))


def test_metrics_show_requests_jobs_ledger_adapters_and_worker(api: Api) -> None:
    _, member, project = api.tenant(grant_pfh=10)
    job = api.submit(project["id"], member, script="echo hi").json()
    assert api.get(f"/jobs/{job['id']}", member).status_code == 200
    assert api.get("/jobs/00000000-0000-0000-0000-000000000000", member).status_code == 404
    before = scrape(api)
    assert value(before, "broker_jobs", state="accepted") == 1
    assert value(before, "broker_jobs", state="completed") == 0
    assert value(before, "broker_ledger_pfh", kind="granted") == pytest.approx(10)
    held = value(before, "broker_ledger_pfh", kind="held")
    assert held > 0
    assert value(before, "broker_ledger_pfh", kind="available") == pytest.approx(10 - held)
    # requests are labelled by route template and status, never by raw path
    route = "/api/v1/jobs/{job_id}"
    assert value(before, "broker_http_requests_total", route=route, status="200") >= 1
    assert value(before, "broker_http_requests_total", route=route, status="404") >= 1
    assert value(before, "broker_http_request_duration_seconds_count", route=route) >= 2
    assert not any(job["id"] in str(s.labels) for v in before.values() for s in v)

    api.drive_until(job["id"], {"completed"})
    # the worker's loop metrics come from run_forever: run one pass of it
    worker = api.client.app.state.worker  # type: ignore[attr-defined]
    stop = threading.Event()
    lock = leader.NoLock()
    thread = threading.Thread(target=worker.run_forever, args=(stop, lock))
    thread.start()
    stop.set()
    thread.join(10)
    after = scrape(api)
    assert value(after, "broker_jobs", state="completed") == 1
    assert value(after, "broker_ledger_pfh", kind="held") == 0
    assert value(after, "broker_adapter_calls_total", cluster="local", method="submit") >= 1
    assert value(after, "broker_adapter_call_duration_seconds_count", cluster="local") >= 1
    assert value(after, "broker_worker_last_pass_timestamp_seconds") > 0
    assert value(after, "broker_worker_pass_duration_seconds_count") >= 1
    assert "broker_worker_loop_lag_seconds" in after
    assert value(after, "broker_worker_leader") == 0  # released when stopped
    assert value(after, "broker_database_up") == 1
    assert value(after, "broker_cluster_up", cluster="local") == 1


def test_submission_batches_are_measured_and_key_lookups_counted(api: Api) -> None:
    """Each batch of the submissions' writer: its jobs and its time; on PostgreSQL, a
    batch run again to look up a stored Idempotency-Key (a client's retry)."""
    _, member, project = api.tenant(grant_pfh=10)
    before = scrape(api)
    first = api.submit(project["id"], member, key="retry-1")
    again = api.submit(project["id"], member, key="retry-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers.get("idempotent-replayed") == "true"
    after = scrape(api)
    grew = {
        name: value(after, name, required=False) - value(before, name, required=False)
        for name in (
            "broker_submit_batch_jobs_count",
            "broker_submit_batch_jobs_sum",
            "broker_submit_batch_duration_seconds_count",
        )
    }
    assert grew == {
        "broker_submit_batch_jobs_count": 2,
        "broker_submit_batch_jobs_sum": 2,
        "broker_submit_batch_duration_seconds_count": 2,
    }
    reruns = "broker_submit_batch_reruns_total"
    app_settings = api.client.app.state.settings  # type: ignore[attr-defined]
    pg = app_settings.database_url.startswith("postgresql")
    key_reruns = [value(m, reruns, required=False, reason="key") for m in (before, after)]
    assert key_reruns[1] - key_reruns[0] == (
        1 if pg else 0  # SQLite's writer looks every key up first
    )


def test_adapter_errors_are_counted_per_cluster(api: Api) -> None:
    adapter = api.client.app.state.adapters.get("local")  # type: ignore[attr-defined]
    with pytest.raises(sa_.SchedulerError):
        adapter.drain("no-such-node", "test")  # the local adapter refuses unknown nodes
    samples = scrape(api)
    assert (
        value(
            samples,
            "broker_adapter_errors_total",
            cluster="local",
            method="drain",
            error="SubmitRejected",
        )
        >= 1
    )


def test_request_id_is_made_or_kept_and_logged_as_json(api: Api) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(observability.RequestIdFilter())
    handler.setFormatter(observability.JsonFormatter())
    logger = logging.getLogger("broker.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        made = api.client.get("/healthz")
        kept = api.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        bad = api.client.get("/healthz", headers={"X-Request-ID": "no spaces or tabs"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert len(made.headers["x-request-id"]) == 32
    assert kept.headers["x-request-id"] == "abc-123"
    assert bad.headers["x-request-id"] not in ("no spaces or tabs", made.headers["x-request-id"])
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["request_id"] for r in records] == [
        made.headers["x-request-id"],
        "abc-123",
        bad.headers["x-request-id"],
    ]
    assert records[1]["route"] == "/healthz" and records[1]["status"] == 200
    assert records[1]["level"] == "info" and records[1]["logger"] == "broker.access"
    assert records[1]["duration_ms"] >= 0


def test_log_records_inside_a_request_carry_its_id() -> None:
    record = logging.makeLogRecord({"msg": "hello %s", "args": ("world",), "levelno": 20})
    token = observability.request_id_var.set("rid-1")
    try:
        assert observability.RequestIdFilter().filter(record)
    finally:
        observability.request_id_var.reset(token)
    data = json.loads(observability.JsonFormatter().format(record))
    assert data["msg"] == "hello world" and data["request_id"] == "rid-1"


def test_readyz_reports_clusters_and_503_without_database(api: Api) -> None:
    r = api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["database"] == "ok" and "local" in r.json()["clusters"]
    state = api.client.app.state  # type: ignore[attr-defined]
    names = [n for n in ("session_factory", "read_session_factory") if hasattr(state, n)]
    good = {n: getattr(state, n) for n in names}
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    for n in names:
        setattr(state, n, make_session_factory(dead))
    try:
        down = api.client.get("/readyz")
        scraped = api.client.get("/metrics", headers=SCRAPER)
    finally:
        for n, factory in good.items():
            setattr(state, n, factory)
        dead.dispose()
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert down.json()["database"].startswith("error")
    assert scraped.status_code == 200  # metrics still answer, saying the database is down


def test_worker_metrics_exposed_without_http_app(settings: Settings) -> None:
    """The standalone worker's registry (served by ``brokerctl worker --metrics-port``)."""
    registry = observability.make_registry(None)
    families = {f.name for f in text_string_to_metric_families(_text(registry))}
    assert {"broker_worker_leader", "broker_worker_loop_lag_seconds"} <= families


def _text(registry: Any) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_create_app_twice_in_one_process(settings: Settings) -> None:
    for _ in range(2):
        with TestClient(create_app(settings, run_worker=False)) as client:
            assert client.get("/metrics", headers=SCRAPER).status_code == 200


def test_labels_are_route_templates_methods_and_statuses_from_bounded_sets(
    settings: Settings, tmp_path: Path
) -> None:
    """Whatever the path, method or mount: the route's template, never the request's path."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "app.css").write_text("body {}")
    sub = FastAPI()

    @sub.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    app = create_app(settings, run_worker=False)
    app.mount("/assets", StaticFiles(directory=static), name="assets")
    app.mount("/sub", sub)
    ids = [str(uuid.uuid4()) for _ in range(8)]
    with TestClient(app) as client:
        api = Api(client, "")
        client.get(f"/api/v1/projects/{ids[0]}/files/a/{ids[1]}/deep/{ids[2]}.txt")
        client.get(f"/api/v1/jobs/{ids[3]}")
        client.request("PROPFIND", f"/api/v1/jobs/{ids[4]}")  # 405, a made-up method
        client.get(f"/{ids[5]}/nothing/here")  # no route: 404
        client.get("/assets/app.css")
        client.get(f"/assets/{ids[6]}/missing.css")
        client.get(f"/sub/items/{ids[7]}")
        client.get("/healthz")
        client.get("/api/v1/healthz")  # one route, included twice: two templates
        text = client.get("/metrics", headers=SCRAPER).text
        samples = scrape(api)
    assert not [i for i in ids if i in text]
    seen = {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for s in samples["broker_http_requests_total"]
    }
    assert {
        ("GET", "/api/v1/projects/{project_id}/files/{path:path}", "401"),
        ("GET", "/api/v1/jobs/{job_id}", "401"),
        ("other", "/api/v1/jobs/{job_id}", "405"),
        ("GET", "unmatched", "404"),
        ("GET", "/assets/{path:path}", "200"),
        ("GET", "/assets/{path:path}", "404"),
        ("GET", "/sub/items/{item_id}", "200"),
        ("GET", "/healthz", "200"),
        ("GET", "/api/v1/healthz", "200"),
    } <= seen


def test_status_and_method_labels_are_bounded() -> None:
    assert observability.status_label(404) == "404"
    assert observability.status_label(299) == "2xx"
    assert observability.status_label(1234) == "other"
    assert observability.method_label("DELETE") == "DELETE"
    assert observability.method_label("PROPFIND") == "other"


# -- /metrics answers the scraper only ------------------------------------------------
def test_metrics_need_the_token_or_an_allowed_network(settings: Settings) -> None:
    app = create_app(settings, run_worker=False)
    with TestClient(app) as anyone:  # client address "testclient": in no network
        unknown = anyone.get("/no-such-page")
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
        ):
            refused = anyone.get("/metrics", headers=headers)
            # Refused as if there were no such page: nothing says a token would help.
            assert refused.status_code == 404, headers
            assert refused.json() == unknown.json()
            assert "www-authenticate" not in refused.headers
        scraped = anyone.get("/metrics", headers=SCRAPER)
        assert scraped.status_code == 200 and "broker_http_requests_total" in scraped.text
    # The default networks are loopback only: a scraper on the same host needs no token.
    for host, status in (("127.0.0.1", 200), ("::1", 200), ("::ffff:127.0.0.1", 200)):
        with TestClient(app, client=(host, 9000)) as c:
            assert c.get("/metrics").status_code == status, host
    with TestClient(app, client=("10.1.2.3", 9000)) as c:
        assert c.get("/metrics").status_code == 404


def test_metrics_networks_setting(db_url: str, tmp_path: Path) -> None:
    app = create_app(
        make_settings(
            db_url,
            tmp_path,
            metrics_token=METRICS_TOKEN,
            metrics_allow_networks=["10.20.0.0/16"],
        ),
        run_worker=False,
    )
    for host, headers, status in (
        ("10.20.3.4", {}, 200),
        ("127.0.0.1", {}, 404),  # loopback no longer listed
        ("127.0.0.1", SCRAPER, 200),  # the token works from anywhere
        ("10.21.0.1", {}, 404),
    ):
        with TestClient(app, client=(host, 9000)) as c:
            assert c.get("/metrics", headers=headers).status_code == status, (host, headers)


def test_metrics_token_setting_is_checked() -> None:
    assert Settings(metrics_token="").metrics_token is None  # empty: unset, never matched
    with pytest.raises(ValueError, match="16 characters"):
        Settings(metrics_token="short")
