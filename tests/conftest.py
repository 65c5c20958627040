"""Shared fixtures: databases (SQLite and a real PostgreSQL), the app, tokens."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from broker import migrate
from broker.db import make_engine

pytest_plugins = ["tests._slurm"]

PG_ADMIN_URL = os.environ.get(
    "BROKER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TABLES = [
    "webhook_delivery",
    "job_event",
    "webhook",
    "project_secret",
    "job_io",
    "workspace_file",
    "workspace",
    "charge_line",
    "node_rate",
    "validation_run",
    "ledger_entry",
    "balance",
    "job",
    "audit_event",
    "api_token",
    "node",
    "partition",
    "project",
    "cluster",
    "enterprise",
]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is faster)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    name = f"broker_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - the suite's setup starts PostgreSQL
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "broker.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate_pg(url)
    return url


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only (ledger and concurrency tests)."""
    url: str = request.getfixturevalue("pg_database")
    _truncate_pg(url)
    return url


#: The live Slurm clusters' fixtures (``tests._slurm``).
_SLURM_FIXTURES = frozenset(
    {"slurm_clusters_file", "slurm_three_file", "slurm_tenant", "slurm_three_tenant"}
)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (its worker's hook)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """When the suite runs on several workers (pytest-xdist's ``--dist loadgroup``, as
    the README's test command does), the tests on the live Slurm clusters run on one
    worker, one after another (some take a controller down, drain or down nodes, or
    count a cluster's jobs, and every worker shares the clusters), and each file's
    other tests on one worker, in file order (its module fixtures are made once; a few
    tests read what the ones before them did)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        live = item.get_closest_marker("slurm") is not None or bool(fixtures & _SLURM_FIXTURES)
        item.add_marker(pytest.mark.xdist_group("slurm" if live else item.nodeid.split("::")[0]))


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave at once once pytest is done with everything (its report, its files).

    A whole run leaves the interpreter several GB of objects (numba's compiled kernels,
    hundreds of apps and engines); the collection Python runs over them while it shuts
    down took 2.5 minutes of a 32-minute CI run, doing nothing anyone reads. Only a run
    that reached its end exits early; the exit status is pytest's own."""
    import sys

    if not _EXIT_STATUS or os.environ.get("BROKER_TESTS_SLOW_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
