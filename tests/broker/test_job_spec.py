"""The spec as submitted, through the API on the local adapter (SQLite and PostgreSQL):
environment and working directory reach the job, refused names and paths are 422s
naming the field, QOS and reservations come from the partitions' allow-lists,
GET /jobs/{id} returns the spec, GET /me says who the token is, usage defaults to the
current month."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.models import Job
from broker.services.scheduling import spec_for

from .conftest import Api, make_settings, operator_token

# Two local clusters: "fast" wins routing on speed but allows no QOS or reservation;
# "open" allows some, and has a node feature.
CLUSTERS = """
[[clusters]]
name = "fast"
adapter = "local"
scratch_dir = "{root}/fast/scratch"
[clusters.options]
root_dir = "{root}/fast/sched"
[[clusters.partitions]]
name = "default"
max_time_minutes = 60
rate_tflops = 0.2

[[clusters]]
name = "open"
adapter = "local"
scratch_dir = "{root}/open/scratch"
[clusters.options]
root_dir = "{root}/open/sched"
[[clusters.partitions]]
name = "default"
max_time_minutes = 60
rate_tflops = 0.05
features = ["bigmem"]
allowed_qos = ["normal", "high"]
allowed_reservations = ["maint"]
"""


@pytest.fixture
def two(db_url: str, tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "clusters.toml"
    path.write_text(CLUSTERS.format(root=tmp_path))
    app = create_app(make_settings(db_url, tmp_path, clusters_file=path), run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def _output(api: Api, job_id: str, token: str) -> str:
    r = api.get(f"/jobs/{job_id}/output", token)
    assert r.status_code == 200, r.text
    return str(r.text)


# -- environment and working directory reach the job -------------------------------------


def test_environment_and_working_directory_reach_the_job(api: Api) -> None:
    _, member, project = api.tenant()
    script = (
        'echo "FOO=$FOO"\n'
        "pwd -P\n"
        'echo "JOB=$BROKER_JOB_ID"\n'
        'echo "SCHED=$BROKER_SCHEDULER_JOB_ID"\n'
        "touch made-here\n"
    )
    job = api.submit(
        project["id"],
        member,
        script=script,
        environment={"FOO": "  two words  ", "PATH": "/usr/bin:/bin"},
        working_directory="run/here",
    )
    assert job.status_code == 202, job.text
    done = api.drive_until(job.json()["id"], {"completed", "failed", "rejected"})
    assert done["state"] == "completed", done
    lines = _output(api, done["id"], member).splitlines()
    assert lines[0] == "FOO=  two words  "  # as sent: no stripping, no shell
    assert lines[1].endswith(f"/{done['enterprise_id']}/{done['id']}/run/here")
    assert lines[2] == f"JOB={done['id']}"  # the broker's id, not the scheduler's
    assert lines[3] == f"SCHED={done['scheduler_job_id']}"
    # stdout.txt stays in the job's directory root; the job wrote where it started.
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    scratch = Path(settings.load_clusters()[0].scratch_dir)
    job_dir = scratch / done["enterprise_id"] / done["id"]
    assert (job_dir / "stdout.txt").is_file()
    assert (job_dir / "run" / "here" / "made-here").is_file()


def test_a_python_shebang_script_runs_under_python(api: Api) -> None:
    _, member, project = api.tenant()
    script = "#!/usr/bin/env python3\nimport sys\nprint('python', sys.version_info[0])\n"
    job = api.submit(project["id"], member, script=script).json()
    done = api.drive_until(job["id"], {"completed", "failed", "rejected"})
    assert done["state"] == "completed", done
    assert _output(api, done["id"], member) == "python 3\n"


@pytest.mark.parametrize(
    "name",
    ["SLURM_CONF", "SBATCH_FOO", "SALLOC_X", "SRUN_X", "PMI_RANK", "BROKER_X", "LD_PRELOAD"],
)
def test_scheduler_steering_names_are_422_naming_the_variable(api: Api, name: str) -> None:
    _, member, project = api.tenant()
    r = api.submit(project["id"], member, environment={"OK": "1", name: "x"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"environment.{name}: "), r.text
    assert "reserved" in r.json()["detail"]


@pytest.mark.parametrize(
    ("environment", "field"),
    [
        ({"1X": "v"}, "environment.1X"),
        ({"A-B": "v"}, "environment.A-B"),
        ({"A": "v\x00w"}, "environment.A"),
        ({"A": "x" * 40_000}, "environment.A"),
        ({f"V{i}": "1" for i in range(101)}, "environment"),
        ({f"V{i}": "x" * 30_000 for i in range(3)}, "environment"),
    ],
)
def test_malformed_or_oversized_environments_are_422(
    api: Api, environment: dict[str, str], field: str
) -> None:
    _, member, project = api.tenant()
    r = api.submit(project["id"], member, environment=environment)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}: "), r.text


@pytest.mark.parametrize(
    "path", ["../up", "/etc", "a/../b", "a//b", "./a", "a/.", "stdout.txt", "a b", "a\nb"]
)
def test_working_directory_outside_or_odd_is_422(api: Api, path: str) -> None:
    _, member, project = api.tenant()
    r = api.submit(project["id"], member, working_directory=path)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("working_directory: "), r.text


def test_working_directory_where_an_input_lands_is_422(api: Api) -> None:
    _, member, project = api.tenant()
    pid = project["id"]
    up = api.client.put(
        f"/api/v1/projects/{pid}/files/data/in.txt", content=b"x", headers=api.h(member)
    )
    assert up.status_code == 201, up.text
    r = api.submit(pid, member, inputs=["data/in.txt"], working_directory="data/in.txt/run")
    assert r.status_code == 422 and "inputs[0]" in r.json()["detail"], r.text
    ok = api.submit(pid, member, inputs=["data/in.txt"], working_directory="data")
    assert ok.status_code == 202, ok.text


# -- QOS and reservations from the allow-lists --------------------------------------------


def test_qos_and_reservation_only_from_a_partitions_allow_list(two: Api) -> None:
    _, member, project = two.tenant()
    pid = project["id"]
    plain = two.submit(pid, member).json()
    assert plain["cluster"] == "fast"  # the faster cluster wins when nothing narrows it
    job = two.submit(pid, member, qos="high", reservation="maint")
    assert job.status_code == 202, job.text
    body = job.json()
    # Routed to the partition that allows them, with the refusal of the other explained.
    assert body["cluster"] == "open" and body["qos"] == "high"
    assert body["reservation"] == "maint"
    fast = [r for r in body["routing"]["rejected"] if r["cluster"] == "fast"]
    assert "qos 'high' is not allowed here" in fast[0]["reason"]
    for field, value in [("qos", "premium"), ("reservation", "other")]:
        r = two.submit(pid, member, **{field: value})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail.startswith(f"{field}: '{value}' is not allowed"), detail
    r = two.submit(pid, member, cluster="fast", qos="normal")
    assert r.status_code == 422 and r.json()["detail"].startswith("qos: "), r.text
    r = two.submit(pid, member, qos="bad name")
    assert r.status_code == 422 and r.json()["detail"].startswith("qos: "), r.text
    parts = {c["name"]: c["partitions"][0] for c in two.get("/clusters", member).json()}
    assert parts["open"]["allowed_qos"] == ["normal", "high"]
    assert parts["open"]["allowed_reservations"] == ["maint"]
    assert parts["fast"]["allowed_qos"] == []


def test_the_adapter_gets_the_stored_spec(two: Api) -> None:
    """spec_for hands the adapters what was stored: constraints ANDed, QOS, reservation,
    where the job starts inside its directory, its variables and the broker's id."""
    _, member, project = two.tenant()
    body = {
        "constraints": ["bigmem"],
        "qos": "normal",
        "reservation": "maint",
        "environment": {"FOO": "1"},
        "working_directory": "a/b",
    }
    job = two.submit(project["id"], member, **body).json()
    factory = two.client.app.state.session_factory  # type: ignore[attr-defined]
    with factory() as s:
        row = s.get(Job, uuid.UUID(job["id"]))
        assert row is not None
        row.work_dir = "/scratch/e/j"
        spec = spec_for(row, "alice", "acct")
    assert spec.constraints == "bigmem" and spec.qos == "normal" and spec.reservation == "maint"
    assert spec.working_dir == "/scratch/e/j/a/b" and spec.job_dir == "/scratch/e/j"
    assert dict(spec.environment) == {"FOO": "1"} and spec.broker_job_id == job["id"]


