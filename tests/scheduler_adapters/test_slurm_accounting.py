"""sacctmgr sync: units, plan/dry-run against a fake sacctmgr, and limits on live alpha."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from scheduler_adapters import JobSpec, JobState
from scheduler_adapters.slurm.accounting import (
    AccountSpec,
    SlurmAccounting,
    billing_weights,
    pfh_to_billing_minutes,
    pflops_to_billing,
)
from scheduler_adapters.slurm.cli import SlurmCliAdapter
from tests._slurm import SlurmTenant, ensure_posix_user


def test_units() -> None:
    assert pfh_to_billing_minutes(1) == 60_000_000
    assert pfh_to_billing_minutes(Decimal("0.0000001")) == 6
    assert pfh_to_billing_minutes("0.00000001") == 0  # rounds down, never over-grants
    assert pflops_to_billing("0.5") == 500_000
    assert billing_weights("0.05", 2) == "CPU=25"
    assert billing_weights(0.1, 3) == "CPU=33.33333333333333333333333333"
    with pytest.raises(ValueError):
        billing_weights(1, 0)
    # The dev clusters' GPU nodes: 2 CPUs at 25 GFLOP/s and 2 GPUs at 0.5 TFLOP/s each.
    assert billing_weights("1.05", 2, 2, "0.5") == "CPU=25,GRES/gpu=500"
    assert billing_weights("1.0", 2, 2, Decimal("0.5")) == "CPU=0,GRES/gpu=500"
    assert billing_weights("0.05", 2, 0, "0.5") == "CPU=25"
    with pytest.raises(ValueError, match="gpu_rate_tflops"):
        billing_weights("0.5", 2, 2, "0.5")


@pytest.fixture
def fake_sacctmgr(tmp_path: Path) -> Path:
    tool = tmp_path / "sacctmgr"
    tool.write_text(f"""#!/bin/bash
echo "$*" >> {tmp_path}/calls.log
if [[ "$1" == "-nP" ]]; then
  echo 'alpha|acme|||billing=100|'
  echo 'alpha|acme|alice||||'
fi
""")
    tool.chmod(0o755)
    return tmp_path


def test_plan_is_the_diff_and_dry_run_changes_nothing(fake_sacctmgr: Path) -> None:
    acct = SlurmAccounting("alpha", bin_dir=str(fake_sacctmgr))
    want = [
        AccountSpec(
            "alpha", "acme", users=("alice", "bob"), billing_minutes=100, billing_capacity=50
        ),
        AccountSpec("alpha", "newco", users=("carol",)),
    ]
    plan = acct.sync(want, dry_run=True)
    assert [a.argv[:3] for a in plan] == [
        ("add", "user", "bob"),
        ("modify", "account", "where"),
        ("add", "account", "newco"),
        ("add", "user", "carol"),
    ]
    assert plan[1].argv[-1] == "GrpTRES=billing=50" and "GrpTRESMins" not in " ".join(plan[1].argv)
    log = (fake_sacctmgr / "calls.log").read_text().splitlines()
    assert all(line.startswith("-nP show assoc") for line in log)
    acct.apply(plan)
    assert (fake_sacctmgr / "calls.log").read_text().count("-i ") == 4


def test_clearing_a_limit(fake_sacctmgr: Path) -> None:
    plan = SlurmAccounting("alpha", bin_dir=str(fake_sacctmgr)).plan(
        [AccountSpec("alpha", "acme", users=("alice",))]
    )
    assert [a.argv[-1] for a in plan] == ["GrpTRESMins=billing=-1"]


def test_blocking_unblocking_and_resetting_usage(fake_sacctmgr: Path) -> None:
    acct = SlurmAccounting("alpha", bin_dir=str(fake_sacctmgr))
    spec = AccountSpec("alpha", "acme", users=("alice",), billing_minutes=100)
    assert acct.plan([spec]) == []  # in line: nothing to do
    blocked = acct.plan([replace(spec, blocked=True)])
    assert [a.argv[-1] for a in blocked] == ["GrpSubmitJobs=0"]
    assert "blocked" in blocked[0].summary
    reset = acct.plan([replace(spec, reset_usage=True)])
    assert [a.argv[-1] for a in reset] == ["RawUsage=0"]
    (fake_sacctmgr / "sacctmgr").write_text(
        f"""#!/bin/bash
echo "$*" >> {fake_sacctmgr}/calls.log
if [[ "$1" == "-nP" ]]; then
  echo 'alpha|acme|||billing=100||0'
  echo 'alpha|acme|alice|||||'
fi
"""
    )
    unblocked = acct.plan([spec])  # the account is blocked (GrpSubmitJobs=0) in Slurm
    assert [a.argv[-1] for a in unblocked] == ["GrpSubmitJobs=-1"]
    assert acct.plan([replace(spec, blocked=True)]) == []


def test_spec_for_another_cluster_is_refused(fake_sacctmgr: Path) -> None:
    with pytest.raises(ValueError):
        SlurmAccounting("alpha", bin_dir=str(fake_sacctmgr)).plan([AccountSpec("beta", "x")])


@pytest.mark.slurm
def test_live_sync_is_idempotent_and_limit_holds_jobs(slurm_tenant: SlurmTenant) -> None:
    conf = slurm_tenant.clusters["alpha"]["options"]["slurm_conf"]
    acct = SlurmAccounting("alpha", slurm_conf=conf)
    account, user = "broker-limited", slurm_tenant.user
    ensure_posix_user(user)
    # A budget of 1 billing-minute: a 2-minute whole-node job (50 billing) cannot start.
    want = [AccountSpec("alpha", account, users=(user,), billing_minutes=1)]
    acct.sync(want)
    assert acct.plan(want) == []
    rows = acct.associations([account])
    assert rows[0].grp_tres_mins == {"billing": 1}
    adapter = SlurmCliAdapter("alpha", slurm_conf=conf)
    job_id = adapter.submit(
        JobSpec(
            name="over",
            script="true",
            time_limit_minutes=2,
            account=account,
            user=user,
            working_dir=str(slurm_tenant.workdir("alpha", uuid.uuid4().hex[:12])),
        )
    )
    try:
        deadline = time.monotonic() + 20
        info = adapter.status([job_id])[job_id]
        while info.reason is None and time.monotonic() < deadline:
            time.sleep(0.2)
            info = adapter.status([job_id])[job_id]
        assert info.state is JobState.PENDING
        assert info.reason is not None and info.reason.startswith("AssocGrpBilling")
    finally:
        adapter.cancel(job_id)
