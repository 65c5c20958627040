"""Pushing an enterprise's Slurm accounts (against fake sacctmgr/sshare): limits from the
period's remaining budget plus Slurm's usage, a usage reset at each period's first push,
blocks for suspended enterprises and closed projects, per-cluster status.

SQLite and PostgreSQL; the live counterpart is test_slurm_limits_live.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.config import ClusterConfig, PartitionConfig
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Enterprise, EnterpriseStatus, Project
from broker.services import ledger, projects, slurm_sync, tenants
from broker.services.principal import SYSTEM

PFH = 3_600_000_000  # ledger units in one PFlop·h
MINUTES_PER_PFH = 60_000_000  # billing minutes in one PFlop·h


@pytest.fixture
def fake(tmp_path: Path) -> ClusterConfig:
    """A slurm-cli cluster whose sacctmgr logs its calls and whose sshare reports that
    every account used 1000 billing minutes."""
    log = tmp_path / "calls.jsonl"
    (tmp_path / "sacctmgr").write_text(
        f"""#!/usr/bin/env python3
import json, pathlib, sys
open({str(log)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")
known = pathlib.Path({str(tmp_path / "accounts")!r})
names = known.read_text().split() if known.exists() else []
if sys.argv[1:3] == ["-i", "add"] and sys.argv[3] == "account":
    known.write_text(" ".join(names + [sys.argv[4]]))
if sys.argv[1] == "-nP":
    for name in names:
        print(f"fake|{{name}}|||||")
"""
    )
    (tmp_path / "sshare").write_text(
        """#!/usr/bin/env python3
import sys
accounts = sys.argv[sys.argv.index("-A") + 1].split(",")
print("CLUSTER: fake")
for a in accounts:
    print(f"{a}||cpu=0,billing=1000")
"""
    )
    (tmp_path / "scontrol").write_text(
        f"""#!/usr/bin/env python3
import json, sys
open({str(log)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")
print("PartitionName=p TRESBillingWeights=CPU=1")
"""
    )
    for tool in ("sacctmgr", "sshare", "scontrol"):
        (tmp_path / tool).chmod(0o755)
    (tmp_path / "slurm.conf").write_text("ClusterName=fake\n")  # the tools are fakes
    return ClusterConfig(
        name="fake",
        adapter="slurm-cli",
        scratch_dir=tmp_path / "scratch",
        options={"slurm_conf": str(tmp_path / "slurm.conf"), "bin_dir": str(tmp_path)},
        partitions=[PartitionConfig(name="p", nodes=1)],
    )


def _calls(cfg: ClusterConfig, since: int = 0) -> list[list[str]]:
    log = Path(cfg.options["bin_dir"]) / "calls.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines[since:]]


def _sets(calls: list[list[str]], account: str) -> list[str]:
    """What the `modify account where name=<account> ... set ...` calls set."""
    out: list[str] = []
    for call in calls:
        if "modify" in call and f"name={account}" in call:
            out += call[call.index("set") + 1 :]
    return out


@pytest.fixture
def factory(db_url: str) -> Iterator[Any]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_push_limits_reset_blocks_and_status(factory: Any, fake: ClusterConfig) -> None:
    with session_scope(factory) as s:
        ent = tenants.create_enterprise(
            s, SYSTEM, name="Pushy", posix_user="root_not", slurm_account="e_pushy"
        )
        ent_id = ent.id
        ledger.grant(s, SYSTEM, ent_id, 3 * PFH, "")
        proj = projects.create_project(
            s, SYSTEM, enterprise_id=ent_id, name="poc", allocation_units=PFH
        )
        projects.approve_project(s, SYSTEM, proj.id)
        draft = projects.create_project(s, SYSTEM, enterprise_id=ent_id, name="draft")
        results = slurm_sync.push_enterprise(s, [fake], ent_id)
        assert [r.error for r in results] == [""]
        status = s.get(Enterprise, ent_id).slurm_status["fake"]  # type: ignore[union-attr]
        # slurm-cli runs sbatch as the user here: a user this host lacks is reported.
        assert status["status"] == "error" and "root_not" in status["detail"]
        assert status["period"] == ent.current_period
        assert s.get(Project, proj.id).slurm_status["fake"] == status  # type: ignore[union-attr]
        assert s.get(Project, draft.id).slurm_status == {}  # type: ignore[union-attr]
    first = _calls(fake)
    # New accounts (nothing to reset yet) with the period's whole budget.
    assert _sets(first, "e_pushy") == [f"GrpTRESMins=billing={3 * MINUTES_PER_PFH}"]
    assert _sets(first, "e_pushy-poc") == [f"GrpTRESMins=billing={MINUTES_PER_PFH}"]
    assert not any("e_pushy-draft" in " ".join(c) for c in first)  # drafts get no account

    with session_scope(factory) as s:  # suspended: blocked; Slurm's usage counts now
        tenants.set_status(s, SYSTEM, ent_id, EnterpriseStatus.SUSPENDED)
        slurm_sync.push_enterprise(s, [fake], ent_id)
    again = _calls(fake, len(first))
    assert "RawUsage=0" not in _sets(again, "e_pushy")  # same period: no reset
    assert f"GrpTRESMins=billing={3 * MINUTES_PER_PFH + 1000}" in _sets(again, "e_pushy")
    assert "GrpSubmitJobs=0" in _sets(again, "e_pushy")

    with session_scope(factory) as s:  # a new period: push_due resets and re-limits
        tenants.roll_periods(s, datetime.now(UTC) + timedelta(days=32))
        ent_row = s.get(Enterprise, ent_id)
        assert ent_row is not None
        assert ent_row.slurm_status["fake"]["period"] != ent_row.current_period
        done = len(_calls(fake))
        assert slurm_sync.push_due(s, [fake])
        assert ent_row.slurm_status["fake"]["period"] == ent_row.current_period
        assert slurm_sync.push_due(s, [fake]) == []  # nothing due any more
    rolled = _calls(fake, done)
    assert _sets(rolled, "e_pushy")[0] == "RawUsage=0"
    assert _sets(rolled, "e_pushy-poc")[0] == "RawUsage=0"


def test_closed_project_is_blocked_and_sync_only_advises_weights(
    factory: Any, fake: ClusterConfig
) -> None:
    with session_scope(factory) as s:
        ent = tenants.create_enterprise(s, SYSTEM, name="Closer", slurm_account="e_closer")
        proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="done")
        projects.approve_project(s, SYSTEM, proj.id)
        projects.close_project(s, SYSTEM, proj.id)
        from broker.services import clusters

        clusters.sync_config(s, [fake])
        results = slurm_sync.sync(s, [fake], dry_run=False)
    calls = _calls(fake)
    assert "GrpSubmitJobs=0" in _sets(calls, "e_closer-done")
    assert "GrpSubmitJobs=0" not in _sets(calls, "e_closer")
    assert not any(c and c[0] == "update" for c in calls)  # never scontrol update
    (result,) = results
    assert result.error == "" and not any("TRESBillingWeights" in a for a in result.actions)
    assert "slurm.conf" in result.advice[0] and "TRESBillingWeights=CPU=50" in result.advice[0]


def test_push_due_retries_a_failed_cluster_after_a_while(factory: Any, fake: ClusterConfig) -> None:
    with session_scope(factory) as s:
        ent = tenants.create_enterprise(s, SYSTEM, name="Retry", slurm_account="e_retry")
        now = datetime.now(UTC)
        retry_after = (now + timedelta(seconds=slurm_sync.RETRY_S)).isoformat()
        failed = {"status": "error", "detail": "slurmdbd down", "period": "2000-01"}
        ent.slurm_status = {"fake": {**failed, "retry_after": retry_after}}
        s.flush()
        assert slurm_sync.push_due(s, [fake], now + timedelta(seconds=10)) == []
        later = now + timedelta(seconds=slurm_sync.RETRY_S + 1)
        assert [r.cluster for r in slurm_sync.push_due(s, [fake], later)] == ["fake"]
        assert ent.slurm_status["fake"]["period"] == ent.current_period


def test_projects_named_in_other_scripts_get_their_own_accounts() -> None:
    ent = Enterprise(slurm_account="e_x")
    accounts = {
        slurm_sync.project_account(ent, Project(name=n))
        for n in ("量子化学", "分子动力学", "расчёт", "poc")
    }
    assert accounts == {"e_x-liang_zi_hua_xue", "e_x-fen_zi_dong_li_xue", "e_x-raschet", "e_x-poc"}


def test_gpu_partition_weights_bill_each_gpu_its_measured_rate(
    factory: Any, fake: ClusterConfig
) -> None:
    """A GPU partition's TRESBillingWeights: the CPUs carry the whole node's rate until
    its GPUs are measured; then each GPU bills the median measured GPU rate and the CPUs
    the rest (a whole node still bills its rate)."""
    from broker.models import Node
    from broker.services import clusters

    gpu = PartitionConfig(name="g", nodes=2, cpus_per_node=4, gpus_per_node=2, rate_tflops=2.1)
    cfg = fake.model_copy(update={"partitions": [*fake.partitions, gpu]})
    with session_scope(factory) as s:
        clusters.sync_config(s, [cfg])
        assert slurm_sync.partition_weights(s, "fake")["g"] == "CPU=525"  # rated, unmeasured
        cluster_id = clusters.get_cluster(s, "fake").id
        for name, gpus in (("g1", [500_000, 520_000]), ("g2", [480_000, 500_000])):
            s.add(
                Node(
                    cluster_id=cluster_id,
                    name=name,
                    partitions=["g"],
                    gpus=2,
                    rate_mflops=100_000 + sum(gpus),
                    gpu_mflops=gpus,
                )
            )
        s.flush()
        # node rates 1.12 and 1.08 TFLOP/s: median 1.1; GPUs' median 0.5 each
        assert slurm_sync.partition_weights(s, "fake")["g"] == "CPU=25,GRES/gpu=500"
