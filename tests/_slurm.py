"""Pytest plugin for tests against the live dev Slurm clusters (``deploy/slurm/devcluster``).

Loaded from the root conftest with ``pytest_plugins = ["tests._slurm"]``. Tests that use
these fixtures are marked ``@pytest.mark.slurm``. The clusters are brought up once per
session (``devcluster up --two`` is idempotent and takes about a second when already up)
and left running: tearing them down would cost the next session a cold start.
``slurm_three_file`` also brings up gamma (Slurm 25.11 built from source; the first run
builds it, minutes) for tests marked ``slurm`` that use it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "DEVCLUSTER",
    "MIN_TENANT_UID",
    "SlurmTenant",
    "ensure_posix_user",
    "ensure_slurm_tenant",
    "kernels_python",
    "load_clusters",
    "local_validation_python",
    "open_tmp_path",
    "slurm_clusters_file",
    "slurm_tenant",
    "slurm_three_file",
    "slurm_three_tenant",
]

REPO = Path(__file__).resolve().parent.parent
DEVCLUSTER = REPO / "deploy" / "slurm" / "devcluster"


#: The lowest uid of a normal (non-system) account; the broker refuses tenants' POSIX
#: users below it (BROKER_MIN_TENANT_UID).
MIN_TENANT_UID = 1000


def ensure_posix_user(name: str, *, system: bool = False) -> None:
    """Create user ``name`` (home, shell bash, own group) unless it exists.

    A tenant's user (the default) is a normal account (uid >= 1000): the broker refuses
    system accounts as enterprises' POSIX users. ``system=True`` is for the broker's own
    users (the node-validation user). A tenant user that already exists with a system
    uid (made by older versions of this helper) is an error naming the fix: its uid
    cannot simply change, since running slurmctlds cache uids of associated users.
    """
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        if not system and pw.pw_uid < MIN_TENANT_UID:
            raise RuntimeError(
                f"test user {name!r} exists as a system account (uid {pw.pw_uid}); tenants"
                f" need a uid of at least {MIN_TENANT_UID}: remove it (userdel -r {name})"
            )
        return
    argv = ["useradd", "--create-home", "--shell", "/bin/bash", name]
    if system:
        argv.insert(1, "--system")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    # Another test process may have created it meanwhile (useradd exits 9: exists).
    if proc.returncode not in (0, 9):
        raise RuntimeError(f"useradd {name} failed: {proc.stderr.strip()}")


def load_clusters(path: Path) -> dict[str, dict[str, Any]]:
    """The clusters file's entries keyed by cluster name."""
    with path.open("rb") as fh:
        return {c["name"]: c for c in tomllib.load(fh)["clusters"]}


def _devcluster_up(flag: str, timeout: float) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the dev Slurm clusters need root")
    proc = subprocess.run(
        [sys.executable, str(DEVCLUSTER), "up", flag],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"devcluster up {flag} failed ({proc.returncode}):\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def slurm_clusters_file() -> Path:
    """Bring up alpha and beta (fast if already up); the path of their clusters file."""
    return _devcluster_up("--two", 600)


@pytest.fixture(scope="session")
def slurm_three_file() -> Path:
    """alpha, beta and gamma (Slurm 25.11: built on first use); their clusters file.

    gamma is listed twice: ``gamma`` (slurmrestd) and ``gamma-cli`` (slurm-cli on the
    same Slurm cluster, ``slurm_cluster = "gamma"``). Skipped unless
    ``BROKER_TEST_GAMMA=1`` (deploy/test.sh sets it): the first run builds Slurm.
    """
    if os.environ.get("BROKER_TEST_GAMMA") != "1":
        pytest.skip("gamma (Slurm 25.11 from source) needs BROKER_TEST_GAMMA=1")
    return _devcluster_up("--three", 1800)


@dataclass(frozen=True)
class SlurmTenant:
    """A Slurm account with one POSIX user associated on every dev cluster."""

    account: str
    user: str
    clusters: dict[str, dict[str, Any]]

    def workdir(self, cluster: str, name: str) -> Path:
        """A fresh job directory under the cluster's scratch_dir, owned by the user."""
        path = Path(self.clusters[cluster]["scratch_dir"]) / self.user / name
        path.mkdir(parents=True, exist_ok=True)
        pw = pwd.getpwnam(self.user)
        for p in (path.parent, path):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        return path


def ensure_slurm_tenant(clusters_file: Path, account: str, user: str) -> SlurmTenant:
    """Create POSIX ``user`` and Slurm ``account`` with ``user`` on every cluster."""
    from scheduler_adapters import create_accounting
    from scheduler_adapters.slurm.accounting import AccountSpec

    ensure_posix_user(user)
    clusters = load_clusters(clusters_file)
    done: set[str] = set()
    for name, entry in clusters.items():
        acct = create_accounting(entry["adapter"], name, entry["options"])
        if acct is None or acct.cluster in done:  # gamma-cli is gamma again
            continue
        acct.sync([AccountSpec(cluster=acct.cluster, account=account, users=(user,))])
        done.add(acct.cluster)
    return SlurmTenant(account, user, clusters)


@pytest.fixture(scope="session")
def slurm_tenant(slurm_clusters_file: Path) -> Iterator[SlurmTenant]:
    """The account ``broker-tests`` with POSIX user ``tenanttest`` on alpha and beta."""
    yield ensure_slurm_tenant(slurm_clusters_file, "broker-tests", "tenanttest")


@pytest.fixture(scope="session")
def slurm_three_tenant(slurm_three_file: Path) -> Iterator[SlurmTenant]:
    """``broker-tests`` / ``tenanttest`` on alpha, beta and gamma."""
    yield ensure_slurm_tenant(slurm_three_file, "broker-tests", "tenanttest")


@pytest.fixture(scope="session")
def kernels_python() -> str:
    """An interpreter with the kernels that unprivileged validation jobs can execute."""
    proc = subprocess.run(
        [str(REPO / "deploy" / "kernels-venv"), "/var/lib/hpc-broker-dev/kernels-venv"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"deploy/kernels-venv failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """A fresh directory that other users can pass through (0711), removed afterwards.

    Run as root, the local adapter runs jobs as unprivileged users. pytest's
    ``tmp_path`` lies under a 0700 directory (which every pytest session on the host
    closes again), so such a job could not reach absolute paths under it (its
    NUMBA_CACHE_DIR, say) as it can under a real data_dir: use this one for its data_dir.
    """
    path = Path(tempfile.mkdtemp(prefix="broker-jobs-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_validation_python(request: pytest.FixtureRequest) -> str:
    """The validation interpreter for node validation on the local cluster.

    As root, validation jobs run as the validation user (or the local adapter's
    fallback user), who may not be able to run the broker's own interpreter (a venv
    over a Python under /root, say): ``kernels_python``. Otherwise "" (the broker's).
    """
    if os.geteuid() != 0:
        return ""
    python: str = request.getfixturevalue("kernels_python")
    return python
