"""Project workspaces and job I/O on the local adapter: streamed files with checksums,
confined paths, the storage quota, stage-in and stage-out, ranged job output."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from broker import migrate
from broker.app import create_app
from broker.config import Settings
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Role
from broker.services import projects, safefs, staging, tenants, tokens
from broker.services.principal import SYSTEM

from ..servers import VENV_BIN, clean_env, free_port
from .conftest import Api, make_settings, operator_token


@pytest.fixture
def small(db_url: str, tmp_path: Path) -> Iterator[Api]:
    """The API with a 1000-byte workspace quota."""
    app = create_app(make_settings(db_url, tmp_path, workspace_quota_bytes=1000), run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def put(api: Api, project_id: str, path: str, data: Any, token: str, **headers: str) -> Any:
    return api.client.put(
        f"/api/v1/projects/{project_id}/files/{path}",
        content=data,
        headers=api.h(token, **headers),
    )


def fetch(api: Api, project_id: str, path: str, token: str, **headers: str) -> Any:
    return api.client.get(
        f"/api/v1/projects/{project_id}/files/{path}", headers=api.h(token, **headers)
    )


def ws_dir(api: Api, project_id: str) -> Path:
    settings: Settings = api.client.app.state.settings  # type: ignore[attr-defined]
    return settings.data_dir.resolve() / "workspaces" / project_id


def leftovers(api: Api) -> list[Path]:
    """Files anywhere under the workspaces root, temporary uploads included."""
    settings: Settings = api.client.app.state.settings  # type: ignore[attr-defined]
    root = settings.data_dir.resolve() / "workspaces"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_list_download_range_replace_delete(api: Api) -> None:
    ent, member, project = api.tenant()
    pid = project["id"]
    data = os.urandom(5000)
    r = put(api, pid, "data/in.bin", data, member)
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert r.json()["size_bytes"] == 5000
    assert put(api, pid, "notes.txt", b"hello", member).status_code == 201

    listing = api.get(f"/projects/{pid}/files?prefix=data/", member).json()
    assert [f["path"] for f in listing["items"]] == ["data/in.bin"]
    assert listing["used_bytes"] == 5005 and listing["quota_bytes"] > 0

    got = fetch(api, pid, "data/in.bin", member)
    assert got.status_code == 200 and got.content == data
    assert got.headers["x-checksum-sha256"] == hashlib.sha256(data).hexdigest()
    part = fetch(api, pid, "data/in.bin", member, Range="bytes=100-199")
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == "bytes 100-199/5000"

    assert put(api, pid, "data/in.bin", b"v2", member).status_code == 200  # replaced
    assert fetch(api, pid, "data/in.bin", member).content == b"v2"
    gone = api.client.delete(f"/api/v1/projects/{pid}/files/data/in.bin", headers=api.h(member))
    assert gone.status_code == 204
    assert fetch(api, pid, "data/in.bin", member).status_code == 404
    assert not (ws_dir(api, pid) / "data").exists()  # empty directories go too

    actions = [e["action"] for e in api.get(f"/enterprises/{ent['id']}/audit").json()]
    assert actions.count("workspace.put") == 3 and actions.count("workspace.delete") == 1


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("%2E%2E/%2E%2E/escape.txt", "'..'"),
        ("a/%2E%2E/%2E%2E/escape.txt", "'..'"),
        ("%2Fetc%2Fescape.txt", "absolute"),
        ("a%00b", "NUL"),
        ("a//b", "empty components"),
        ("a%5Cb", "separator"),
    ],
)
def test_paths_outside_the_workspace_are_refused(api: Api, raw: str, why: str) -> None:
    _, member, project = api.tenant()
    r = put(api, project["id"], raw, b"x", member)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "InvalidInput"
    assert r.json()["detail"].startswith("path: ") and why in r.json()["detail"]
    assert fetch(api, project["id"], raw, member).status_code == 422
    assert leftovers(api) == []


def test_symlink_escape_is_refused(api: Api, tmp_path: Path) -> None:
    _, member, project = api.tenant()
    pid = project["id"]
    assert put(api, pid, "ok.txt", b"fine", member).status_code == 201
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    os.symlink(outside, ws_dir(api, pid) / "link")  # e.g. left by a broken restore
    r = put(api, pid, "link/planted.txt", b"x", member)
    assert r.status_code == 422 and "outside the workspace" in r.json()["detail"], r.text
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    r = fetch(api, pid, "link/secret.txt", member)
    assert r.status_code == 404 and "not yours" not in r.text


def test_storage_quota_is_a_413_and_leaves_nothing(small: Api) -> None:
    api = small
    _, member, project = api.tenant()
    pid = project["id"]
    assert put(api, pid, "a.bin", b"a" * 600, member).status_code == 201
    r = put(api, pid, "b.bin", b"b" * 600, member)  # Content-Length says it will not fit
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "PayloadTooLarge" and "storage quota" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        for _ in range(10):
            yield b"c" * 100

    r = put(api, pid, "c.bin", chunks(), member)
    assert r.status_code == 413, r.text
    assert [p.name for p in leftovers(api)] == ["a.bin"]
    listing = api.get(f"/projects/{pid}/files", member).json()
    assert [f["path"] for f in listing["items"]] == ["a.bin"] and listing["used_bytes"] == 600
    # Replacing a file counts its old size as free.
    assert put(api, pid, "a.bin", b"a" * 900, member).status_code == 200


def test_other_tenants_get_404_and_staff_cannot_write(api: Api) -> None:
    _, member, project = api.tenant()
    _, stranger, _ = api.tenant()
    pid = project["id"]
    assert put(api, pid, "x.txt", b"mine", member).status_code == 201
    assert put(api, pid, "y.txt", b"theirs", stranger).status_code == 404
    assert fetch(api, pid, "x.txt", stranger).status_code == 404
    assert api.get(f"/projects/{pid}/files", stranger).status_code == 404
    r = api.client.delete(f"/api/v1/projects/{pid}/files/x.txt", headers=api.h(stranger))
    assert r.status_code == 404
    assert fetch(api, pid, "x.txt", api.operator).content == b"mine"  # operators may read
    assert put(api, pid, "z.txt", b"ops", api.operator).status_code == 403


def test_job_stages_inputs_in_and_outputs_back(api: Api) -> None:
    _, member, project = api.tenant()
    pid = project["id"]
    assert put(api, pid, "data/in.txt", b"hello workspace\n", member).status_code == 201
    script = (
        "mkdir -p out && tr a-z A-Z < data/in.txt > out/result.txt\n"
        "ln -s /etc/hostname out/leak.txt\n"  # a symlink is never collected
        "echo done; echo warn >&2"
    )
    r = api.submit(pid, member, script=script, inputs=["data/in.txt"], outputs=["out/*.txt"])
    assert r.status_code == 202, r.text
    done = api.drive_until(r.json()["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    jid = done["id"]
    io = api.get(f"/jobs/{jid}/io", member).json()
    assert io["stage_in"]["state"] == "done" and io["stage_in"]["files"] == 1
    # The link is named as refused; nothing of its target is read.
    assert io["stage_out"]["state"] == "partial", io
    assert io["stage_out"]["error"] == "out/leak.txt is a symbolic link; not collected", io
    assert sorted(io["stage_out"]["files"]) == [
        f"jobs/{jid}/out/result.txt",
        f"jobs/{jid}/stderr.txt",
        f"jobs/{jid}/stdout.txt",
    ]
    assert fetch(api, pid, f"jobs/{jid}/out/result.txt", member).content == b"HELLO WORKSPACE\n"
    assert fetch(api, pid, f"jobs/{jid}/stdout.txt", member).content == b"done\n"
    listing = api.get(f"/projects/{pid}/files?prefix=jobs/{jid}/", member).json()
    result = next(f for f in listing["items"] if f["path"].endswith("result.txt"))
    assert result["sha256"] == hashlib.sha256(b"HELLO WORKSPACE\n").hexdigest()
    assert result["job_id"] == jid


def test_missing_input_is_422_and_leaves_nothing(api: Api) -> None:
    ent, member, project = api.tenant()
    pid = project["id"]
    assert put(api, pid, "present.txt", b"x", member).status_code == 201
    r = api.submit(pid, member, inputs=["present.txt", "absent.txt"])
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("inputs[1]: 'absent.txt'")
    r = api.submit(pid, member, inputs=["../x"])
    assert r.status_code == 422 and r.json()["detail"].startswith("inputs[0]: ")
    r = api.submit(pid, member, outputs=["ok/*.dat", "/etc/*"])
    assert r.status_code == 422 and r.json()["detail"].startswith("outputs[1]: ")
    assert api.get(f"/jobs?project_id={pid}", member).json()["items"] == []
    assert api.get(f"/enterprises/{ent['id']}/balance", member).json()["held_pfh"] == 0


def test_input_removed_before_stage_in_rejects_the_job(api: Api) -> None:
    ent, member, project = api.tenant()
    pid = project["id"]
    assert put(api, pid, "in.txt", b"x", member).status_code == 201
    job = api.submit(pid, member, inputs=["in.txt"]).json()
    api.client.delete(f"/api/v1/projects/{pid}/files/in.txt", headers=api.h(member))
    done = api.drive_until(job["id"], {"rejected"})
    assert done["reason"].startswith("stage-in failed: inputs[0] 'in.txt'"), done
    assert api.get(f"/enterprises/{ent['id']}/balance", member).json()["held_pfh"] == 0
    assert api.get(f"/jobs/{job['id']}/io", member).json()["stage_in"]["state"] == "failed"


def test_stage_out_problems_are_recorded_and_the_charge_kept(small: Api) -> None:
    api = small
    _, member, project = api.tenant()
    script = "mkdir -p big && head -c 5000 /dev/zero > big/a.dat && ln -s / root && echo ok"
    # The job links its directory's "root" to /: nothing is read through that link.
    outputs = ["root/etc/hostname", "big/*.dat"]
    r = api.submit(project["id"], member, script=script, outputs=outputs)
    done = api.drive_until(r.json()["id"], {"completed", "failed"})
    assert done["state"] == "completed" and done["charge_pfh"] is not None, done
    reason = done["reason"]
    # The glob through the link matches nothing (the walk never enters a link): the link
    # is named, nothing behind it.
    assert reason.startswith(
        "exit code 0; stage-out partial: root is a symbolic link; not collected; "
        "workspace quota exceeded at big/a.dat"
    ), reason
    assert "hostname" not in reason, reason
    out = api.get(f"/jobs/{done['id']}/io", member).json()["stage_out"]
    assert out["state"] == "partial"
    assert sorted(out["files"]) == [f"jobs/{done['id']}/{n}" for n in ("stderr.txt", "stdout.txt")]
    paths = [p.name for p in leftovers(api)]
    assert "a.dat" not in paths and "hostname" not in paths


def test_output_directory_is_collected_whole_and_unmatched_globs_are_named(api: Api) -> None:
    _, member, project = api.tenant()
    script = (
        "mkdir -p results/sub empty && echo a > results/a.txt && echo b > results/sub/b.txt\n"
        "ln -s /etc/hostname results/sub/leak && mkfifo results/pipe && echo t > top.txt"
    )
    outputs = ["results", "missing/*.h5", "*.nc", "empty", "*"]
    r = api.submit(project["id"], member, script=script, outputs=outputs)
    assert r.status_code == 202, r.text
    done = api.drive_until(r.json()["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    jid = done["id"]
    io = api.get(f"/jobs/{jid}/io", member).json()["stage_out"]
    # "results" is taken whole; "*" (a wildcard) takes the files at the top, not the
    # directories it matches.
    assert sorted(io["files"]) == [
        f"jobs/{jid}/{n}"
        for n in ("results/a.txt", "results/sub/b.txt", "stderr.txt", "stdout.txt", "top.txt")
    ], io
    assert io["state"] == "partial", io
    assert io["error"] == "; ".join(
        [
            "results/pipe is a FIFO; not collected",
            "results/sub/leak is a symbolic link; not collected",
            "outputs 'missing/*.h5' matched no file",
            "outputs '*.nc' matched no file",
            "outputs 'empty' matched no file",
        ]
    ), io
    assert "matched no file" in done["reason"], done
    got = fetch(api, project["id"], f"jobs/{jid}/results/sub/b.txt", member)
    assert got.content == b"b\n"


def test_whole_directory_walk_keeps_the_depth_and_entry_limits(tmp_path: Path) -> None:
    deep = tmp_path / "results"
    leaf = deep.joinpath(*["d"] * (safefs.MAX_DEPTH + 1))
    leaf.mkdir(parents=True)
    (leaf / "f.txt").write_text("x")
    with pytest.raises(safefs.WalkLimit, match="nested deeper"):
        safefs.glob_files(tmp_path, "", ["results"])
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(50):
        (wide / f"{i}.txt").write_text("x")
    with pytest.raises(safefs.WalkLimit, match="too many"):
        safefs.glob_files(tmp_path, "", ["wide"], max_entries=40)
    assert len(safefs.glob_files(tmp_path, "", ["wide"], max_entries=60).files) == 50


def test_output_range_requests_get_206(api: Api) -> None:
    _, member, project = api.tenant()
    r = api.submit(project["id"], member, script="seq 1 2000; echo oops >&2")
    done = api.drive_until(r.json()["id"], {"completed"})
    url = f"/api/v1/jobs/{done['id']}/output"
    full = api.client.get(url, headers=api.h(member))
    assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
    size = len(full.content)
    part = api.client.get(url, headers=api.h(member, Range="bytes=0-9"))
    assert part.status_code == 206 and part.content == full.content[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{size}"
    end = api.client.get(url, headers=api.h(member, Range="bytes=-5"))
    assert end.status_code == 206 and end.content == b"2000\n"
    tail = api.client.get(f"{url}?tail=2", headers=api.h(member))
    assert tail.text == "1999\n2000\n"
    err = api.client.get(f"{url}?stream=stderr", headers=api.h(member))
    assert err.text == "oops\n"
    other = api.client.get(
        f"/api/v1/jobs/{uuid.uuid4()}/output", headers=api.h(member, Range="bytes=0-1")
    )
    assert other.status_code == 404


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_200_mb_upload_and_download_stay_in_small_fixed_memory(tmp_path: Path) -> None:
    """Through a real `brokerctl api` process: its peak RSS barely moves for 200 MB."""
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as s:
        ent = tenants.create_enterprise(s, SYSTEM, name="big files")
        proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="big")
        _, token = tokens.create_token(s, SYSTEM, name="m", role=Role.MEMBER, enterprise_id=ent.id)
        pid = str(proj.id)
    engine.dispose()
    env = clean_env(BROKER_DATABASE_URL=url, BROKER_DATA_DIR=str(tmp_path / "data"))
    port = free_port()
    with (tmp_path / "api.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "brokerctl"), "api", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=auth, timeout=120) as client:
            assert client.put(f"/projects/{pid}/files/warm.txt", content=b"x").status_code == 201
            assert client.get(f"/projects/{pid}/files/warm.txt").content == b"x"
            before = _peak_rss_kib(proc.pid)
            block = os.urandom(1 << 20)
            sent = hashlib.sha256()

            def body() -> Iterator[bytes]:
                for i in range(200):
                    chunk = block[i:] + block[:i]
                    sent.update(chunk)
                    yield chunk

            r = client.put(f"/projects/{pid}/files/big.bin", content=body())
            assert r.status_code == 201, r.text
            assert r.json()["sha256"] == sent.hexdigest()
            got, size = hashlib.sha256(), 0
            with client.stream("GET", f"/projects/{pid}/files/big.bin") as resp:
                for chunk in resp.iter_bytes():
                    got.update(chunk)
                    size += len(chunk)
            assert size == 200 << 20 and got.hexdigest() == sent.hexdigest()
            after = _peak_rss_kib(proc.pid)
        growth_mib = (after - before) / 1024
        print(
            f"\nbrokerctl api peak RSS: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB"
            f" after a 200 MiB upload and download (+{growth_mib:.1f} MiB)"
        )
        assert growth_mib < 32
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _Watching(staging.SharedFsMover):
    """Copies like the shared-fs mover, after proving that nothing holds the job's row
    (PostgreSQL) or the database's write lock (SQLite) meanwhile; or fails the copy."""

    def __init__(self, db_url: str, fail: bool) -> None:
        self.db_url, self.fail, self.writes = db_url, fail, 0

    def stage_in(
        self, where: safefs.Trusted, files: Sequence[staging.StageFile], owner: str
    ) -> int:
        job_id = Path(where.below).name
        if self.db_url.startswith("sqlite"):
            conn = sqlite3.connect(self.db_url.removeprefix("sqlite:///"), timeout=0.5)
            try:
                conn.execute("BEGIN IMMEDIATE")  # 'database is locked' if a writer is open
                conn.execute("UPDATE job SET reason = reason")
                conn.commit()
            finally:
                conn.close()
        else:
            engine = make_engine(self.db_url)
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
                sql = text("UPDATE job SET reason = reason WHERE id = :i")
                assert conn.execute(sql, {"i": job_id}).rowcount == 1
            engine.dispose()
        self.writes += 1
        if self.fail:
            raise OSError("scratch is full")
        return super().stage_in(where, files, owner)


@pytest.mark.parametrize("fail", [False, True])
def test_inputs_are_copied_outside_any_transaction(
    api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    mover = _Watching(db_url, fail)
    monkeypatch.setattr(staging, "mover_for", lambda cluster: mover)
    ent, member, project = api.tenant()
    pid = project["id"]
    assert put(api, pid, "in.txt", b"x", member).status_code == 201
    job = api.submit(pid, member, inputs=["in.txt"], script="cat in.txt").json()
    done = api.drive_until(job["id"], {"completed", "rejected"})
    assert mover.writes == 1
    stage_in = api.get(f"/jobs/{job['id']}/io", member).json()["stage_in"]
    if fail:
        assert done["state"] == "rejected" and done["reason"] == "stage-in failed: scratch is full"
        assert stage_in["state"] == "failed" and stage_in["error"] == "scratch is full"
        assert api.get(f"/enterprises/{ent['id']}/balance", member).json()["held_pfh"] == 0
    else:
        assert done["state"] == "completed", done
        assert stage_in["state"] == "done" and stage_in["files"] == 1
