"""The spec's own fields on the live dev clusters: alpha (slurm-cli) and beta (slurmrestd).

The job's environment and working directory reach it, ``BROKER_JOB_ID`` is the broker's
id and ``SLURM_JOB_ID`` the scheduler's; scheduler-steering names are 422s before
anything reaches Slurm; constraints and reservations reach the scheduler (the dev
clusters define no node features and no reservations, so Slurm refusing the ones asked
for is the proof); QOS values come from the allow-list (the dev clusters do not track
QOS, so an allowed one is shown to submit and run, the option itself is checked
offline in tests/scheduler_adapters/test_spec_fields.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.db import session_scope
from broker.services import slurm_sync

from .._slurm import ensure_posix_user, load_clusters
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

USER = "tenantspec"
ACCOUNT = "e_slurm_spec"
FEATURE = "hcbnosuchfeature"  # on the broker's partitions, on no Slurm node
RESERVATION = "hcbnosuchres"  # allowed by the broker, unknown to Slurm


@pytest.fixture(scope="module")
def live(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Api, str, dict[str, Any]]]:
    ensure_posix_user(USER)
    tmp = tmp_path_factory.mktemp("live-spec")
    shutil.copy(sqlite_template, tmp / "broker.db")
    # The dev clusters' file, with a feature and allow-lists on every partition.
    text = slurm_clusters_file.read_text()
    partitions = sum(len(c["partitions"]) for c in load_clusters(slurm_clusters_file).values())
    assert text.count("features = []") == partitions  # the CPU and the gpu partitions
    clusters = tmp / "clusters.toml"
    clusters.write_text(
        text.replace(
            "features = []",
            f'features = ["{FEATURE}"]\nallowed_qos = ["normal"]\n'
            f'allowed_reservations = ["{RESERVATION}"]',
        )
    )
    settings = make_settings(f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=clusters)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        body = {"name": "Slurm Spec", "posix_user": USER, "slurm_account": ACCOUNT}
        ent = api.post("/enterprises", json=body).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
        member = api.token(ent["id"])
        project = api.project(ent["id"])
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False)
        assert all(not r.error for r in results), results
        app.state.worker.refresh_clusters()
        yield api, member, project


@pytest.mark.parametrize("cluster", ["alpha", "beta"])
def test_environment_and_working_directory_reach_the_job(
    live: tuple[Api, str, dict[str, Any]], cluster: str
) -> None:
    api, member, project = live
    script = (
        'echo "FOO=$FOO"\npwd -P\necho "$BROKER_JOB_ID $SLURM_JOB_ID"\nwhoami\ntouch made-here\n'
    )
    value = "$(touch /tmp/hcb-injected) `id` ; two  words"  # data, never a shell's input
    r = api.submit(
        project["id"],
        member,
        cluster=cluster,
        script=script,
        environment={"FOO": value, "OMP_NUM_THREADS": "2"},
        working_directory="run/here",
        qos="normal",
    )
    assert r.status_code == 202, r.text
    done = api.drive_until(r.json()["id"], {"completed", "failed", "rejected"}, timeout_s=90)
    assert done["state"] == "completed", done
    out = api.get(f"/jobs/{done['id']}/output", member).text.splitlines()
    scratch = Path(load_clusters_of(api)[cluster]["scratch_dir"])
    job_dir = scratch / done["enterprise_id"] / done["id"]
    assert out == [
        f"FOO={value}",
        str(job_dir / "run" / "here"),
        f"{done['id']} {done['scheduler_job_id']}",
        USER,
    ]
    assert (job_dir / "run" / "here" / "made-here").is_file()
    assert (job_dir / "stdout.txt").is_file()  # the logs stay at the directory's root
    got = api.get(f"/jobs/{done['id']}", member).json()
    assert got["environment"]["FOO"] == value and got["working_directory"] == "run/here"
    assert got["qos"] == "normal"


def load_clusters_of(api: Api) -> dict[str, Any]:
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    return {c.name: c.model_dump() for c in settings.load_clusters()}


@pytest.mark.parametrize("name", ["SLURM_CONF", "SBATCH_ACCOUNT", "SBATCH_QOS", "BROKER_JOB_ID"])
def test_steering_names_are_422_on_slurm_clusters(
    live: tuple[Api, str, dict[str, Any]], name: str
) -> None:
    api, member, project = live
    r = api.submit(project["id"], member, cluster="alpha", environment={name: "x"})
    assert r.status_code == 422 and r.json()["detail"].startswith(f"environment.{name}: ")


@pytest.mark.parametrize("cluster", ["alpha", "beta"])
@pytest.mark.parametrize(
    ("field", "value", "slurm_says"),
    [
        ("constraints", [FEATURE], "feature"),
        ("reservation", RESERVATION, "reservation"),
    ],
)
def test_constraints_and_reservation_reach_the_scheduler(
    live: tuple[Api, str, dict[str, Any]], cluster: str, field: str, value: Any, slurm_says: str
) -> None:
    """Slurm itself refuses what no node or reservation of it has: the option got there."""
    api, member, project = live
    r = api.submit(project["id"], member, cluster=cluster, **{field: value})
    assert r.status_code == 202, r.text
    done = api.drive_until(r.json()["id"], {"rejected", "completed", "failed"}, timeout_s=60)
    assert done["state"] == "rejected", done
    assert slurm_says in done["reason"].lower(), done["reason"]
    assert done["charge_pfh"] == 0


def test_qos_off_the_allow_list_is_422_before_slurm(
    live: tuple[Api, str, dict[str, Any]],
) -> None:
    api, member, project = live
    for cluster in ("alpha", "beta"):
        r = api.submit(project["id"], member, cluster=cluster, qos="high")
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("qos: 'high' is not allowed"), r.text