# -- GET /jobs/{id} returns the spec ------------------------------------------------------


def test_get_job_returns_the_submitted_spec_and_lists_stay_light(two: Api) -> None:
    _, member, project = two.tenant()
    pid = project["id"]
    up = two.client.put(
        f"/api/v1/projects/{pid}/files/in/data.txt", content=b"data\n", headers=two.h(member)
    )
    assert up.status_code == 201, up.text
    spec: dict[str, Any] = {
        "script": "#!/bin/sh\ncat in/data.txt > out.txt",
        "environment": {"FOO": "bar"},
        "working_directory": "work",
        "inputs": ["in/data.txt"],
        "outputs": ["work/*.txt"],
        "qos": "normal",
        "reservation": "maint",
        "constraints": ["bigmem"],
    }
    job = two.submit(pid, member, **spec)
    assert job.status_code == 202, job.text
    got = two.get(f"/jobs/{job.json()['id']}", member).json()
    assert {k: got[k] for k in spec} == spec
    assert job.json() == got  # the 202 is the job as GET /jobs/{id} shows it
    item = next(j for j in two.get("/jobs", member).json()["items"] if j["id"] == got["id"])
    assert not {"script", "inputs", "outputs"} & set(item)
    assert item == {k: v for k, v in got.items() if k not in ("script", "inputs", "outputs")}
    bare = two.get(f"/jobs/{two.submit(pid, member).json()['id']}", member).json()
    assert bare["script"] == "#!/bin/bash\necho hi"  # a #! line added, as sbatch needs
    assert bare["environment"] == {} and bare["working_directory"] is None
    assert bare["qos"] is None and bare["reservation"] is None and bare["constraints"] == []
    assert bare["inputs"] == [] and bare["outputs"] is None


