"""Fixtures for brokerctl tests: a migrated database in the environment and a runner."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from broker.cli import app
from broker.cli_cmds import _common
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Role
from broker.schemas.jobs import JobCreate
from broker.services import jobs
from broker.services.principal import Principal


@dataclass
class Cli:
    """Runs brokerctl in-process against ``url``; checks exit codes, parses ``--json``."""

    runner: CliRunner
    url: str
    tmp: Path

    def run(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(app, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, (
            f"brokerctl {' '.join(args)} exited {result.exit_code}, expected {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.run(*args, "--json", code=code).stdout)

    def seed(self, jobs_n: int = 0) -> dict[str, Any]:
        """An enterprise with a grant and an active project, and ``jobs_n`` accepted jobs."""
        ent = self.json("enterprise", "create", "Acme Labs", "--slurm-account", "acme")
        self.run("quota", "grant", "acme", "--pfh", "100")
        proj = self.json("project", "create", "acme", "poc", "--approve")
        if jobs_n:
            self.run("cluster", "ping")  # mirrors the clusters in the database, as serve does
        job_ids = [str(submit_job(self.url, ent["id"], proj["id"])) for _ in range(jobs_n)]
        return {"enterprise": ent, "project": proj, "jobs": job_ids}


def submit_job(url: str, enterprise_id: str, project_id: str, script: str = "echo hi") -> Any:
    """A job accepted as a member of the enterprise would submit it (through the service)."""
    import uuid

    member = Principal(
        token_id=None, name="member", role=Role.MEMBER, enterprise_id=uuid.UUID(enterprise_id)
    )
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            req = JobCreate(name="job", script=script, nodes=1, time_limit_minutes=5)
            result = jobs.submit(
                s, member, uuid.UUID(project_id), req, idempotency_key=None, max_script_bytes=65536
            )
            return result.job.id
    finally:
        engine.dispose()


@pytest.fixture
def cli(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    db = tmp_path / "broker.db"
    shutil.copy(sqlite_template, db)
    url = f"sqlite:///{db}"
    monkeypatch.setenv("BROKER_DATABASE_URL", url)
    monkeypatch.setenv("BROKER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("BROKER_CLUSTERS_FILE", raising=False)
    # Wide tables, whatever ran first: rich reads COLUMNS when a Console is made, and
    # brokerctl's consoles are made when its modules are first imported (in a test
    # process, by whichever test imports them first).
    monkeypatch.setenv("COLUMNS", "200")
    for console in (_common.console, _common.err_console):
        monkeypatch.setattr(console, "_width", 200)
    return Cli(CliRunner(), url, tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pygal (imported by the dashboard) appends a legacy finder to sys.meta_path that
    # warns on every import no other finder resolves, such as the optional imports
    # typer and click try while rendering help and usage errors.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:PluginImportFixer:ImportWarning"))
