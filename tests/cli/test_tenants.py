"""brokerctl enterprise | token | project | quota, as an operator on the broker host."""

from __future__ import annotations

import uuid

import pytest

from broker.db import make_engine, make_session_factory, session_scope
from broker.services import ledger, tokens

from .conftest import Cli


def test_enterprise_create_list_show_suspend(cli: Cli) -> None:
    ent = cli.json(
        "enterprise", "create", "Acme Labs", "--capacity-cap-pflops", "0.5", "--period", "quarter"
    )
    assert ent["name"] == "Acme Labs" and ent["status"] == "active"
    assert ent["slurm_account"] == "e_acme_labs" and ent["period"] == "quarter"
    assert ent["capacity_cap_pflops"] == pytest.approx(0.5)
    assert ent["balance"]["available_pfh"] == 0
    listed = cli.json("enterprise", "list")
    assert [e["id"] for e in listed] == [ent["id"]]
    table = cli.run("enterprise", "list").stdout
    assert "Acme Labs" in table and "e_acme_labs" in table
    # by id, name or Slurm account
    for ref in (ent["id"], "Acme Labs", "e_acme_labs"):
        assert cli.json("enterprise", "show", ref)["id"] == ent["id"]
    assert "Acme Labs" in cli.run("enterprise", "show", "e_acme_labs").stdout
    assert cli.json("enterprise", "suspend", "e_acme_labs")["status"] == "suspended"
    assert cli.json("enterprise", "show", ent["id"])["status"] == "suspended"
    assert "active" in cli.run("enterprise", "activate", "e_acme_labs").stdout

    dup = cli.run("enterprise", "create", "Acme Labs", code=1)
    assert "already exists" in dup.stderr
    assert "no enterprise" in cli.run("enterprise", "show", "nobody", code=1).stderr
    cli.run("enterprise", "create", "Bad", "--posix-user", "Not Posix", code=1)
    cli.run("enterprise", "create", "X", "--capacity-cap-pflops", "-1", code=2)
    cli.run("enterprise", "create", "X", "--period", "decade", code=2)


def test_token_create_list_revoke(cli: Cli) -> None:
    clear = cli.run("token", "create", "--operator", "--name", "ops").stdout.strip()
    assert clear.startswith("hcb_") and "\n" not in clear
    engine = make_engine(cli.url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        assert tokens.authenticate(s, clear).role.value == "operator"
    admin = cli.json("token", "create", "--cluster-admin", "--name", "alice")
    assert admin["role"] == "cluster_admin" and admin["token"].startswith("hcb_")
    cli.seed()
    member = cli.json("token", "create", "--enterprise", "acme", "--role", "admin", "--name", "b")
    assert member["role"] == "admin" and member["enterprise_id"]

    staff = cli.json("token", "list")
    assert {t["name"] for t in staff} == {"ops", "alice"}
    assert all("token" not in t and "token_hash" not in t for t in staff)
    assert [t["name"] for t in cli.json("token", "list", "--enterprise", "acme")] == ["b"]
    assert "alice" in cli.run("token", "list").stdout

    revoked = cli.json("token", "revoke", admin["id"])
    assert revoked["revoked_at"] is not None
    with session_scope(factory) as s, pytest.raises(Exception, match="revoked"):
        tokens.authenticate(s, admin["token"])
    engine.dispose()
    cli.run("token", "revoke", str(uuid.uuid4()), code=1)
    cli.run("token", "revoke", "not-a-uuid", code=2)
    cli.run("token", "create", "--name", "x", code=2)  # no kind
    cli.run("token", "create", "--name", "x", "--operator", "--cluster-admin", code=2)
    cli.run("token", "create", "--name", "x", "--enterprise", "acme", "--role", "god", code=2)


def test_project_create_approve_close_list(cli: Cli) -> None:
    cli.json("enterprise", "create", "Acme", "--slurm-account", "acme")
    draft = cli.json("project", "create", "acme", "poc1", "--description", "CFD")
    assert draft["status"] == "draft"
    assert [p["name"] for p in cli.json("project", "list", "--status", "draft")] == ["poc1"]
    assert cli.json("project", "approve", draft["id"])["status"] == "active"
    assert cli.json("project", "list", "--status", "draft") == []
    other = cli.json("project", "create", "acme", "poc2", "--approve", "--allocation-pfh", "2")
    assert other["status"] == "active" and other["allocation_pfh"] == 2
    assert len(cli.json("project", "list", "--enterprise", "acme")) == 2
    assert "poc2" in cli.run("project", "list").stdout
    assert "closed" in cli.run("project", "close", "poc1").stdout  # a unique name works too
    assert "cannot be approved" in cli.run("project", "approve", draft["id"], code=1).stderr
    cli.run("project", "create", "acme", "poc2", code=1)  # duplicate name
    cli.run("project", "approve", str(uuid.uuid4()), code=1)
    cli.run("project", "list", "--status", "weird", code=2)


def test_quota_grant_adjust_allocate_show(cli: Cli) -> None:
    cli.json("enterprise", "create", "Acme", "--slurm-account", "acme")
    proj = cli.json("project", "create", "acme", "poc", "--approve")
    grant = cli.json("quota", "grant", "acme", "--pfh", "100", "--memo", "Q1")
    assert grant["kind"] == "GRANT" and grant["amount_pfh"] == 100 and grant["memo"] == "Q1"
    adjust = cli.json("quota", "adjust", "acme", "--pfh", "-2.5", "--memo", "typo")
    assert adjust["kind"] == "ADJUST" and adjust["amount_pfh"] == -2.5
    assert (
        "QuotaExceeded"
        in cli.run("quota", "adjust", "acme", "--pfh", "-1000", "--memo", "x", code=1).stderr
    )
    cli.run("quota", "adjust", "acme", "--pfh", "-1", "--memo", " ", code=1)  # memo required
    cli.run("quota", "grant", "acme", "--pfh", "0", code=1)
    cli.run("quota", "grant", "acme", "--pfh", "lots", code=2)

    alloc = cli.json("quota", "allocate", proj["id"], "--pfh", "10")
    assert alloc["allocation_pfh"] == 10 and alloc["remaining_pfh"] == 10
    assert cli.json("quota", "allocate", "poc", "--clear")["allocation_pfh"] is None
    cli.run("quota", "allocate", "poc", code=2)
    cli.run("quota", "allocate", "poc", "--pfh", "1", "--clear", code=2)

    shown = cli.json("quota", "show", "acme")
    assert shown["granted_pfh"] == 97.5 and shown["available_pfh"] == 97.5
    assert [p["name"] for p in shown["projects"]] == ["poc"]
    assert [e["kind"] for e in shown["entries"]] == ["ADJUST", "GRANT"]
    assert len(cli.json("quota", "show", "acme", "--entries", "1")["entries"]) == 1
    table = cli.run("quota", "show", "acme").stdout
    assert "97.5" in table and "typo" in table
    ent_id = uuid.UUID(shown["enterprise_id"])
    engine = make_engine(cli.url)
    with session_scope(make_session_factory(engine)) as s:
        assert ledger.check_invariants(s, ent_id) == []
    engine.dispose()
