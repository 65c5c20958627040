"""Scheduler outage: alpha's slurmctld stops under load; jobs queue, then drain, none lost.

`brokerctl serve` takes submissions for alpha while its slurmctld is stopped (12 s here,
60 s in ``benchmarks/outage_slurmctld.py``): every submission is still accepted (202),
the worker's sbatch calls fail as transient and the jobs wait with a back-off, and once
slurmctld is started again (always, in a ``finally``) the backlog reaches Slurm, each
job exactly once, and every job settles with the ledger balanced.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .._slurm import ensure_posix_user
from . import _live

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PluginImportFixer:ImportWarning"),
]

USER = "tenantfault"
ACCOUNT = "e_outage"


def run_outage_scenario(
    db_url: str, clusters_file: Path, workdir: Path, *, outage_s: float, jobs: int
) -> tuple[_live.Audit, dict[str, float]]:
    ensure_posix_user(USER)
    tenant = _live.make_tenant(db_url, clusters_file, USER, ACCOUNT)
    conf = _live.alpha_conf(clusters_file)
    since = datetime.now(UTC)
    broker = _live.BrokerProcess(workdir, _live.broker_env(db_url, clusters_file))
    subs = _live.Submissions()
    keys = [f"outage-{uuid.uuid4().hex[:8]}-{i}" for i in range(jobs)]
    pace = outage_s / jobs * 1.5  # submissions spread over the whole outage and after
    broker.start()
    figures: dict[str, float] = {"jobs": jobs, "outage_s": outage_s}
    try:
        with _live.slurmctld_stopped(conf):
            down_at = time.monotonic()
            client = threading.Thread(
                target=_live.submit_jobs,
                args=(lambda: broker.base, tenant, keys, subs),
                kwargs={"pace_s": pace},
            )
            client.start()
            time.sleep(outage_s)
            total, submitted = _live.count_submitted(db_url, tenant)
            figures["accepted_during_outage"] = len(subs.accepted)
            figures["reached_slurm_during_outage"] = submitted
        up_at = time.monotonic()
        client.join()
        while True:
            total, submitted = _live.count_submitted(db_url, tenant)
            if total == jobs and submitted == total:
                break
            if time.monotonic() - up_at > 120:
                raise AssertionError(f"backlog not drained: {submitted}/{total}")
            time.sleep(0.2)
        figures["drain_after_recovery_s"] = round(time.monotonic() - up_at, 1)
        figures["outage_actual_s"] = round(up_at - down_at, 1)
        _live.wait_all_terminal(db_url, tenant, timeout_s=60 + jobs * 1.5)
    finally:
        broker.stop()
    figures["client_non_202"] = sum(n for c, n in subs.statuses.items() if c != 202)
    return _live.audit(db_url, tenant, subs, conf, since), figures


def test_slurmctld_outage_queues_then_drains(
    slurm_clusters_file: Path, tmp_path: Path, sqlite_template: Path
) -> None:
    db = tmp_path / "broker.db"
    shutil.copy(sqlite_template, db)
    clusters = _live.alpha_only(slurm_clusters_file, tmp_path / "clusters.toml")
    verdict, figures = run_outage_scenario(
        f"sqlite:///{db}", clusters, tmp_path, outage_s=12, jobs=20
    )
    print(figures, verdict.states)
    assert figures["accepted_during_outage"] >= 5, figures  # accepted while Slurm was down
    assert figures["reached_slurm_during_outage"] == 0, figures
    assert figures["client_non_202"] == 0, figures
    assert figures["drain_after_recovery_s"] <= 30, figures
    assert verdict.accepted == verdict.in_db == 20
    assert verdict.ok(), verdict
    assert verdict.states["completed"] == 20, verdict.states
