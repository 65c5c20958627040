"""deploy/: the example files load and the units run brokerctl commands that exist."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from broker.cli import app
from broker.config import Settings, load_clusters_file

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NOT_SETTINGS = {"BROKER_LOG_FORMAT", "BROKER_LOG_LEVEL"}  # read by brokerctl's options
NOT_OURS = {"FORWARDED_ALLOW_IPS"}  # uvicorn's own


def test_clusters_example_loads() -> None:
    clusters = load_clusters_file(DEPLOY / "clusters.example.toml")
    assert [(c.name, c.adapter) for c in clusters] == [
        ("alpha", "slurm-cli"),
        ("beta", "slurmrestd"),
    ]


@pytest.mark.parametrize("name", ["broker.env.example", "compose.env"])
def test_environment_files_name_only_known_settings(name: str) -> None:
    env = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            if key not in NOT_OURS:
                env[key] = value
    fields = {f"BROKER_{f.upper()}" for f in Settings.model_fields}
    assert set(env) - NOT_SETTINGS <= fields
    known = {k.removeprefix("BROKER_").lower(): v for k, v in env.items() if k in fields}
    Settings(**known)  # every value parses
    if "BROKER_DATABASE_URL" in env:  # the password comes from PGPASSFILE, not the URL
        assert make_url(env["BROKER_DATABASE_URL"]).password is None


def _exec_args(unit: Path) -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    argv = shlex.split(parser["Service"]["ExecStart"].replace("%i", "8001"))
    assert argv[0].endswith("/brokerctl")
    return argv[1:]


def _compose_commands() -> list[list[str]]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    commands = [svc["command"] for svc in doc["services"].values() if "command" in svc]
    assert all(c[0] == "brokerctl" for c in commands)
    return [c[1:] for c in commands]


def test_units_and_compose_run_commands_that_parse() -> None:
    runner = CliRunner()
    argvs = [_exec_args(u) for u in sorted((DEPLOY / "systemd").glob("*.service"))]
    argvs += _compose_commands()
    assert len(argvs) >= 6
    for argv in argvs:
        # --help after the options proves brokerctl accepts every one of them
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0, (argv, result.output)
