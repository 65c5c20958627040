"""Jobs through the REST API on the live dev clusters: alpha (slurm-cli), beta (slurmrestd).

Needs `deploy/slurm/devcluster up --two` (the session fixture runs it). Checks the
states, exit codes and charges against Slurm's own accounting (sacct), the scheduler's
reason for a job held by an association limit, accounting sync and reconciliation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.db import session_scope
from broker.models import Job
from broker.services import reconcile, scheduling, slurm_sync

from .._slurm import ensure_posix_user, load_clusters
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER = "tenantlive"
ACCOUNT = "e_slurm_live"


@pytest.fixture(scope="module")
def live(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Api, dict[str, Any], str, dict[str, Any]]]:
    ensure_posix_user(USER)
    tmp = tmp_path_factory.mktemp("live")
    shutil.copy(sqlite_template, tmp / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=slurm_clusters_file
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        r = api.post(
            "/enterprises",
            json={"name": "Slurm Live", "posix_user": USER, "slurm_account": ACCOUNT},
        )
        ent = r.json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
        member = api.token(ent["id"])
        project = api.post("/projects", json={"enterprise_id": ent["id"], "name": "live"}).json()
        api.post(f"/projects/{project['id']}/approve")
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False)
        assert all(not r.error for r in results), results
        app.state.worker.refresh_clusters()
        yield api, ent, member, project


def _sacct(clusters_file: Path, cluster: str, job_id: str) -> tuple[int, int]:
    conf = load_clusters(clusters_file)[cluster]["options"]["slurm_conf"]
    out = (
        subprocess.run(
            ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "ElapsedRaw,NNodes"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[0]
    )
    elapsed, nodes = out.split("|")
    return int(elapsed), int(nodes)


@pytest.mark.parametrize(("cluster", "rate_tflops"), [("alpha", 0.05), ("beta", 0.1)])
def test_job_completes_and_charge_matches_sacct(
    live: tuple[Api, dict[str, Any], str, dict[str, Any]],
    slurm_clusters_file: Path,
    cluster: str,
    rate_tflops: float,
) -> None:
    api, ent, member, project = live
    r = api.submit(
        project["id"],
        member,
        cluster=cluster,
        name="hello",
        script="echo hello from $(whoami); sleep 2",
    )
    assert r.status_code == 202, r.text
    assert r.json()["routing"]["cluster"] == cluster
    done = api.drive_until(r.json()["id"], {"completed", "failed", "cancelled"}, timeout_s=60)
    assert done["state"] == "completed", done
    assert done["exit_code"] == 0
    out = api.client.get(f"/api/v1/jobs/{done['id']}/output", headers=api.h(member)).text
    assert f"hello from {USER}" in out  # ran as the enterprise's POSIX user, not root
    elapsed, nodes = _sacct(slurm_clusters_file, cluster, done["scheduler_job_id"])
    assert done["elapsed_s"] == elapsed >= 2
    expected_pfh = nodes * rate_tflops * elapsed / 3600 / 1000
    assert done["charge_pfh"] == pytest.approx(expected_pfh, rel=1e-9)
    kinds = sorted(
        e["kind"] for e in api.get(f"/enterprises/{ent['id']}/ledger?job_id={done['id']}").json()
    )
    assert kinds == ["CHARGE", "HOLD", "RELEASE"]


def test_exit_3_is_failed_with_exit_code_3(
    live: tuple[Api, dict[str, Any], str, dict[str, Any]],
) -> None:
    api, _, member, project = live
    job = api.submit(project["id"], member, cluster="alpha", script="echo bad >&2; exit 3").json()
    done = api.drive_until(job["id"], {"completed", "failed"}, timeout_s=60)
    assert done["state"] == "failed" and done["exit_code"] == 3


def test_cancel_reaches_cancelled(live: tuple[Api, dict[str, Any], str, dict[str, Any]]) -> None:
    api, _, member, project = live
    job = api.submit(project["id"], member, cluster="beta", script="sleep 120").json()
    api.drive_until(job["id"], {"running"}, timeout_s=60)
    assert api.post(f"/jobs/{job['id']}/cancel", member).status_code == 202
    done = api.drive_until(job["id"], {"cancelled"}, timeout_s=60)
    assert done["charge_pfh"] is not None and done["charge_pfh"] <= done["hold_pfh"]


def test_association_limit_shows_the_schedulers_reason(
    live: tuple[Api, dict[str, Any], str, dict[str, Any]], slurm_clusters_file: Path
) -> None:
    api, ent, member, _ = live
    project = api.post("/projects", json={"enterprise_id": ent["id"], "name": "limited"}).json()
    api.post(f"/projects/{project['id']}/approve")
    app = api.client.app
    with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
        slurm_sync.sync(s, app.state.settings.load_clusters(), dry_run=False, only="alpha")  # type: ignore[attr-defined]
    # An admin puts a stricter limit on the project's account than the broker would.
    conf = load_clusters(slurm_clusters_file)["alpha"]["options"]["slurm_conf"]
    subprocess.run(
        [
            "sacctmgr",
            "-i",
            "modify",
            "account",
            f"{ACCOUNT}-limited",
            "set",
            "GrpTRESMins=billing=1",
        ],
        env={**os.environ, "SLURM_CONF": conf},
        check=True,
        capture_output=True,
    )
    job = api.submit(project["id"], member, cluster="alpha", script="true").json()
    try:
        # The reason is the scheduler's, set at its next pass over the queue: on a loaded
        # machine that took longer than 50 quick polls (one CI run), so poll by the clock.
        deadline = time.monotonic() + 120
        while True:
            pending = api.drive_until(job["id"], {"pending"}, timeout_s=30)
            if pending["reason"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "AssocGrpBillingMinutes" in pending["reason"], pending
    finally:
        api.post(f"/jobs/{job['id']}/cancel", member)
        api.drive_until(job["id"], {"cancelled"}, timeout_s=60)


def test_reconcile_adopts_a_job_lost_between_submit_and_commit(
    live: tuple[Api, dict[str, Any], str, dict[str, Any]],
) -> None:
    api, _, member, project = live
    app = api.client.app
    factory = app.state.session_factory  # type: ignore[attr-defined]
    job = api.submit(project["id"], member, cluster="alpha", script="sleep 1").json()
    job_id = uuid.UUID(job["id"])
    # The worker's first half: attempts committed, then the scheduler accepts the job...
    with session_scope(factory) as s:
        row = s.get(Job, job_id)
        assert row is not None
        outcome, spec, _ = scheduling.begin_submission(s, row, {}, datetime.now(UTC))
    assert outcome == "submit" and spec is not None
    adapter = app.state.adapters.get("alpha")  # type: ignore[attr-defined]
    sched_id = adapter.submit(spec)
    # ...and the broker crashes before recording the id. Reconciliation finds it.
    since = datetime.now(UTC) - timedelta(minutes=10)
    with session_scope(factory) as s:
        dry = reconcile.reconcile(
            s, adapter, "alpha", since=since, now=datetime.now(UTC), dry_run=True
        )
        assert (job["id"], sched_id) in dry.adopted
        assert s.get(Job, job_id).scheduler_job_id is None  # type: ignore[union-attr]
    with session_scope(factory) as s:
        report = reconcile.reconcile(
            s, adapter, "alpha", since=since, now=datetime.now(UTC), dry_run=False
        )
        assert (job["id"], sched_id) in report.adopted
    done = api.drive_until(job["id"], {"completed"}, timeout_s=60)
    assert done["scheduler_job_id"] == sched_id
    tagged = [i for t, i in adapter.list_tagged(since).items() if t == str(job_id)]
    assert len(tagged) == 1  # submitted exactly once


def test_worker_adopts_instead_of_resubmitting(
    live: tuple[Api, dict[str, Any], str, dict[str, Any]],
) -> None:
    """A worker that died after sbatch finds the job by its tag on restart."""
    api, _, member, project = live
    app = api.client.app
    factory = app.state.session_factory  # type: ignore[attr-defined]
    job = api.submit(project["id"], member, cluster="beta", script="sleep 1").json()
    with session_scope(factory) as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        _, spec, _ = scheduling.begin_submission(s, row, {}, datetime.now(UTC))
    assert spec is not None
    sched_id = app.state.adapters.get("beta").submit(spec)  # type: ignore[attr-defined]
    done = api.drive_until(job["id"], {"completed"}, timeout_s=60)
    assert done["scheduler_job_id"] == sched_id


def test_scripts_cannot_override_broker_owned_directives(
    live: tuple[Api, dict[str, Any], str, dict[str, Any]], slurm_clusters_file: Path
) -> None:
    """#SBATCH lines for account, uid, comment and output are ignored; no shell sees input."""
    api, _, member, project = live
    evil = Path("/tmp/broker-injection-proof")
    evil.unlink(missing_ok=True)
    script = "\n".join(
        [
            "#!/bin/bash",
            "#SBATCH --account=root",
            "#SBATCH -A root",
            "#SBATCH --uid=0",
            "#SBATCH --comment=broker:00000000-0000-0000-0000-000000000000",
            f"#SBATCH --output={evil}",
            'echo "ran as $(id -un) on account $SLURM_JOB_ACCOUNT"',
            "echo '$(touch /tmp/broker-injection-proof); `id`'",
        ]
    )
    r = api.submit(project["id"], member, cluster="alpha", name="inject", script=script)
    assert r.status_code == 202, r.text
    done = api.drive_until(r.json()["id"], {"completed", "failed"}, timeout_s=60)
    assert done["state"] == "completed", done
    out = api.client.get(f"/api/v1/jobs/{done['id']}/output", headers=api.h(member)).text
    account = f"{ACCOUNT}-live"
    assert f"ran as {USER} on account {account}" in out
    assert "$(touch /tmp/broker-injection-proof); `id`" in out  # printed, never run
    assert not evil.exists()
    conf = load_clusters(slurm_clusters_file)["alpha"]["options"]["slurm_conf"]
    row = (
        subprocess.run(
            [
                "sacct",
                "-j",
                done["scheduler_job_id"],
                "-X",
                "-n",
                "-P",
                "-o",
                "User,Account,Comment",
            ],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[0]
    )
    assert row.split("|") == [USER, account, f"broker:{done['id']}"]
    # A name in any script is data: kept as written, Slurm gets its ASCII slug, no shell
    # ever sees it; a control character in it is refused.
    odd = api.submit(project["id"], member, cluster="alpha", name="x; rm -rf / $(id)")
    assert odd.status_code == 202 and odd.json()["name"] == "x; rm -rf / $(id)", odd.text
    ran = api.drive_until(odd.json()["id"], {"completed", "failed"}, timeout_s=60)
    for _ in range(20):  # slurmdbd records the name a moment after the end
        shown = subprocess.run(
            ["sacct", "-j", ran["scheduler_job_id"], "-X", "-n", "-P", "-o", "JobName"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if shown == "x_rm_rf_id":
            break
        time.sleep(0.5)
    assert shown == "x_rm_rf_id", shown
    bad = api.submit(project["id"], member, cluster="alpha", name="x\n#SBATCH -A root")
    assert bad.status_code == 422 and bad.json()["detail"].startswith("name"), bad.text
