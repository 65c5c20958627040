"""brokerctl token create --expires-in / --expires-at, and token list shows expiries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import Cli


def test_token_create_with_an_expiry_and_list(cli: Cli) -> None:
    cli.seed()
    before = datetime.now(UTC)
    made = cli.json("token", "create", "--enterprise", "acme", "--name", "ci", "--expires-in", "2d")
    expires = datetime.fromisoformat(made["expires_at"])
    assert before + timedelta(days=2) <= expires <= datetime.now(UTC) + timedelta(days=2)
    at = cli.json(
        "token", "create", "--operator", "--name", "ops", "--expires-at", "2099-01-02T03:04:05"
    )
    assert datetime.fromisoformat(at["expires_at"]) == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    forever = cli.json("token", "create", "--enterprise", "acme", "--name", "svc")
    assert forever["expires_at"] is None
    listed = {t["name"]: t for t in cli.json("token", "list", "--enterprise", "acme")}
    assert listed["ci"]["expires_at"] == made["expires_at"] and listed["svc"]["expires_at"] is None
    table = cli.run("token", "list", "--enterprise", "acme").stdout
    assert "expires" in table and "never" in table


def test_token_create_refuses_past_and_malformed_expiries(cli: Cli) -> None:
    past = cli.run(
        "token", "create", "--operator", "--name", "x", "--expires-at", "2001-01-01", code=1
    )
    assert "expires_at: is in the past" in past.stderr
    for bad in ("soon", "0d", "10y", "-5m"):
        out = cli.run("token", "create", "--operator", "--name", "x", "--expires-in", bad, code=2)
        assert "--expires-in" in out.stderr
    cli.run("token", "create", "--operator", "--name", "x", "--expires-at", "tomorrow", code=2)
    both = ("--expires-in", "1d", "--expires-at", "2099-01-01")
    assert (
        "at most one"
        in cli.run("token", "create", "--operator", "--name", "x", *both, code=2).stderr
    )
    assert cli.json("token", "list") == []
