"""Crash safety: kill -9 the broker (API + worker, `brokerctl serve`) at random points.

60 jobs go to the live dev cluster alpha (slurm-cli) while the broker process is
SIGKILLed every 0.2-1.5 s and started again; clients retry with their Idempotency-Key
until they get a 202. After the last restart and a reconciliation pass: no accepted job
lost, none submitted twice (the scheduler's jobs counted per broker tag in sacct and
squeue), none charged twice, every job settled and the ledger's invariants hold.
``benchmarks/crash_kill9.py`` runs the same with 500 jobs and prints the figures.
"""

from __future__ import annotations

import random
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
ACCOUNT = "e_faults"


def run_crash_scenario(
    db_url: str,
    clusters_file: Path,
    workdir: Path,
    n_jobs: int,
    *,
    seed: int,
    clients: int = 4,
    pace_s: float = 0.5,
    log: bool = False,
) -> tuple[_live.Audit, dict[str, float]]:
    """Submit ``n_jobs`` while killing the broker at random; return the audit and figures."""
    ensure_posix_user(USER)
    tenant = _live.make_tenant(db_url, clusters_file, USER, ACCOUNT)
    conf = _live.alpha_conf(clusters_file)
    rng = random.Random(seed)
    since = datetime.now(UTC)
    broker = _live.BrokerProcess(workdir, _live.broker_env(db_url, clusters_file))
    subs = _live.Submissions()
    keys = [f"crash-{uuid.uuid4().hex[:8]}-{i}" for i in range(n_jobs)]
    t0 = time.monotonic()
    broker.start()
    threads = [
        threading.Thread(
            target=_live.submit_jobs,
            args=(lambda: broker.base, tenant, keys[i::clients], subs),
            kwargs={"pace_s": pace_s},
            daemon=True,
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    # Kill while clients submit, then while the worker submits and follows the jobs.
    while True:
        time.sleep(rng.uniform(0.2, 1.5))
        clients_done = not any(t.is_alive() for t in threads)
        total, submitted = _live.count_submitted(db_url, tenant)
        if clients_done and submitted == total:
            break
        broker.kill9()
        if log:
            print(f"kill #{broker.kills}: accepted {len(subs.accepted)}, submitted {submitted}")
        broker.start()
    for t in threads:
        t.join()
    accepted_s = time.monotonic() - t0
    # A few more kills while jobs run and settle.
    for _ in range(3):
        time.sleep(rng.uniform(0.3, 2.0))
        broker.kill9()
        broker.start()
    broker.kill9()
    report = _live.reconcile_alpha(db_url, clusters_file, since)
    broker.start()
    try:
        _live.wait_all_terminal(db_url, tenant, timeout_s=60 + n_jobs * 1.5)
    finally:
        broker.stop()
    total_s = time.monotonic() - t0
    verdict = _live.audit(db_url, tenant, subs, conf, since)
    figures = {
        "jobs": n_jobs,
        "kills": broker.kills,
        "client_transport_errors": subs.transport_errors,
        "replayed_202": sum(subs.statuses.values()) - n_jobs,
        "reconcile_adopted": len(report.adopted),
        "reconcile_duplicates": len(report.duplicates),
        "accepted_s": round(accepted_s, 1),
        "all_settled_s": round(total_s, 1),
    }
    return verdict, figures


def test_kill9_at_random_points_loses_and_duplicates_nothing(
    slurm_clusters_file: Path, tmp_path: Path, sqlite_template: Path
) -> None:
    db = tmp_path / "broker.db"
    shutil.copy(sqlite_template, db)
    clusters = _live.alpha_only(slurm_clusters_file, tmp_path / "clusters.toml")
    verdict, figures = run_crash_scenario(f"sqlite:///{db}", clusters, tmp_path, 60, seed=10)
    print(figures, verdict.states)
    assert figures["kills"] >= 5, figures
    assert verdict.accepted == verdict.in_db == 60, (verdict, figures)
    assert verdict.ok(), verdict
    assert verdict.states["completed"] == 60, verdict.states
