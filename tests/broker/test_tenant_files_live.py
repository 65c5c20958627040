"""The tenant boundary on the live dev cluster alpha (Slurm 22.05, slurm-cli adapter).

* A job replaces its stdout, stderr and declared outputs (a file and a directory) by
  links to files only the center may read (the key that signs every slurmrestd token,
  a root-only directory): no API read returns a byte of them.
* Enterprise B's job cannot list or read enterprise A's job directory or the inputs
  staged there: it is told "Permission denied" in its own output.
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

from .._slurm import ensure_posix_user
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

JWT_KEY = Path("/var/lib/hpc-broker-dev/etc/jwt_hs256.key")
TENANTS = (("tenantbnda", "e_slurm_bnd_a"), ("tenantbndb", "e_slurm_bnd_b"))
SECRET = "center-only-secret-4f1c"


@pytest.fixture(scope="module")
def live(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Api, list[tuple[str, dict[str, Any]]], Path]]:
    tmp = tmp_path_factory.mktemp("live-boundary")
    root_only = tmp / "root-only"
    root_only.mkdir(mode=0o700)
    (root_only / "secret.txt").write_text(SECRET)
    (root_only / "secret.txt").chmod(0o600)
    shutil.copy(sqlite_template, tmp / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=slurm_clusters_file
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        tenants = []
        for user, account in TENANTS:
            ensure_posix_user(user)
            body = {"name": f"Boundary {user}", "posix_user": user, "slurm_account": account}
            r = api.post("/enterprises", json=body)
            assert r.status_code == 201, r.text
            ent = r.json()
            api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
            tenants.append((api.token(ent["id"]), api.project(ent["id"])))
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False, only="alpha")
        assert all(not r.error for r in results), results
        app.state.worker.refresh_clusters()
        yield api, tenants, root_only


def _all_reads(api: Api, job_id: str, project_id: str, token: str) -> list[bytes]:
    base = f"/api/v1/jobs/{job_id}/output"
    h = api.h(token)
    answers = [
        api.client.get(base, headers=h),
        api.client.get(f"{base}?tail=3", headers=h),
        api.client.get(f"{base}?stream=stderr", headers=h),
        api.client.get(base, headers={**h, "Range": "bytes=0-"}),
        api.client.get(f"{base}?stream=stderr", headers={**h, "Range": "bytes=-16"}),
    ]
    listing = api.client.get(
        f"/api/v1/projects/{project_id}/files", params={"prefix": f"jobs/{job_id}/"}, headers=h
    )
    answers.append(listing)
    for item in listing.json()["items"]:
        answers.append(
            api.client.get(f"/api/v1/projects/{project_id}/files/{item['path']}", headers=h)
        )
    answers.append(api.client.get(f"/api/v1/jobs/{job_id}/io", headers=h))
    return [a.content for a in answers]


def test_links_to_center_files_never_come_back(
    live: tuple[Api, list[tuple[str, dict[str, Any]]], Path],
) -> None:
    api, tenants, root_only = live
    member, project = tenants[0]
    key = JWT_KEY.read_bytes()
    script = (
        "echo start; echo err >&2\n"
        f"rm -f stdout.txt stderr.txt; ln -s {JWT_KEY} stdout.txt; ln -s {JWT_KEY} stderr.txt\n"
        f"ln -s {root_only / 'secret.txt'} result.txt; ln -s {root_only} results\n"
    )
    job = api.submit(
        project["id"],
        member,
        cluster="alpha",
        name="links",
        script=script,
        outputs=["result.txt", "results/*", "results/**", "*"],
    ).json()
    done = api.drive_until(job["id"], {"completed", "failed", "rejected"}, timeout_s=90)
    assert done["state"] == "completed", done
    answers = _all_reads(api, job["id"], project["id"], member)
    for body in answers:
        assert key not in body and SECRET.encode() not in body, body[:200]
    assert b"symbolic link" in answers[0], answers[0]
    io = api.get(f"/jobs/{job['id']}/io", member).json()["stage_out"]
    assert io["files"] == [] and "results is a symbolic link" in io["error"], io


def test_another_enterprise_cannot_list_or_read_a_job_directory(
    live: tuple[Api, list[tuple[str, dict[str, Any]]], Path],
) -> None:
    api, tenants, _ = live
    (a_member, a_project), (b_member, b_project) = tenants
    data = b"enterprise A's staged input " + SECRET.encode()
    r = api.client.put(
        f"/api/v1/projects/{a_project['id']}/files/in/private.txt",
        content=data,
        headers=api.h(a_member),
    )
    assert r.status_code == 201, r.text
    a_job = api.submit(
        a_project["id"],
        a_member,
        cluster="alpha",
        script="cat in/private.txt > /dev/null; echo a-done",
        inputs=["in/private.txt"],
    ).json()
    a_done = api.drive_until(a_job["id"], {"completed", "failed", "rejected"}, timeout_s=90)
    assert a_done["state"] == "completed", a_done
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    alpha = next(c for c in settings.load_clusters() if c.name == "alpha")
    a_ent_dir = Path(alpha.scratch_dir) / a_done["enterprise_id"]
    a_work = a_ent_dir / a_done["id"]
    assert (a_work / "in" / "private.txt").read_bytes() == data  # it is there...

    script = (
        f"ls {alpha.scratch_dir} 2>&1; echo '--'\n"
        f"ls {a_ent_dir} 2>&1; echo '--'\n"
        f"ls {a_work} 2>&1; echo '--'\n"
        f"cat {a_work}/in/private.txt 2>&1; echo '--'\n"
        f"cat {a_work}/stdout.txt 2>&1; echo end\n"
    )
    b_job = api.submit(b_project["id"], b_member, cluster="alpha", script=script).json()
    b_done = api.drive_until(b_job["id"], {"completed", "failed", "rejected"}, timeout_s=90)
    assert b_done["state"] in ("completed", "failed"), b_done
    out = api.client.get(f"/api/v1/jobs/{b_done['id']}/output", headers=api.h(b_member)).text
    sections = out.split("--\n")
    assert len(sections) == 5, out
    assert all("Permission denied" in part for part in sections), out  # ...and out of reach
    assert SECRET not in out and "a-done" not in out, out
    assert a_done["enterprise_id"] not in sections[0], out  # the scratch root is not listed
