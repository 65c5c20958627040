"""Adoption by tag: a tagged scheduler job is the broker's only under the account and
user the broker submits that job with; a planted job carrying a copied tag is ignored
(and logged) by the worker and by reconciliation alike."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import scheduler_adapters as sa_
from broker.db import session_scope
from broker.models import Job, JobStatus
from broker.services import adoption, reconcile, scheduling
from scheduler_adapters import JobInfo, JobSpec, JobState
from scheduler_adapters.local import LocalAdapter
from scheduler_adapters.slurm.parse import parse_jobs

from .conftest import Api

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
NOW = datetime.now(UTC)


def _accepted_job(api: Api) -> tuple[uuid.UUID, adoption.Owner]:
    """A job the worker counted an attempt for, as after a crash before the commit."""
    _, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 5").json()
    factory = api.client.app.state.session_factory  # type: ignore[attr-defined]
    with session_scope(factory) as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None and row.state is JobStatus.ACCEPTED
        row.submit_attempts = 1
        owner = adoption.owner_of(s, row)
    return uuid.UUID(job["id"]), owner


def _tagged(job_id: uuid.UUID, account: str | None, user: str | None) -> dict[str, JobInfo]:
    info = JobInfo(
        job_id="9999",
        state=JobState.PENDING,
        tag=str(job_id),
        account=account,
        user=user,
        submit_time=NOW,
    )
    return {str(job_id): info}


class FakeAdapter(sa_.SchedulerAdapter):
    kind = "fake"

    def __init__(self, tagged: dict[str, JobInfo]) -> None:
        super().__init__("local")
        self.tagged = tagged
        self.cancelled: list[str] = []

    def list_tagged(self, since: datetime) -> dict[str, JobInfo]:
        return self.tagged

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def submit(self, spec: JobSpec) -> str:
        raise NotImplementedError

    def status(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        raise NotImplementedError

    def ping(self) -> sa_.ClusterInfo:
        raise NotImplementedError

    def nodes(self) -> list[sa_.NodeInfo]:
        raise NotImplementedError


def _planted(owner: adoption.Owner) -> list[tuple[str | None, str | None]]:
    return [
        ("e_attacker", "mallory"),  # another tenant's account and user
        (owner.account, "mallory"),  # the right account (a shared one), another user
        ("e_attacker", owner.user),  # the right user, another account
        (None, None),  # a scheduler that does not say
    ]


def test_reconcile_adopts_only_the_brokers_own_job(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    job_id, owner = _accepted_job(api)
    factory = api.client.app.state.session_factory  # type: ignore[attr-defined]
    for account, user in _planted(owner):
        fake = FakeAdapter(_tagged(job_id, account, user))
        with caplog.at_level(logging.WARNING), session_scope(factory) as s:
            report = reconcile.reconcile(
                s,
                fake,
                "local",
                since=NOW - timedelta(hours=1),
                now=NOW,
                dry_run=False,
                cancel_strays=True,
            )
            assert report.foreign == [(str(job_id), "9999")] and report.adopted == []
            assert fake.cancelled == []  # someone else's job: left alone
            row = s.get(Job, job_id)
            assert row is not None and row.scheduler_job_id is None
        assert f"carries the tag of job {job_id}" in caplog.text
        caplog.clear()
    fake = FakeAdapter(_tagged(job_id, owner.account.upper(), owner.user))  # Slurm's case
    with session_scope(factory) as s:
        report = reconcile.reconcile(
            s, fake, "local", since=NOW - timedelta(hours=1), now=NOW, dry_run=False
        )
        assert report.adopted == [(str(job_id), "9999")] and report.foreign == []
        row = s.get(Job, job_id)
        assert row is not None and row.scheduler_job_id == "9999"


def test_the_worker_resubmits_rather_than_adopt_a_planted_job(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job_id, _ = _accepted_job(api)
    worker = api.client.app.state.worker  # type: ignore[attr-defined]
    adapter = worker.pool.get("local")
    monkeypatch.setattr(adapter, "list_tagged", lambda since: _tagged(job_id, "e_x", "mallory"))
    with caplog.at_level(logging.WARNING):
        worker.run_once()
    job = api.get(f"/jobs/{job_id}").json()
    assert job["scheduler_job_id"] not in (None, "9999"), job  # submitted, by the broker
    assert "ignoring scheduler job 9999" in caplog.text


def test_begin_submission_adopts_its_own_and_ignores_copies(api: Api) -> None:
    job_id, owner = _accepted_job(api)
    factory = api.client.app.state.session_factory  # type: ignore[attr-defined]
    for account, user in _planted(owner):
        with session_scope(factory) as s:
            row = s.get(Job, job_id)
            assert row is not None
            outcome, spec, _ = scheduling.begin_submission(
                s, row, _tagged(job_id, account, user), NOW
            )
            assert outcome == "submit" and spec is not None
            assert (spec.account, spec.user) == (owner.account, owner.user)
            s.rollback()
    with session_scope(factory) as s:
        row = s.get(Job, job_id)
        assert row is not None
        mine = _tagged(job_id, owner.account, owner.user)
        assert scheduling.begin_submission(s, row, mine, NOW)[0] == "adopted"
        assert row.scheduler_job_id == "9999"


# -- every adapter's list_tagged says whose a job is ----------------------------------
@pytest.mark.parametrize(
    ("path", "job", "account", "user"),
    [
        ("22.05/squeue_running.json", "1", "fixacct", "brokertest1"),  # squeue: user_name
        ("22.05/squeue_running.json", "4", "fixacct", "brokerfix"),
        ("22.05/sacct.json", None, "fixacct", "brokerfix"),  # sacct: user, association
        ("24.05/jobs.json", None, "acme", "alice"),  # slurmrestd controller: user_name
        ("24.05/slurmdb_jobs.json", "101", "acme", "alice"),  # slurmdbd: user
    ],
)
def test_slurm_json_of_every_version_carries_account_and_user(
    path: str, job: str | None, account: str, user: str
) -> None:
    import json

    jobs = parse_jobs(json.loads((FIXTURES / path).read_text()))
    picked = [jobs[job]] if job else list(jobs.values())
    assert picked and all((j.account, j.user) == (account, user) for j in picked)


def test_sacct_without_a_top_level_account_uses_the_association() -> None:
    doc: dict[str, Any] = {
        "jobs": [
            {
                "job_id": 7,
                "state": {"current": "COMPLETED"},
                "association": {"account": "e_acme", "user": "acme"},
                "comment": {"job": "broker:x"},
            }
        ]
    }
    info = parse_jobs(doc)["7"]
    assert (info.account, info.user, info.tag) == ("e_acme", "acme", "x")


def test_the_local_adapter_reports_the_spec_user_and_account(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", root_dir=str(tmp_path / "sched"))
    spec = JobSpec(
        name="t", script="true", time_limit_minutes=1, account="e_a", user="hcb_a", tag="tg"
    )
    adapter.submit(spec)
    info = adapter.list_tagged(NOW - timedelta(minutes=5))["tg"]
    assert (info.account, info.user) == ("e_a", "hcb_a")


def test_the_pyslurm_adapter_reports_account_and_user() -> None:
    from scheduler_adapters import create_adapter
    from tests.scheduler_adapters import fake_pyslurm

    fake_pyslurm.reset()
    adapter = create_adapter(
        "pyslurm", "omega", {"module": "tests.scheduler_adapters.fake_pyslurm"}
    )
    spec = JobSpec(
        name="p", script="true", time_limit_minutes=4, account="acme", user="alice", tag="tg"
    )
    adapter.submit(spec)
    info = adapter.list_tagged(NOW - timedelta(minutes=5))["tg"]
    assert (info.account, info.user) == ("acme", "alice")


# -- live: another user plants a job with a copied tag on alpha -----------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_live_a_planted_job_on_alpha_is_not_adopted(
    slurm_clusters_file: Path, slurm_tenant: Any, tmp_path: Path, sqlite_template: Path
) -> None:
    import shutil

    from fastapi.testclient import TestClient

    from broker.app import create_app
    from broker.services import slurm_sync
    from scheduler_adapters.slurm.cli import SlurmCliAdapter

    from .._slurm import ensure_posix_user, load_clusters
    from .conftest import make_settings, operator_token

    user, account = "tenantadopt", "e_adopt"
    ensure_posix_user(user)
    shutil.copy(sqlite_template, tmp_path / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp_path / 'broker.db'}", tmp_path, clusters_file=slurm_clusters_file
    )
    conf = load_clusters(slurm_clusters_file)["alpha"]["options"]["slurm_conf"]
    alpha = SlurmCliAdapter("alpha", slurm_conf=conf)
    app = create_app(settings, run_worker=False)
    planted = ""
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        body = {"name": "Adopt Co", "posix_user": user, "slurm_account": account}
        ent = api.post("/enterprises", json=body).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
        member, project = api.token(ent["id"]), api.project(ent["id"])
        factory = app.state.session_factory
        with session_scope(factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False, only="alpha")
        assert all(not r.error for r in results), results
        app.state.worker.refresh_clusters()
        job = api.submit(project["id"], member, cluster="alpha", script="sleep 60").json()
        with session_scope(factory) as s:  # as after a crash before the attempt's commit
            row = s.get(Job, uuid.UUID(job["id"]))
            assert row is not None
            row.submit_attempts = 1
        # Another tenant's user, in its own account, copies the tag.
        work = slurm_tenant.workdir("alpha", uuid.uuid4().hex[:12])
        planted = alpha.submit(
            JobSpec(
                name="planted",
                script="#!/bin/bash\nsleep 60\n",
                time_limit_minutes=2,
                account=slurm_tenant.account,
                user=slurm_tenant.user,
                tag=job["id"],
                working_dir=str(work),
                stdout_path=str(work / "out.txt"),
            )
        )
        mine = None
        try:
            app.state.worker.run_once()
            mine = api.get(f"/jobs/{job['id']}").json()["scheduler_job_id"]
            assert mine is not None and mine != planted  # submitted its own
            with session_scope(factory) as s:
                report = reconcile.reconcile(
                    s,
                    alpha,
                    "alpha",
                    since=datetime.now(UTC) - timedelta(minutes=10),
                    now=datetime.now(UTC),
                    dry_run=True,
                )
            assert (job["id"], planted) in report.foreign and report.adopted == []
        finally:
            for sched_id in (planted, mine):
                if sched_id:
                    alpha.cancel(sched_id)
