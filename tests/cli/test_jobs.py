"""brokerctl jobs: list, show, cancel (with --dry-run)."""

from __future__ import annotations

import uuid

from .conftest import Cli


def test_jobs_list_show_cancel(cli: Cli) -> None:
    seeded = cli.seed(jobs_n=2)
    first, second = seeded["jobs"]
    listed = cli.json("jobs", "list")
    assert {j["id"] for j in listed} == {first, second}
    assert all(j["state"] == "accepted" and j["cluster"] == "local" for j in listed)
    assert len(cli.json("jobs", "list", "--limit", "1")) == 1
    assert len(cli.json("jobs", "list", "--enterprise", "acme", "--state", "accepted")) == 2
    assert len(cli.json("jobs", "list", "--project", "poc", "--cluster", "local")) == 2
    assert cli.json("jobs", "list", "--state", "running") == []
    assert first[:8] in cli.run("jobs", "list").stdout

    shown = cli.json("jobs", "show", first)
    assert shown["id"] == first and shown["hold_pfh"] > 0
    assert [e["kind"] for e in shown["ledger"]] == ["HOLD"]
    assert shown["routing"]["cluster"] == "local"
    assert "HOLD" in cli.run("jobs", "show", first).stdout

    plan = cli.json("jobs", "cancel", first, second, "--dry-run")
    assert {(p["was"], p["state"], p["dry_run"]) for p in plan} == {("accepted", "accepted", True)}
    assert "would: cancelled" in cli.run("jobs", "cancel", first, "--dry-run").stdout
    assert cli.json("jobs", "show", first)["state"] == "accepted"

    done = cli.json("jobs", "cancel", first)
    assert done[0]["state"] == "cancelled" and done[0]["outcome"] == "cancelled"
    after = cli.json("jobs", "show", first)
    assert after["state"] == "cancelled" and after["charge_pfh"] == 0
    assert sorted(e["kind"] for e in after["ledger"]) == ["CHARGE", "HOLD", "RELEASE"]
    assert cli.json("jobs", "cancel", first)[0]["outcome"] == "already ended"
    assert (
        cli.json("quota", "show", "acme")["held_pfh"]
        == cli.json("jobs", "show", second)["hold_pfh"]
    )

    cli.run("jobs", "show", str(uuid.uuid4()), code=1)
    cli.run("jobs", "cancel", str(uuid.uuid4()), code=1)
    cli.run("jobs", "show", "17", code=2)
    cli.run("jobs", "list", "--state", "sleeping", code=2)


def test_jobs_resolve_a_lost_job(cli: Cli) -> None:
    from datetime import UTC, datetime, timedelta

    from broker.db import make_engine, make_session_factory, session_scope
    from broker.models import Job
    from broker.services import scheduling

    seeded = cli.seed(jobs_n=2)
    lost, running = seeded["jobs"]
    engine = make_engine(cli.url)
    now = datetime.now(UTC)
    with session_scope(make_session_factory(engine)) as s:
        for job_id in (lost, running):
            row = s.get(Job, uuid.UUID(job_id))
            assert row is not None
            scheduling.mark_submitted(row, f"s-{job_id[:4]}", now)
            row.node_list = ["local1"]
        row = s.get(Job, uuid.UUID(lost))
        assert row is not None
        row.unseen_since = now - timedelta(hours=1)
        assert scheduling.mark_unseen(s, row, now, grace_s=600)
    engine.dispose()
    assert cli.json("jobs", "list", "--state", "lost")[0]["id"] == lost
    cli.run("jobs", "resolve", running[:8], "--memo", "x", code=1)  # not lost: refused
    done = cli.json("jobs", "resolve", lost[:8], "--charge-seconds", "60", "--memo", "node log")
    assert done["state"] == "lost" and done["charge_pfh"] > 0
    assert "charged 60 s from evidence (node log)" in done["reason"]
    kinds = sorted(e["kind"] for e in cli.json("jobs", "show", lost)["ledger"])
    assert kinds == ["CHARGE", "HOLD", "RELEASE"]


# What a tenant writes reaches an operator's terminal: a job's reason names files its job
# made, an enterprise admin names its tokens. An escape sequence there would drive the
# terminal, and rich markup ("[/x]" unbalanced) would be obeyed, or fail the command.
HOSTILE = "out/x\x1b[2J\x1b]0;pwned\x07 [bold red]loud[/] [/bogus] is a FIFO; not collected"


def _shows_hostile_text_as_written(out: str) -> None:
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    for part in ("\\x1b[2J", "\\x1b]0;pwned\\x07", "[bold red]loud[/]", "[/bogus]"):
        assert part in out, (part, out)


def test_tenant_text_is_printed_as_written_not_obeyed(cli: Cli) -> None:
    from broker.db import make_engine, make_session_factory, session_scope
    from broker.models import Job, Role
    from broker.services import tokens
    from broker.services.principal import SYSTEM

    seeded = cli.seed(jobs_n=1)
    job_id = seeded["jobs"][0]
    engine = make_engine(cli.url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            s.get(Job, uuid.UUID(job_id)).reason = f"exit code 0; stage-out partial: {HOSTILE}"
            row, _ = tokens.create_token(
                s,
                SYSTEM,
                name=HOSTILE,
                role=Role.MEMBER,
                enterprise_id=uuid.UUID(seeded["enterprise"]["id"]),
            )
            token_id = str(row.id)
    finally:
        engine.dispose()
    _shows_hostile_text_as_written(cli.run("jobs", "show", job_id).stdout)
    listed = cli.run("token", "list", "--enterprise", "acme").stdout
    assert "\x1b" not in listed and "[/bogus]" in listed
    _shows_hostile_text_as_written(cli.run("token", "revoke", token_id).stdout)
    assert cli.json("jobs", "show", job_id)["reason"].endswith(HOSTILE)  # the data unchanged
    refused = cli.run("jobs", "show", "[/bogus]\x1b[2J", code=2)  # an error naming the input
    assert "[/bogus]\\x1b[2J" in refused.stderr and "\x1b" not in refused.stderr, refused.stderr
