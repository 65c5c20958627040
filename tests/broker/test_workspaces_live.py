"""Job I/O on the live dev cluster alpha: upload an input, run a job that reads it and
writes a result, download the result byte-identical to what the job wrote."""

from __future__ import annotations

import hashlib
import os
import pwd
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

USER = "tenantio"
ACCOUNT = "e_slurm_io"


@pytest.fixture(scope="module")
def live(
    slurm_clusters_file: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Api, str, dict[str, Any]]]:
    ensure_posix_user(USER)
    tmp = tmp_path_factory.mktemp("live-io")
    shutil.copy(sqlite_template, tmp / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp / 'broker.db'}", tmp, clusters_file=slurm_clusters_file
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        body = {"name": "Slurm IO", "posix_user": USER, "slurm_account": ACCOUNT}
        ent = api.post("/enterprises", json=body).json()
        api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
        member = api.token(ent["id"])
        project = api.project(ent["id"])
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False, only="alpha")
        assert all(not r.error for r in results), results
        app.state.worker.refresh_clusters()
        yield api, member, project


def test_input_in_result_out_on_alpha(live: tuple[Api, str, dict[str, Any]]) -> None:
    api, member, project = live
    pid = project["id"]
    data = os.urandom(256 * 1024) + b"\nend of input\n"
    r = api.client.put(
        f"/api/v1/projects/{pid}/files/in/data.bin", content=data, headers=api.h(member)
    )
    assert r.status_code == 201, r.text
    script = (
        "set -e\n"
        "mkdir -p out\n"
        "sha256sum in/data.bin | cut -d' ' -f1 > out/input.sha256\n"
        "tail -c 13 in/data.bin | tr a-z A-Z > out/result.txt\n"
        "whoami >> out/result.txt\n"
        "echo wrote results"
    )
    job = api.submit(
        pid,
        member,
        cluster="alpha",
        name="io",
        script=script,
        inputs=["in/data.bin"],
        outputs=["out/*"],
    ).json()
    assert job["state"] == "accepted", job
    done = api.drive_until(job["id"], {"completed", "failed", "rejected"}, timeout_s=60)
    assert done["state"] == "completed", done
    jid = done["id"]

    # What the job wrote, as it lies in its directory on alpha's scratch...
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    alpha = next(c for c in settings.load_clusters() if c.name == "alpha")
    work_dir = Path(alpha.scratch_dir) / done["enterprise_id"] / jid
    staged = work_dir / "in" / "data.bin"
    assert staged.stat().st_uid == pwd.getpwnam(USER).pw_uid  # staged for the job's user
    written = (work_dir / "out" / "result.txt").read_bytes()
    assert written == b"END OF INPUT\n" + USER.encode() + b"\n"

    # ...comes back byte-identical from the workspace.
    got = api.client.get(
        f"/api/v1/projects/{pid}/files/jobs/{jid}/out/result.txt", headers=api.h(member)
    )
    assert got.status_code == 200 and got.content == written
    digest = api.client.get(
        f"/api/v1/projects/{pid}/files/jobs/{jid}/out/input.sha256", headers=api.h(member)
    )
    assert digest.text.strip() == hashlib.sha256(data).hexdigest()
    stdout = api.client.get(
        f"/api/v1/projects/{pid}/files/jobs/{jid}/stdout.txt", headers=api.h(member)
    )
    assert stdout.text == "wrote results\n"
    io = api.get(f"/jobs/{jid}/io", member).json()
    assert io["stage_in"]["state"] == "done" and io["stage_out"]["state"] == "done", io
