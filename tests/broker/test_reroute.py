"""A job one cluster's scheduler refuses is re-routed once, under the same hold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app

from .conftest import Api, make_settings, operator_token

# "fussy" is cheaper and faster on paper, so it wins the routing, but its scheduler
# knows no partition "default" and refuses every job (a cluster-specific rejection).
CLUSTERS = """
[[clusters]]
name = "fussy"
adapter = "local"
scratch_dir = "{root}/fussy/scratch"
[clusters.options]
root_dir = "{root}/fussy/sched"
partition = "elsewhere"
[[clusters.partitions]]
name = "default"
max_time_minutes = 60
rate_tflops = 0.1

[[clusters]]
name = "steady"
adapter = "local"
scratch_dir = "{root}/steady/scratch"
[clusters.options]
root_dir = "{root}/steady/sched"
[[clusters.partitions]]
name = "default"
max_time_minutes = 60
rate_tflops = 0.05
"""


@pytest.fixture
def two(db_url: str, tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "clusters.toml"
    path.write_text(CLUSTERS.format(root=tmp_path))
    app = create_app(make_settings(db_url, tmp_path, clusters_file=path), run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def test_rejected_job_is_rerouted_once_without_a_second_hold(two: Api) -> None:
    ent, member, project = two.tenant()
    job = two.submit(project["id"], member, script="echo rerouted").json()
    assert job["cluster"] == "fussy"
    done = two.drive_until(job["id"], {"completed", "rejected"})
    assert done["state"] == "completed" and done["cluster"] == "steady", done
    moved = done["routing"]["rerouted_from"]
    assert moved["cluster"] == "fussy" and "partition" in moved["reason"]
    kinds = sorted(
        e["kind"] for e in two.get(f"/enterprises/{ent['id']}/ledger?job_id={job['id']}").json()
    )
    assert kinds == ["CHARGE", "HOLD", "RELEASE"]  # one hold, taken at submission
    assert done["charge_pfh"] <= done["hold_pfh"]


def test_explicit_cluster_is_not_rerouted(two: Api) -> None:
    _, member, project = two.tenant()
    job = two.submit(project["id"], member, cluster="fussy").json()
    done = two.drive_until(job["id"], {"completed", "rejected"})
    assert done["state"] == "rejected" and "partition" in done["reason"]
    assert done["charge_pfh"] == 0


def test_jobs_retry_at_once_when_their_cluster_answers_again(two: Api) -> None:
    """After an outage the backlog does not wait for each job's back-off slot."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from broker.db import session_scope
    from broker.models import Cluster, ClusterStatus, Job

    _, member, project = two.tenant()
    job = two.submit(project["id"], member, cluster="steady").json()
    app = two.client.app
    with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
        row = s.scalar(select(Job))
        assert row is not None
        row.next_attempt_at = datetime.now(UTC) + timedelta(minutes=2)  # backed off
        cluster = s.scalar(select(Cluster).where(Cluster.name == "steady"))
        assert cluster is not None
        cluster.status = ClusterStatus.DOWN
    app.state.worker.refresh_clusters()  # type: ignore[attr-defined]
    done = two.drive_until(job["id"], {"completed"}, timeout_s=20)
    assert done["cluster"] == "steady"


def test_with_every_cluster_down_jobs_are_accepted_and_queued(two: Api) -> None:
    from sqlalchemy import update

    from broker.db import session_scope
    from broker.models import Cluster, ClusterStatus

    _, member, project = two.tenant()
    with session_scope(two.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        s.execute(update(Cluster).values(status=ClusterStatus.DOWN, last_error="outage"))
    r = two.submit(project["id"], member)
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "accepted"
    assert "queued for" in r.json()["routing"]["reasons"][0]