# -- GET /me -------------------------------------------------------------------------------


def test_me_says_who_the_token_is(api: Api) -> None:
    ent, member, project = api.tenant()
    draft = api.project(ent["id"], approve=False)
    when = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    r = api.post(
        f"/enterprises/{ent['id']}/tokens",
        json={"name": "ci", "role": "admin", "expires_at": when.isoformat()},
    )
    assert r.status_code == 201, r.text
    admin, admin_id = r.json()["token"], r.json()["id"]

    me = api.get("/me", member).json()
    assert me["role"] == "member" and me["name"] == "member"
    assert me["enterprise"] == {"id": ent["id"], "name": ent["name"]}
    assert me["projects"] == [
        {"id": project["id"], "name": project["name"], "status": "active"},
        {"id": draft["id"], "name": draft["name"], "status": "draft"},
    ]
    assert me["expires_at"] is None and uuid.UUID(me["token_id"])

    me = api.get("/me", admin).json()
    assert me["role"] == "admin" and me["token_id"] == admin_id and me["name"] == "ci"
    assert datetime.fromisoformat(me["expires_at"]) == when
    assert len(me["projects"]) == 2

    other, _, _ = api.tenant()  # another enterprise's projects never show
    me = api.get("/me").json()  # the operator
    assert me["role"] == "operator" and me["enterprise"] is None and me["projects"] == []
    assert other["id"] != ent["id"]
    assert api.client.get("/api/v1/me").status_code == 401


# -- usage defaults to the current month ---------------------------------------------------


def test_usage_without_month_is_the_current_month(api: Api) -> None:
    ent, member, project = api.tenant()
    job = api.submit(project["id"], member, script="sleep 1").json()
    done = api.drive_until(job["id"], {"completed"})
    assert done["charge_pfh"] is not None
    r = api.get(f"/enterprises/{ent['id']}/usage", member)
    assert r.status_code == 200, r.text
    month = datetime.now(UTC).strftime("%Y-%m")
    assert r.json()["month"] == month
    assert r.json() == api.get(f"/enterprises/{ent['id']}/usage?month={month}", member).json()
    assert [j["job_id"] for p in r.json()["projects"] for j in p["jobs"]] == [job["id"]]
    csv = api.client.get(
        f"/api/v1/enterprises/{ent['id']}/usage", headers=api.h(member, Accept="text/csv")
    )
    assert csv.status_code == 200 and job["id"] in csv.text
    bad = api.get(f"/enterprises/{ent['id']}/usage?month=2026-13", member)
    assert bad.status_code == 422
