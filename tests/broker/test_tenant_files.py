"""What a hostile tenant's job leaves in its directory never leaks, stalls or floods.

Jobs run on the local adapter (SQLite and PostgreSQL): they replace their stdout,
stderr and declared outputs by links to a file and a directory only the center may
read, by FIFOs, or by a sparse file far larger than the workspace quota, and name
files with control characters. The API must answer every read with a reason and no
byte of a target, the worker must not block, and other tenants keep being served.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from broker.app import create_app

from ..servers import VENV_BIN, brokerctl_server, clean_env
from .conftest import Api, make_settings, operator_token

SECRET = "TOPSECRET-center-only-0123456789"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    """A file and a directory only their owner (the broker's user) may read."""
    d = tmp_path / "center-only"
    d.mkdir(mode=0o700)
    (d / "jwt.key").write_text(SECRET)
    (d / "jwt.key").chmod(0o600)
    return {"file": d / "jwt.key", "dir": d}


@pytest.fixture
def capped(db_url: str, tmp_path: Path) -> Iterator[Api]:
    """The API with a 100 MiB workspace quota per project."""
    settings = make_settings(db_url, tmp_path, workspace_quota_bytes=100 * 1024**2)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def _reads(api: Api, job_id: str, token: str) -> list[Any]:
    """Every way the API serves a job's output."""
    base = f"/api/v1/jobs/{job_id}/output"
    h = api.h(token)
    return [
        api.client.get(base, headers=h),
        api.client.get(f"{base}?tail=5", headers=h),
        api.client.get(f"{base}?stream=stderr", headers=h),
        api.client.get(f"{base}?stream=stderr&tail=1", headers=h),
        api.client.get(base, headers={**h, "Range": "bytes=0-100"}),
        api.client.get(f"{base}?stream=stderr", headers={**h, "Range": "bytes=-10"}),
    ]


def _workspace_bytes(api: Api, project_id: str, token: str) -> list[bytes]:
    """The bytes of every file the workspace lists (collected outputs included)."""
    out = []
    listing = api.get(f"/projects/{project_id}/files", token).json()
    for item in listing["items"]:
        r = api.client.get(
            f"/api/v1/projects/{project_id}/files/{item['path']}", headers=api.h(token)
        )
        out.append(r.content)
    return out


def test_links_to_center_files_are_never_served(api: Api, secrets: dict[str, Path]) -> None:
    _, member, project = api.tenant()
    f, d = secrets["file"], secrets["dir"]
    script = (
        "echo visible; echo err >&2\n"
        f"rm -f stdout.txt stderr.txt; ln -s {f} stdout.txt; ln -s {f} stderr.txt\n"
        f"ln -s {f} result.txt; ln -s {d} results; mkdir real; ln -s {f} real/inner.key\n"
    )
    outputs = ["result.txt", "results/*", "results/**", "**/*.key", "*"]
    job = api.submit(project["id"], member, script=script, outputs=outputs).json()
    done = api.drive_until(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    for r in _reads(api, job["id"], member):
        assert SECRET not in r.text
        assert r.status_code == 422, (r.status_code, r.text)
        body = r.json()
        assert body["error"] == "InvalidInput" and "symbolic link" in body["detail"], body
    io = api.get(f"/jobs/{job['id']}/io", member).json()["stage_out"]
    assert io["files"] == [], io  # nothing was collected: every name is a link
    assert "jwt.key" not in str(io) and "center-only" not in str(io), io["error"]
    assert all(SECRET.encode() not in b for b in _workspace_bytes(api, project["id"], member))
    assert "symbolic link" in done["reason"] or "symbolic link" in io["error"], (done, io)


@pytest.mark.parametrize("where", ["stdout", "stderr", "output"])
def test_fifos_neither_stall_the_broker_nor_answer(api: Api, where: str) -> None:
    _, member, project = api.tenant()
    name = {"stdout": "stdout.txt", "stderr": "stderr.txt", "output": "pipe"}[where]
    script = f"echo some output; rm -f {name}; mkfifo {name}"
    job = api.submit(project["id"], member, script=script, outputs=["pipe", "*.txt"]).json()
    started = time.monotonic()
    done = api.drive_until(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    io = api.get(f"/jobs/{job['id']}/io", member).json()["stage_out"]
    assert io["state"] in ("partial", "failed") and f"{name} is a FIFO" in io["error"], io
    assert f"{name} is a FIFO" in done["reason"], done
    stream = "stderr" if where == "stderr" else "stdout"
    r = api.client.get(f"/api/v1/jobs/{job['id']}/output?stream={stream}", headers=api.h(member))
    if where == "output":
        assert r.status_code == 200 and "some output" in r.text, r.text
    else:
        assert r.status_code == 422 and "FIFO" in r.json()["detail"], r.text
    assert time.monotonic() - started < 30


def _disk_bytes(root: Path) -> int:
    """Blocks really used under ``root`` (a sparse file counts at what it occupies)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def test_sparse_file_over_quota_and_fifos_while_another_tenant_submits(capped: Api) -> None:
    """The attacker's job leaves a 2 GiB sparse output (quota 100 MiB) and FIFOs as
    stdout and as an output; meanwhile another enterprise submits: every one of its
    submits is accepted within a second, and the broker's disk never holds more than
    the quota."""
    api = capped
    _, attacker, a_project = api.tenant()
    _, victim, v_project = api.tenant(grant_pfh=100)
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    ws_root = settings.data_dir.resolve() / "workspaces"
    # One submit before the attack: its cold costs (connections, the routing snapshot)
    # are not the attack's.
    assert api.submit(v_project["id"], victim, script="true").status_code == 202
    script = "truncate -s 2G big.bin; mkfifo pipe; rm -f stdout.txt; mkfifo stdout.txt"
    job = api.submit(
        a_project["id"], attacker, script=script, outputs=["big.bin", "pipe", "*.txt"]
    ).json()

    worker = api.client.app.state.worker  # type: ignore[attr-defined]
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        while not stop.is_set():
            try:
                worker.run_once()
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    latencies, peak_disk = [], 0
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            r = api.submit(v_project["id"], victim, script="true", time_limit_minutes=1)
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 202, r.text
            peak_disk = max(peak_disk, _disk_bytes(ws_root))
            io = api.get(f"/jobs/{job['id']}/io", attacker).json()["stage_out"]
            if io.get("state") in ("done", "partial", "failed") and len(latencies) >= 10:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    done = api.get(f"/jobs/{job['id']}", attacker).json()
    assert done["state"] == "completed", done
    assert "workspace quota exceeded at big.bin: 2147483648 bytes" in done["reason"], done
    assert "pipe is a FIFO" in done["reason"] and "stdout.txt is a FIFO" in done["reason"]
    lat = sorted(latencies)
    print(
        f"\nvictim submits while the attacker's stage-out ran: {len(lat)}, median"
        f" {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; peak workspace"
        f" disk {peak_disk} bytes (quota {settings.workspace_quota_bytes})"
    )
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    assert peak_disk <= settings.workspace_quota_bytes, peak_disk
    assert _disk_bytes(ws_root) <= settings.workspace_quota_bytes


def test_globs_through_links_list_nothing(api: Api, tmp_path: Path) -> None:
    _, member, project = api.tenant()
    outside = tmp_path / "elsewhere"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "private-name.txt").write_text("x")
    script = f"ln -s {outside} rootdir; ln -s / slash; mkdir own; echo mine > own/a.txt"
    outputs = ["rootdir/*", "rootdir/**", "slash/**", "**/*.txt"]
    job = api.submit(project["id"], member, script=script, outputs=outputs).json()
    done = api.drive_until(job["id"], {"completed"})
    io = api.get(f"/jobs/{done['id']}/io", member).json()["stage_out"]
    assert io["state"] == "partial", io
    assert "rootdir is a symbolic link" in io["error"], io
    assert sorted(io["files"]) == [
        f"jobs/{done['id']}/{n}" for n in ("own/a.txt", "stderr.txt", "stdout.txt")
    ], io
    assert "private-name" not in str(io) and "etc" not in str(io)


def test_odd_names_are_refused_at_collection(api: Api) -> None:
    _, member, project = api.tenant()
    script = (
        "touch \"$(printf 'new\\nline')\" \"$(printf 'tab\\tname')\" 'back\\slash' "
        "\"$(printf 'esc\\033[31m')\" \"$(printf 'del\\177')\" fine.txt"
    )
    job = api.submit(project["id"], member, script=script, outputs=["*"]).json()
    done = api.drive_until(job["id"], {"completed"})
    io = api.get(f"/jobs/{done['id']}/io", member).json()["stage_out"]
    collected = sorted(p.rsplit("/", 1)[-1] for p in io["files"])
    assert collected == ["fine.txt", "stderr.txt", "stdout.txt"], io
    assert io["error"].count("name refused") == 5, io
    listing = api.get(f"/projects/{project['id']}/files", member).json()
    assert all(item["path"].isprintable() for item in listing["items"])
    # Every collected file can be downloaded and deleted.
    for item in listing["items"]:
        path = item["path"]
        url = f"/api/v1/projects/{project['id']}/files/{path}"
        assert api.client.get(url, headers=api.h(member)).status_code == 200
        assert api.client.delete(url, headers=api.h(member)).status_code == 204


def test_listing_is_paginated(api: Api) -> None:
    _, member, project = api.tenant()
    pid = project["id"]
    for i in range(7):
        r = api.client.put(
            f"/api/v1/projects/{pid}/files/d/f{i}.txt", content=b"x", headers=api.h(member)
        )
        assert r.status_code == 201
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/projects/{pid}/files", member, params=params).json()
        seen += [i["path"] for i in page["items"]]
        assert len(page["items"]) <= 3
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"d/f{i}.txt" for i in range(7)]


def test_multipart_upload_is_refused_not_stored(api: Api) -> None:
    _, member, project = api.tenant()
    pid = project["id"]
    r = api.client.put(
        f"/api/v1/projects/{pid}/files/data.bin",
        files={"file": ("data.bin", b"payload")},
        headers=api.h(member),
    )
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "UnsupportedMediaType" and "multipart" in r.json()["detail"]
    assert api.get(f"/projects/{pid}/files", member).json()["items"] == []


def test_parallel_fifo_reads_leave_healthz_answering(db_url: str, tmp_path: Path) -> None:
    """45 concurrent reads of a job's FIFO stdout through a real server (its thread pool
    has 40 workers): each answers at once, and /healthz keeps answering."""
    env = clean_env(
        BROKER_DATABASE_URL=db_url,
        BROKER_DATA_DIR=str(tmp_path / "data"),
        BROKER_WORKER_INTERVAL_S="0.2",
    )
    brokerctl = str(VENV_BIN / "brokerctl")
    subprocess.run([brokerctl, "db", "upgrade"], cwd=tmp_path, env=env, check=True)
    op = subprocess.run(
        [brokerctl, "token", "create", "--operator", "--name", "ops"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with brokerctl_server("serve", tmp_path, env) as base:
        h = {"Authorization": f"Bearer {op}"}
        ent = httpx.post(f"{base}/enterprises", json={"name": "Fifo Co"}, headers=h).json()
        httpx.post(f"{base}/enterprises/{ent['id']}/grants", json={"amount_pfh": 5}, headers=h)
        pid = httpx.post(
            f"{base}/projects", json={"enterprise_id": ent["id"], "name": "p"}, headers=h
        ).json()["id"]
        httpx.post(f"{base}/projects/{pid}/approve", headers=h)
        member = httpx.post(
            f"{base}/enterprises/{ent['id']}/tokens",
            json={"name": "m", "role": "member"},
            headers=h,
        ).json()["token"]
        h = {"Authorization": f"Bearer {member}"}
        body = {
            "name": "fifo",
            "script": "rm -f stdout.txt; mkfifo stdout.txt",
            "nodes": 1,
            "time_limit_minutes": 1,
        }
        job = httpx.post(f"{base}/projects/{pid}/jobs", json=body, headers=h).json()
        for _ in range(200):
            if httpx.get(f"{base}/jobs/{job['id']}", headers=h).json()["state"] == "completed":
                break
            time.sleep(0.1)
        codes: list[int] = []

        def read() -> None:
            r = httpx.get(f"{base}/jobs/{job['id']}/output", headers=h, timeout=30)
            codes.append(r.status_code)

        threads = [threading.Thread(target=read) for _ in range(45)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        r = httpx.get(f"{base}/healthz", timeout=5)
        assert r.status_code == 200
        for t in threads:
            t.join(timeout=30)
        assert codes == [422] * 45, codes
        assert time.monotonic() - t0 < 20
        assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200
