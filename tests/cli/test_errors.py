"""Exit codes scripts can trust: 0 ok, 1 domain error, 2 usage error, 3 no database."""

from __future__ import annotations

import pytest

from .conftest import Cli


def test_usage_errors_exit_2(cli: Cli) -> None:
    cli.run("no-such-command", code=2)
    cli.run("enterprise", "show", code=2)  # missing argument
    cli.run("enterprise", "list", "--colour", code=2)  # unknown option
    assert "Usage" in cli.run("quota", code=2).stderr + cli.run("quota", code=2).stdout


def test_missing_sqlite_file_exits_3_and_is_not_created(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = cli.tmp / "nope" / "broker.db"
    monkeypatch.setenv("BROKER_DATABASE_URL", f"sqlite:///{missing}")
    result = cli.run("enterprise", "list", code=3)
    assert "cannot reach the database" in result.stderr and "db upgrade" in result.stderr
    cli.run("db", "current", code=3)
    assert not missing.exists()


def test_unmigrated_database_exits_3_with_a_hint(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = cli.tmp / "empty.db"
    empty.touch()
    monkeypatch.setenv("BROKER_DATABASE_URL", f"sqlite:///{empty}")
    assert "brokerctl db upgrade" in cli.run("jobs", "list", code=3).stderr


def test_unreachable_postgres_exits_3_without_leaking_the_password(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_DATABASE_URL", "postgresql+psycopg://u:s3cret@127.0.0.1:1/broker")
    result = cli.run("enterprise", "list", "--json", code=3)
    assert result.stdout == ""
    assert "cannot reach the database" in result.stderr and "s3cret" not in result.stderr
    cli.run("token", "create", "--operator", "--name", "x", code=3)


def test_db_upgrade_and_current(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.json("db", "current") == {
        "current": cli.json("db", "current")["head"],
        "head": cli.json("db", "current")["head"],
        "up_to_date": True,
    }
    fresh = cli.tmp / "fresh.db"
    out = cli.json("--database-url", f"sqlite:///{fresh}", "db", "upgrade")
    assert out["current"] == out["head"] and fresh.exists()
    assert "revision" in cli.run("--database-url", f"sqlite:///{fresh}", "db", "upgrade").stdout
    # the root option beats the environment
    monkeypatch.setenv("BROKER_DATABASE_URL", f"sqlite:///{cli.tmp / 'absent.db'}")
    assert cli.json("--database-url", f"sqlite:///{fresh}", "enterprise", "list") == []


@pytest.mark.postgres
def test_commands_on_postgres(cli: Cli, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_DATABASE_URL", pg_url)
    cli.url = pg_url
    seeded = cli.seed(jobs_n=1)
    assert cli.json("enterprise", "show", "acme")["balance"]["held_pfh"] > 0
    assert cli.json("jobs", "cancel", seeded["jobs"][0])[0]["state"] == "cancelled"
    assert cli.json("db", "current")["up_to_date"] is True
