"""Fixtures for API tests: an app with the local adapter, driven step by step."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.config import Settings
from broker.db import session_scope
from broker.models import Role
from broker.services import slurm_sync, tokens
from broker.services.principal import SYSTEM


@dataclass
class Api:
    """A test client with helpers for the common set-up steps."""

    client: TestClient
    operator: str

    def h(self, token: str | None = None, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token or self.operator}"}
        headers.update(extra)
        return headers

    def post(self, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = self.h(token, **kw.pop("headers", {}))
        return self.client.post(f"/api/v1{path}", headers=headers, **kw)

    def get(self, path: str, token: str | None = None, **kw: Any) -> Any:
        return self.client.get(f"/api/v1{path}", headers=self.h(token), **kw)

    def enterprise(self, name: str | None = None, grant_pfh: float = 0) -> dict[str, Any]:
        r = self.post("/enterprises", json={"name": name or f"Ent {uuid.uuid4().hex[:8]}"})
        assert r.status_code == 201, r.text
        ent: dict[str, Any] = r.json()
        if grant_pfh:
            g = self.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": grant_pfh})
            assert g.status_code == 201, g.text
        return ent

    def token(self, enterprise_id: str, role: str = "member") -> str:
        r = self.post(f"/enterprises/{enterprise_id}/tokens", json={"name": role, "role": role})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def project(self, enterprise_id: str, approve: bool = True, **extra: Any) -> dict[str, Any]:
        body = {"enterprise_id": enterprise_id, "name": f"p{uuid.uuid4().hex[:8]}", **extra}
        r = self.post("/projects", json=body)
        assert r.status_code == 201, r.text
        if approve:
            assert self.post(f"/projects/{r.json()['id']}/approve").status_code == 200
        return dict(r.json())

    def tenant(self, grant_pfh: float = 10) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """An enterprise with a grant, a member token and an active project."""
        ent = self.enterprise(grant_pfh=grant_pfh)
        return ent, self.token(ent["id"]), self.project(ent["id"])

    def submit(self, project_id: str, token: str, key: str | None = None, **spec: Any) -> Any:
        body = {"name": "job", "script": "echo hi", "nodes": 1, "time_limit_minutes": 5, **spec}
        headers = {"Idempotency-Key": key} if key else {}
        return self.post(f"/projects/{project_id}/jobs", token, json=body, headers=headers)

    def drive_until(self, job_id: str, states: set[str], timeout_s: float = 20) -> dict[str, Any]:
        """Run worker passes until the job reaches one of ``states``."""
        worker = self.client.app.state.worker  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout_s
        while True:
            worker.run_once()
            job: dict[str, Any] = self.get(f"/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job stuck in {job['state']}: {job}")
            time.sleep(0.1)


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        environment="test",
        worker_enabled=False,
        # The tests' webhook receivers listen on loopback, which production refuses.
        webhook_allow_networks=overrides.pop("webhook_allow_networks", ["127.0.0.0/8"]),
        # Every TestClient request comes from one address ("testclient"): tests that
        # count on the anonymous limit set it themselves.
        anon_rate_limit_per_minute=overrides.pop("anon_rate_limit_per_minute", 0),
        **overrides,
    )


def operator_token(app: Any) -> str:
    with session_scope(app.state.session_factory) as s:
        _, clear = tokens.create_token(
            s, SYSTEM, name="ops", role=Role.OPERATOR, enterprise_id=None
        )
    return clear


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


@dataclass
class LiveTenant:
    """A broker on the live dev clusters with one enterprise (its POSIX user and Slurm
    account synced there), a member token and an approved project."""

    api: Api
    enterprise: dict[str, Any]
    member: str
    project: dict[str, Any]
    envs: dict[str, dict[str, str]]  # per cluster: an environment whose SLURM_CONF is its


@contextmanager
def live_tenant(
    clusters_file: Path,
    tmp: Path,
    template: Path,
    *,
    name: str,
    user: str,
    account: str,
    grant_pfh: float = 10,
    only: str | None = None,
) -> Iterator[LiveTenant]:
    """``LiveTenant`` on the clusters of ``clusters_file`` (``only``: sync just that one),
    SQLite copied from the migrated ``template``, no background worker."""
    from tests._slurm import ensure_posix_user, load_clusters

    ensure_posix_user(user)
    shutil.copy(template, tmp / "broker.db")
    settings = make_settings(f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=clusters_file)
    clusters = load_clusters(clusters_file)
    envs = {
        c: {**os.environ, "SLURM_CONF": entry["options"]["slurm_conf"]}
        for c, entry in clusters.items()
        if "slurm_conf" in entry.get("options", {})
    }
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        ent = api.post(
            "/enterprises", json={"name": name, "posix_user": user, "slurm_account": account}
        ).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": grant_pfh})
        member = api.token(ent["id"])
        project = api.post("/projects", json={"enterprise_id": ent["id"], "name": "live"}).json()
        api.post(f"/projects/{project['id']}/approve")
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False, only=only)
        wanted = [r for r in results if only is None or r.cluster == only]
        assert all(not r.error for r in wanted if r.cluster in envs), results
        app.state.worker.refresh_clusters()
        yield LiveTenant(api, ent, member, project, envs)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no revision yet) on each dialect: a file on SQLite, a database
    of its own on PostgreSQL (dropped afterwards). The migration tests start here."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    from sqlalchemy import text

    from broker.db import make_engine
    from tests.conftest import PG_ADMIN_URL

    name = f"broker_mig_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
