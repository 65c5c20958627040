"""brokerctl slurm sync and jobs reconcile against the live dev clusters."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Cli

pytestmark = [pytest.mark.slurm, pytest.mark.filterwarnings("ignore::ImportWarning")]


@pytest.fixture
def slurm_cli(cli: Cli, slurm_clusters_file: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("BROKER_CLUSTERS_FILE", str(slurm_clusters_file))
    return cli


def test_sync_dry_run_then_apply_is_idempotent(slurm_cli: Cli) -> None:
    slurm_cli.json("enterprise", "create", "Sync Corp", "--slurm-account", "e_sync_corp")
    slurm_cli.run("quota", "grant", "e_sync_corp", "--pfh", "2")
    slurm_cli.json("project", "create", "e_sync_corp", "alpha-poc", "--approve")
    plan = slurm_cli.json("slurm", "sync", "--dry-run")
    by_cluster = {r["cluster"]: r for r in plan}
    assert set(by_cluster) == {"alpha", "beta"}
    assert all(not r["applied"] and not r["error"] for r in plan)
    applied = slurm_cli.json("slurm", "sync")
    assert all(r["applied"] and not r["error"] for r in applied)
    again = slurm_cli.json("slurm", "sync", "--dry-run")
    assert [r["actions"] for r in again] == [[], []]  # in sync: nothing left to change
    # 2 PFlop·h is 1.2e8 billing minutes (1 billing = 1 GFLOP/s of node rate)
    text = slurm_cli.run("slurm", "sync", "--dry-run", "--cluster", "alpha").stdout
    assert "in sync" in text


def test_reconcile_dry_run_and_errors(slurm_cli: Cli) -> None:
    report = slurm_cli.json("jobs", "reconcile", "--cluster", "alpha", "--dry-run")
    assert report["cluster"] == "alpha" and report["dry_run"] is True
    assert report["adopted"] == [] and report["cancelled"] == []
    slurm_cli.run("jobs", "reconcile", "--cluster", "nowhere", code=2)
    slurm_cli.run("slurm", "sync", "--cluster", "nowhere", code=2)
