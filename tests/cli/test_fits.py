"""brokerctl as a new admin meets it (issue 21): short ids, one way to name a cluster,
tables that fit 80 columns, ISO 8601 in --json, help on every option, the files a
command wrote, and the database found from the configuration, not the cwd."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import typer

from broker.cli import app
from broker.cli_cmds import _common
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Job

from .conftest import Cli

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)$")
DATEISH = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")


def _job_with_id(url: str, template: str, job_id: uuid.UUID) -> None:
    """A copy of job ``template`` under a chosen id (to make two ids share a prefix)."""
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            src = s.get(Job, uuid.UUID(template))
            assert src is not None
            cols = {c.key: getattr(src, c.key) for c in Job.__table__.columns}
            cols.update(id=job_id, idempotency_key=None, scheduler_job_id=None)
            s.add(Job(**cols))
    finally:
        engine.dispose()


def test_job_ids_by_unique_prefix(cli: Cli) -> None:
    seeded = cli.seed(jobs_n=1)
    first = seeded["jobs"][0]
    assert cli.json("jobs", "show", first[:8])["id"] == first  # the 8 digits tables show
    assert cli.json("jobs", "show", first[:4].upper())["id"] == first
    assert cli.json("jobs", "cancel", first[:8], "--dry-run")[0]["id"] == first
    twin = uuid.UUID(first[:6] + ("0" if first[6] != "0" else "1") + first[7:])
    _job_with_id(cli.url, first, twin)
    ambiguous = cli.run("jobs", "show", first[:6], code=1)
    assert "several job ids" in ambiguous.stderr and "more digits" in ambiguous.stderr
    assert cli.json("jobs", "show", first[:7])["id"] == first
    assert cli.json("jobs", "show", str(twin)[:7])["id"] == str(twin)
    missing = "0000" if not first.startswith("0000") else "ffff"
    assert "no job id starts with" in cli.run("jobs", "show", missing, code=1).stderr
    assert "at least 4 hex digits" in cli.run("jobs", "show", "8ee", code=2).stderr
    cli.run("jobs", "show", "not-hex!", code=2)
    # Other ids the tables shorten are taken by prefix too.
    ent = seeded["enterprise"]["id"]
    assert cli.json("enterprise", "show", ent[:8])["id"] == ent
    proj = seeded["project"]["id"]
    assert cli.json("quota", "allocate", proj[:8], "--pfh", "5")["allocation_pfh"] == 5
    tok = cli.json("token", "create", "--enterprise", "acme", "--name", "bob")
    assert cli.json("token", "revoke", tok["id"][:8])["revoked_at"] is not None


@pytest.mark.parametrize(
    "command",
    [
        ("nodes", "list"),
        ("nodes", "drain"),
        ("nodes", "resume"),
        ("nodes", "validate"),
        ("slurm", "sync"),
        ("jobs", "reconcile"),
    ],
)
def test_the_cluster_is_the_first_argument_everywhere(cli: Cli, command: tuple[str, ...]) -> None:
    text = cli.run(*command, "--help").stdout
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    args = [a for a in usage.split(" ".join(command), 1)[1].split() if a != "[OPTIONS]"]
    assert args[0].strip("{}[]") == "CLUSTER", usage  # the first argument
    assert "--cluster" not in text  # the older spelling still works, unlisted


def test_cluster_argument_and_its_older_spelling(cli: Cli) -> None:
    plan = cli.json("nodes", "validate", "local", "--node", "local2", "--dry-run")
    assert plan == {"would_validate": []} or "local2" in plan["would_validate"]
    old = cli.json("nodes", "validate", "--cluster", "local", "--node", "local2", "--dry-run")
    assert old == plan
    cli.run("nodes", "validate", "local", "--cluster", "other", "--dry-run", code=2)
    assert "missing argument CLUSTER" in cli.run("nodes", "validate", "--dry-run", code=2).stderr
    assert {n["name"] for n in cli.json("nodes", "list", "local")} <= {"local1", "local2"}


def _lines_fit(text: str, width: int = 80) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert too_long == [], "\n".join(too_long)


def test_tables_fit_80_columns_without_breaking_words(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_common.console, "_width", 80)  # COLUMNS=80, as a terminal
    assert _common.console.width == 80
    ent = cli.json(
        "enterprise", "create", "Acme Laboratories International", "--slurm-account", "acme"
    )
    cli.run("quota", "grant", "acme", "--pfh", "100", "--memo", "first quarter grant")
    proj = cli.json("project", "create", "acme", "plasma-turbulence-study", "--approve")
    cli.run("cluster", "ping")
    job = str(_submit(cli, ent["id"], proj["id"]))
    cli.run("token", "create", "--enterprise", "acme", "--name", "alice")
    words = {
        ("enterprise", "list"): ["Acme", "Laboratories", "International", "acme", ent["id"][:8]],
        ("project", "list"): ["active", proj["id"][:8]],
        ("quota", "show", "acme"): ["plasma-turbulence-study", "GRANT", "first", "quarter"],
        ("token", "list", "--enterprise", "acme"): ["alice", "member"],
        ("jobs", "list"): [job[:8], "accepted", "local/default"],
        ("cluster", "list"): ["local", "default", "up"],
        ("nodes", "list", "local"): [],
        ("usage", "export", "--month", "2026-01"): ["Acme", "Laboratories"],
        ("jobs", "show", job): [job, "accepted", "HOLD"],
    }
    for args, expected in words.items():
        out = cli.run(*args).stdout
        _lines_fit(out)
        tokens = set(out.split())
        for word in expected:
            assert word in tokens, (args, word, out)  # whole, not broken over two lines


def _submit(cli: Cli, ent: str, proj: str) -> Any:
    from .conftest import submit_job

    return submit_job(cli.url, ent, proj)


def _datetimes(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [d for v in value.values() for d in _datetimes(v)]
    if isinstance(value, list):
        return [d for v in value for d in _datetimes(v)]
    return [value] if isinstance(value, str) and DATEISH.match(value) else []


def test_json_times_are_iso_8601(cli: Cli) -> None:
    seeded = cli.seed(jobs_n=1)
    found: list[str] = []
    for args in [
        ("cluster", "ping"),
        ("cluster", "list"),
        ("enterprise", "list"),
        ("token", "list"),
        ("project", "list"),
        ("quota", "show", "acme"),
        ("jobs", "list"),
        ("jobs", "show", seeded["jobs"][0]),
    ]:
        found += _datetimes(cli.json(*args))
    assert any(v for v in found)
    assert [v for v in found if not ISO.match(v)] == []
    assert any(
        ISO.match(str(c.get("last_seen_at"))) for c in cli.json("cluster", "list")
    )  # a raw datetime of the CLI's own, not only the API's models


def test_every_option_and_argument_has_help(cli: Cli) -> None:
    missing: list[str] = []

    def walk(cmd: Any, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        for param in cmd.params:
            if not getattr(param, "help", None):
                missing.append(f"{' '.join(path) or 'brokerctl'} {param.name}")

    walk(typer.main.get_command(app), [])
    assert missing == []
    assert "cluster admin token" in cli.run("token", "create", "--help").stdout.lower()


def test_usage_export_lists_the_files_it_wrote(cli: Cli) -> None:
    cli.seed()
    out = cli.tmp / "statements"
    result = cli.run("usage", "export", "--month", "2026-01", "--out", str(out))
    written = [Path(line.removeprefix("wrote ")) for line in result.stderr.splitlines()]
    assert written == sorted(out.glob("*.csv")) and len(written) == 1
    assert written[0].read_text().startswith("month,")
    assert json.loads(
        cli.run("usage", "export", "--month", "2026-01", "--out", str(out), "--json").stdout
    )  # stdout stays the JSON; the list goes to stderr


# -- where the database is ---------------------------------------------------------------
@pytest.fixture
def bare(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> Cli:
    """No BROKER_DATABASE_URL, no data dir; a cwd with no broker.db in it."""
    for var in ("BROKER_DATABASE_URL", "BROKER_DATA_DIR", "BROKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_common, "SYSTEM_CONFIG", tmp_path / "etc" / "broker.env")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return cli


def test_database_from_a_config_file_wherever_brokerctl_runs(
    bare: Cli, tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "srv" / "broker.db"
    db.parent.mkdir()
    shutil.copy(sqlite_template, db)
    conf = tmp_path / "broker.env"
    conf.write_text(f"BROKER_DATABASE_URL=sqlite:///{db}\nBROKER_DATA_DIR={tmp_path / 'srv'}\n")
    bare.run("--config", str(conf), "enterprise", "create", "Conf Co")
    monkeypatch.setenv("BROKER_CONFIG", str(conf))
    assert [e["name"] for e in bare.json("enterprise", "list")] == ["Conf Co"]
    # The host's file (the one the systemd units read) needs no option at all.
    monkeypatch.delenv("BROKER_CONFIG")
    monkeypatch.setattr(_common, "SYSTEM_CONFIG", conf)
    assert [e["name"] for e in bare.json("enterprise", "list")] == ["Conf Co"]
    # The environment wins over the file.
    other = tmp_path / "other.db"
    shutil.copy(sqlite_template, other)
    monkeypatch.setenv("BROKER_DATABASE_URL", f"sqlite:///{other}")
    assert bare.json("enterprise", "list") == []
    missing = bare.run("--config", str(tmp_path / "nope.env"), "enterprise", "list", code=2)
    assert "nope.env does not exist" in missing.stderr


def test_database_in_the_data_dir_or_the_users_not_the_cwd(
    bare: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare.run("db", "upgrade")
    default = tmp_path / "xdg" / "hpc-broker" / "broker.db"
    assert default.exists() and not (Path.cwd() / "broker.db").exists()
    bare.run("enterprise", "create", "Home Co")
    monkeypatch.chdir(tmp_path)  # anywhere else: the same database
    assert [e["name"] for e in bare.json("enterprise", "list")] == ["Home Co"]

    monkeypatch.setenv("BROKER_DATA_DIR", str(tmp_path / "data-dir"))
    missing = bare.run("enterprise", "list", code=3)
    assert str(tmp_path / "data-dir" / "broker.db") in missing.stderr
    assert "BROKER_DATA_DIR" in missing.stderr and "--config" in missing.stderr
    bare.run("db", "upgrade")
    assert (tmp_path / "data-dir" / "broker.db").exists()
    assert bare.json("enterprise", "list") == []


def test_columns_80_in_a_real_terminal_width(cli: Cli) -> None:
    """The same, through the installed brokerctl with COLUMNS=80 (as a terminal sets it)."""
    import os
    import subprocess
    import sys

    cli.run("enterprise", "create", "Acme Laboratories International", "--slurm-account", "acme")
    cli.run("project", "create", "acme", "plasma-turbulence-study", "--approve")
    exe = str(Path(sys.executable).with_name("brokerctl"))
    env = {**os.environ, "COLUMNS": "80", "BROKER_DATABASE_URL": cli.url}
    for args in (["enterprise", "list"], ["project", "list"], ["cluster", "list"]):
        out = subprocess.run(
            [exe, *args], env=env, capture_output=True, text=True, check=True, timeout=180
        ).stdout
        _lines_fit(out)
        assert max(len(line) for line in out.splitlines()) > 60  # it used the width
        if args[0] == "enterprise":
            assert {"Acme", "Laboratories", "International"} <= set(out.split())
