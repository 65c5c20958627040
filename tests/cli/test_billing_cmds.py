"""brokerctl nodes validate and usage export on the embedded local cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from .conftest import Cli


@pytest.mark.slow
def test_nodes_validate_sets_the_rate(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, open_tmp_path: Path, local_validation_python: str
) -> None:
    # As root, the job runs as the validation user: a data_dir and an interpreter that
    # user can reach.
    monkeypatch.setenv("BROKER_DATA_DIR", str(open_tmp_path / "data"))
    monkeypatch.setenv("BROKER_VALIDATION_PYTHON", local_validation_python)
    monkeypatch.setenv("BROKER_VALIDATION_ARGS", "--quick")
    monkeypatch.setenv("BROKER_VALIDATION_MIN_GEMM_PEAK_RATIO", "0")
    cli.run("nodes", "validate", "--cluster", "local", "--node", "local2", "--dry-run")
    runs = cli.json(
        "nodes", "validate", "--cluster", "local", "--node", "local2", "--timeout-s", "240"
    )
    assert [r["node"] for r in runs] == ["local2"]
    assert runs[0]["state"] == "passed", runs
    assert runs[0]["gemm_gflops"] > 0
    nodes = {n["name"]: n for n in cli.json("nodes", "list", "local")}
    assert nodes["local2"]["validation"] == "validated" and nodes["local2"]["measured"]
    cli.run("nodes", "validate", "--cluster", "nowhere", code=2)


def test_usage_export(cli: Cli, tmp_path: Path) -> None:
    seeded = cli.seed()
    month = datetime.now(UTC).strftime("%Y-%m")
    docs = cli.json("usage", "export", "--month", month)
    assert [d["enterprise_id"] for d in docs] == [seeded["enterprise"]["id"]]
    assert docs[0]["net_units"] == 0 and docs[0]["projects"] == []
    cli.run("usage", "export", "--month", month, "--out", str(tmp_path / "csv"))
    files = list((tmp_path / "csv").glob("usage-*.csv"))
    assert len(files) == 1 and files[0].read_text().startswith("month,project,job_id")
    cli.run("usage", "export", "--month", "2026-13", code=2)
