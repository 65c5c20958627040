"""The local adapter never runs a tenant's script as root.

Run as root (as this suite is), it runs each job as the spec's POSIX user where that
user exists, else as its fallback user (``nobody``), with the working directory handed
over; run as another user it runs every job as that user, which the broker refuses with
PostgreSQL unless allowed.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest

from broker.config import (
    Settings,
    SharedUserRefused,
    check_job_identity,
    default_local_cluster,
    local_jobs_run_as,
)
from scheduler_adapters import AdapterConfigError, JobSpec, JobState, SubmitRejected
from scheduler_adapters.local import LocalAdapter

from .._slurm import ensure_posix_user

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
TENANT_USER = "tenantident"  # a normal account (uid >= 1000), as in test_identities
NOBODY = pwd.getpwnam("nobody")


def _run(adapter: LocalAdapter, spec: JobSpec) -> tuple[JobState, str]:
    job_id = adapter.submit(spec)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = adapter.status([job_id])[job_id]
        if info.state.terminal:
            out = Path(str(spec.stdout_path))
            return info.state, out.read_text() if out.exists() else ""
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def _spec(tmp_path: Path, script: str, user: str | None, **kw: object) -> JobSpec:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    fields: dict = {
        "name": "who",
        "script": f"#!/bin/bash\n{script}\n",
        "time_limit_minutes": 1,
        "user": user,
        "tag": "t",
        "working_dir": str(work),
        "stdout_path": str(work / "stdout.txt"),
        **kw,
    }
    return JobSpec(**fields)


@pytest.fixture
def adapter(tmp_path: Path) -> LocalAdapter:
    return LocalAdapter("local", root_dir=str(tmp_path / "sched"))


@ROOT_ONLY
@pytest.mark.parametrize("user", [None, "nosuchuser", "root"])
def test_as_root_a_job_without_a_usable_user_runs_as_nobody(
    adapter: LocalAdapter, tmp_path: Path, user: str | None
) -> None:
    state, out = _run(adapter, _spec(tmp_path, "id -u; id -G; echo $USER", user))
    assert state is JobState.COMPLETED, out
    uid, groups, name = out.split("\n")[:3]
    assert int(uid) == NOBODY.pw_uid != 0
    assert "0" not in groups.split(), groups  # none of root's groups either
    assert name == "nobody"


@ROOT_ONLY
def test_as_root_a_job_runs_as_its_posix_user(adapter: LocalAdapter, tmp_path: Path) -> None:
    ensure_posix_user(TENANT_USER)
    pw = pwd.getpwnam(TENANT_USER)
    spec = _spec(tmp_path, "id -u; id -g; touch made-here", TENANT_USER)
    state, out = _run(adapter, spec)
    assert state is JobState.COMPLETED, out
    assert out.split("\n")[:2] == [str(pw.pw_uid), str(pw.pw_gid)]
    work = Path(str(spec.working_dir))
    # The working directory is the user's; what the job made there too.
    assert work.stat().st_uid == pw.pw_uid and (work / "made-here").stat().st_uid == pw.pw_uid
    # The adapter's own records stay root's and closed: a job cannot rewrite its state.
    job_dir = adapter.jobs_dir / "1"
    assert job_dir.stat().st_uid == 0 and job_dir.stat().st_mode & 0o777 == 0o700
    assert (job_dir / "state.json").stat().st_uid == 0
    script = job_dir / "script.sh"
    # Executed (its #! line picks the interpreter), by the job's user alone.
    assert script.stat().st_uid == pw.pw_uid and script.stat().st_mode & 0o777 == 0o500


@ROOT_ONLY
def test_staged_inputs_are_handed_to_the_fallback_user(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "in.txt").write_text("staged\n")
    for p in (work, work / "data", work / "data" / "in.txt"):
        p.chmod(0o700 if p.is_dir() else 0o600)  # as the broker stages: root's, private
    os.symlink("/etc/shadow", work / "data" / "link")
    state, out = _run(adapter, _spec(tmp_path, "cat data/in.txt", "nosuchuser"))
    assert state is JobState.COMPLETED and out == "staged\n", out
    assert (work / "data" / "in.txt").stat().st_uid == NOBODY.pw_uid
    assert Path("/etc/shadow").stat().st_uid == 0  # the link was not followed


@ROOT_ONLY
def test_output_through_a_link_is_refused(adapter: LocalAdapter, tmp_path: Path) -> None:
    target = tmp_path / "root-only.txt"
    target.write_text("secret\n")
    spec = _spec(tmp_path, "echo overwritten", "nosuchuser")
    os.symlink(target, str(spec.stdout_path))
    job_id = adapter.submit(spec)
    deadline = time.monotonic() + 20
    while not (info := adapter.status([job_id])[job_id]).state.terminal:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert info.state is JobState.FAILED and "runner error" in str(info.reason)
    assert target.read_text() == "secret\n" and target.stat().st_uid == 0


@ROOT_ONLY
def test_without_a_fallback_a_missing_user_is_refused(tmp_path: Path) -> None:
    strict = LocalAdapter("local", root_dir=str(tmp_path / "sched"), fallback_user="")
    with pytest.raises(SubmitRejected, match="no POSIX user 'nosuchuser'"):
        strict.submit(_spec(tmp_path, "true", "nosuchuser"))
    with pytest.raises(SubmitRejected):
        strict.submit(_spec(tmp_path, "true", "root"))  # never root, even by name


@ROOT_ONLY
@pytest.mark.parametrize("fallback", ["root", "nosuchuser"])
def test_the_fallback_user_exists_and_is_not_root(tmp_path: Path, fallback: str) -> None:
    with pytest.raises(AdapterConfigError, match="fallback_user"):
        LocalAdapter("local", root_dir=str(tmp_path), fallback_user=fallback)


@ROOT_ONLY
def test_identity_in_words(adapter: LocalAdapter) -> None:
    assert adapter.identity() == "each job's POSIX user, or nobody where it does not exist here"
    local = default_local_cluster(Path("/srv/x"), 0.05)
    assert (
        local_jobs_run_as([local]) == "each job's POSIX user; where it does not exist here: nobody"
    )


# -- the shared-user mode (the broker not root) --------------------------------------
PG = "postgresql+psycopg://broker@127.0.0.1:1/broker"


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the broker ran as an ordinary user (uid 1234)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1234)


def test_shared_user_mode_is_refused_on_postgresql(tmp_path: Path, not_root: None) -> None:
    settings = Settings(database_url=PG, data_dir=tmp_path)
    with pytest.raises(SharedUserRefused, match="BROKER_ALLOW_SHARED_USER=true"):
        settings.load_clusters()
    from broker.app import create_app

    with pytest.raises(SharedUserRefused):
        create_app(settings, run_worker=False)


def test_shared_user_mode_is_allowed_when_said_so_or_on_sqlite(
    tmp_path: Path, not_root: None
) -> None:
    allowed = Settings(database_url=PG, data_dir=tmp_path, allow_shared_user=True)
    (local,) = allowed.load_clusters()
    assert "single-user trial mode" in str(local_jobs_run_as([local]))
    sqlite = Settings(database_url=f"sqlite:///{tmp_path}/b.db", data_dir=tmp_path)
    assert [c.adapter for c in sqlite.load_clusters()] == ["local"]


def test_slurm_only_deployments_may_run_unprivileged(tmp_path: Path, not_root: None) -> None:
    path = tmp_path / "clusters.toml"
    path.write_text(
        '[[clusters]]\nname = "beta"\nadapter = "slurmrestd"\nscratch_dir = "/srv/b"\n'
        '[clusters.options]\nurl = "http://x"\n[[clusters.partitions]]\nname = "p"\n'
    )
    settings = Settings(database_url=PG, clusters_file=path)
    assert [c.name for c in settings.load_clusters()] == ["beta"]
    check_job_identity(settings, [])
