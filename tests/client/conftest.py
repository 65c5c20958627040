"""A running broker for the client's tests: ``brokerctl serve`` (embedded default, or the
live dev clusters alpha and beta), a tenant in it, and the client installed alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest

from .._slurm import REPO, ensure_posix_user
from ..servers import VENV_BIN, brokerctl_server, clean_env

LIVE_USER = "tenantclient"
LIVE_ACCOUNT = "e_client"


@dataclass
class Broker:
    """A running broker and a tenant in it: a member token, an active project, a grant."""

    url: str  # .../api/v1
    operator: str
    member: str
    enterprise_id: str
    project_id: str
    workdir: Path
    clusters: tuple[str, ...]  # where jobs may run ("local", or "alpha", "beta")

    def env(self, **extra: str) -> dict[str, str]:
        """A team member's environment: the client finds the broker and token in it."""
        return clean_env(
            HPC_BROKER_URL=self.url,
            HPC_BROKER_TOKEN=self.member,
            HPC_BROKER_PROJECT=self.project_id,
            **extra,
        )


def _brokerctl(cwd: Path, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [str(VENV_BIN / "brokerctl"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def _tenant(url: str, op: str, grant_pfh: float, **enterprise: Any) -> tuple[str, str, str]:
    h = {"Authorization": f"Bearer {op}"}
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        body = {"name": f"Client Co {uuid.uuid4().hex[:6]}", **enterprise}
        ent = c.post("/enterprises", json=body)
        assert ent.status_code == 201, ent.text
        eid = ent.json()["id"]
        assert c.post(f"/enterprises/{eid}/grants", json={"amount_pfh": grant_pfh}).is_success
        p = c.post("/projects", json={"enterprise_id": eid, "name": "client-poc"})
        assert p.status_code == 201, p.text
        pid = p.json()["id"]
        assert c.post(f"/projects/{pid}/approve").is_success
        t = c.post(f"/enterprises/{eid}/tokens", json={"name": "alice", "role": "member"})
        assert t.status_code == 201, t.text
        return eid, pid, t.json()["token"]


def _server_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The server's environment: its SQLite file and data directory in ``workdir``,
    migrated."""
    env = clean_env(
        BROKER_DATABASE_URL=f"sqlite:///{workdir / 'broker.db'}",
        BROKER_DATA_DIR=str(workdir / "data"),
        **extra,
    )
    _brokerctl(workdir, env, "db", "upgrade")
    return env


def _open_dir(prefix: str) -> Path:
    # Jobs run as other users (nobody, the tenant's): pytest's tmp_path is 0700 above.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@pytest.fixture(scope="module")
def embedded_broker() -> Iterator[Broker]:
    """``brokerctl serve`` with its defaults: SQLite, the local adapter, the worker."""
    workdir = _open_dir("client-embedded-")
    env = _server_env(workdir, BROKER_WORKER_INTERVAL_S="0.2", BROKER_EVENTS_POLL_S="0.2")
    op = _brokerctl(workdir, env, "token", "create", "--operator", "--name", "ops")
    try:
        with brokerctl_server("serve", workdir, env) as url:
            eid, pid, member = _tenant(url, op, 10)
            yield Broker(url, op, member, eid, pid, workdir, ("local",))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_broker(slurm_clusters_file: Path) -> Iterator[Broker]:
    """``brokerctl serve`` on the live dev clusters alpha and beta (Slurm 22.05)."""
    ensure_posix_user(LIVE_USER)
    workdir = _open_dir("client-slurm-")
    env = _server_env(
        workdir,
        BROKER_CLUSTERS_FILE=str(slurm_clusters_file),
        BROKER_WORKER_INTERVAL_S="0.3",
        BROKER_EVENTS_POLL_S="0.3",
    )
    op = _brokerctl(workdir, env, "token", "create", "--operator", "--name", "ops")
    try:
        with brokerctl_server("serve", workdir, env) as url:
            ent = {"posix_user": LIVE_USER, "slurm_account": LIVE_ACCOUNT}
            eid, pid, member = _tenant(url, op, 10, **ent)
        # Accounts and users on alpha and beta, then a server whose snapshot has them.
        _brokerctl(workdir, env, "slurm", "sync")
        with brokerctl_server("serve", workdir, env) as url:
            yield Broker(url, op, member, eid, pid, workdir, ("alpha", "beta"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=["embedded", pytest.param("slurm", marks=pytest.mark.slurm)])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each test on the embedded default and on alpha/beta."""
    name = "embedded_broker" if request.param == "embedded" else "slurm_broker"
    found: Broker = request.getfixturevalue(name)
    return found


@pytest.fixture(scope="session")
def client_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client installed as a team installs it: a wheel of the distribution holding
    only ``broker/__init__.py`` and ``broker/client`` (so nothing else of the server can
    be imported), with its PSI/J descriptor and submitit entry points, in a directory to
    put on ``PYTHONPATH`` (its dependencies come from the test environment)."""
    src = tmp_path_factory.mktemp("client-src")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    (src / "broker").mkdir()
    shutil.copy(REPO / "broker" / "__init__.py", src / "broker")
    shutil.copytree(
        REPO / "broker" / "client",
        src / "broker" / "client",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    wheels = tmp_path_factory.mktemp("client-wheel")
    site = _open_dir("client-site-")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for step in (
        lambda: [*pip, "wheel", "--no-deps", "-w", str(wheels), str(src)],
        lambda: [
            *pip,
            "install",
            "--no-deps",
            "--target",
            str(site),
            *map(str, wheels.glob("*.whl")),
        ],
    ):
        out = subprocess.run(step(), capture_output=True, text=True, check=False, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    assert (site / "psij-descriptors" / "hpc_broker.py").is_file()
    assert not (site / "broker" / "services").exists()
    return site


@pytest.fixture(scope="session")
def job_python() -> str:
    """The interpreter submitit jobs run under: submitit and cloudpickle of the
    caller's versions, on the system Python (tenant users cannot reach this venv's)."""
    system = "/usr/bin/python3"
    minor = subprocess.run(
        [system, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if minor != str(sys.version_info[:2]):
        pytest.skip(f"{system} is Python {minor}; pickles need {sys.version_info[:2]}")
    if os.geteuid() != 0:
        pytest.skip("the job's interpreter goes under /var/lib (root)")
    out = subprocess.run(
        [
            str(REPO / "deploy" / "submitit-venv"),
            "/var/lib/hpc-broker-dev/submitit-venv",
            version("submitit"),
            version("cloudpickle"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]
