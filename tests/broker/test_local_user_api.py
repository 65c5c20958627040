"""Through the API, as root (as this suite runs): a local job never runs as root."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from .._slurm import ensure_posix_user
from .conftest import Api

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the per-user mode needs root")


def test_a_tenants_job_runs_as_nobody_when_its_user_is_not_here(api: Api) -> None:
    ent, member, project = api.tenant()
    with pytest.raises(KeyError):
        pwd.getpwnam(ent["posix_user"])
    job = api.submit(project["id"], member, script="id -u; touch mine; stat -c %U mine").json()
    done = api.drive_until(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    uid, owner = api.get(f"/jobs/{job['id']}/output", member).text.split()
    assert int(uid) == pwd.getpwnam("nobody").pw_uid != 0
    assert owner == "nobody"  # its directory was handed to it: it could write there


def test_a_tenants_job_runs_as_its_posix_user(api: Api) -> None:
    ensure_posix_user("tenantident")
    r = api.post("/enterprises", json={"name": "Here", "posix_user": "tenantident"})
    assert r.status_code == 201, r.text
    ent = r.json()
    api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 5})
    member, project = api.token(ent["id"]), api.project(ent["id"])
    job = api.submit(project["id"], member, script="id -un; pwd").json()
    done = api.drive_until(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    name, cwd = api.get(f"/jobs/{job['id']}/output", member).text.split()
    assert name == "tenantident"
    assert Path(cwd).stat().st_uid == pwd.getpwnam("tenantident").pw_uid


def test_readyz_says_who_local_jobs_run_as(api: Api) -> None:
    ready = api.client.get("/readyz").json()
    assert ready["local_jobs_run_as"] == (
        "each job's POSIX user; where it does not exist here: nobody"
    )
