"""brokerctl cluster | nodes: the clusters file, reachability, drain and resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_adapters.local import LocalAdapter

from .conftest import Cli

TWO_CLUSTERS = """
[[clusters]]
name = "here"
adapter = "local"
scratch_dir = "{tmp}/scratch"
options = {{ root_dir = "{tmp}/sched", node_names = ["n1", "n2"] }}
[[clusters.partitions]]
name = "default"
nodes = 2

[[clusters]]
name = "gone"
adapter = "slurm-cli"
scratch_dir = "{tmp}/scratch-gone"
options = {{ bin_dir = "{tmp}/no-such-bin", timeout_s = 2 }}
[[clusters.partitions]]
name = "batch"
nodes = 4
"""


@pytest.fixture
def two(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    path = cli.tmp / "clusters.toml"
    path.write_text(TWO_CLUSTERS.format(tmp=cli.tmp))
    monkeypatch.setenv("BROKER_CLUSTERS_FILE", str(path))
    return cli


def test_cluster_list_and_ping(two: Cli) -> None:
    before = {c["name"]: c for c in two.json("cluster", "list")}
    assert set(before) == {"here", "gone"}
    assert before["gone"]["adapter"] == "slurm-cli" and before["gone"]["nodes"] == 4
    assert not before["here"]["in_database"] and before["here"]["status"] == "unknown"

    pinged = {p["name"]: p for p in two.json("cluster", "ping", code=1)}  # one is down
    assert pinged["here"]["status"] == "up" and pinged["here"]["version"] == "local"
    assert pinged["here"]["load"]["default"]["total_nodes"] == 2
    assert pinged["gone"]["status"] == "down" and pinged["gone"]["error"]
    assert [p["status"] for p in two.json("cluster", "ping", "here")] == ["up"]  # exit 0

    after = {c["name"]: c for c in two.json("cluster", "list")}
    assert after["here"]["status"] == "up" and after["here"]["last_seen_at"]
    assert after["gone"]["status"] == "down" and after["gone"]["last_error"]
    table = two.run("cluster", "list").stdout
    assert "here" in table and "down" in table
    assert "not in the clusters file" in two.run("cluster", "ping", "nope", code=1).stderr


def test_bad_clusters_file_is_a_clear_error(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = cli.tmp / "bad.toml"
    bad.write_text("[[clusters]]\nname = 'x'\n")
    monkeypatch.setenv("BROKER_CLUSTERS_FILE", str(bad))
    assert "clusters file" in cli.run("cluster", "list", code=1).stderr
    monkeypatch.setenv("BROKER_CLUSTERS_FILE", str(cli.tmp / "missing.toml"))
    cli.run("cluster", "list", code=1)


def test_nodes_list_drain_resume(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(LocalAdapter, "drain", lambda self, n, r: calls.append(("drain", n, r)))
    monkeypatch.setattr(LocalAdapter, "resume", lambda self, n: calls.append(("resume", n)))

    nodes = cli.json("nodes", "list", "local", "--refresh")
    assert [n["name"] for n in nodes] == ["local1", "local2"]
    assert nodes[0]["state"] == "idle" and nodes[0]["validation"] == "unvalidated"
    assert "local2" in cli.run("nodes", "list", "local").stdout

    plan = cli.json("nodes", "drain", "local", "local1", "local2", "--reason", "bad", "--dry-run")
    assert [(p["node"], p["action"], p["dry_run"]) for p in plan] == [
        ("local1", "drain", True),
        ("local2", "drain", True),
    ]
    assert calls == []  # a dry run touches neither the cluster nor the database
    assert all(n["state"] == "idle" for n in cli.json("nodes", "list", "local"))
    assert (
        "would drain"
        in cli.run("nodes", "drain", "local", "local1", "--reason", "x", "--dry-run").stdout
    )

    done = cli.json("nodes", "drain", "local", "local1", "--reason", "GEMM 20% low")
    assert done[0]["error"] == "" and calls == [("drain", "local1", "GEMM 20% low")]
    state = {n["name"]: n for n in cli.json("nodes", "list", "local")}
    assert state["local1"]["state"] == "drain" and state["local1"]["reason"] == "GEMM 20% low"
    assert state["local2"]["state"] == "idle"

    cli.run("nodes", "resume", "local", "local1", "--dry-run")
    assert len(calls) == 1
    cli.run("nodes", "resume", "local", "local1")
    assert calls[-1] == ("resume", "local1")
    assert cli.json("nodes", "list", "local")[0]["state"] == "idle"

    assert (
        "unknown node" in cli.run("nodes", "drain", "local", "zz", "--reason", "x", code=1).stderr
    )
    cli.run("nodes", "drain", "local", "local1", "--reason", " ", code=2)
    cli.run("nodes", "drain", "local", "local1", code=2)  # --reason is required
    cli.run("nodes", "list", "nowhere", code=1)


def test_drain_resume_and_refusal_exits_1(cli: Cli) -> None:
    cli.json("nodes", "list", "local", "--refresh")
    drained = cli.json("nodes", "drain", "local", "local1", "--reason", "fan noise")
    assert drained[0]["error"] == ""
    row = next(n for n in cli.json("nodes", "list", "local") if n["name"] == "local1")
    assert row["state"] == "drain" and row["reason"] == "fan noise"
    # A degraded node resumes only after a passing validation run: the service refuses.
    from sqlalchemy import update

    from broker.db import make_engine
    from broker.models import Node, Validation

    engine = make_engine(cli.url)
    with engine.begin() as conn:
        conn.execute(
            update(Node).where(Node.name == "local1").values(validation=Validation.DEGRADED)
        )
    engine.dispose()
    failed = cli.json("nodes", "resume", "local", "local1", code=1)
    assert "passing validation run" in failed[0]["error"]
    row = next(n for n in cli.json("nodes", "list", "local") if n["name"] == "local1")
    assert row["state"] == "drain"  # unchanged


def test_data_dir_is_where_the_local_cluster_lives(cli: Cli) -> None:
    cli.run("cluster", "ping")
    assert (Path(cli.tmp) / "data" / "local-scheduler").is_dir()
