"""Crash safety at scale: kill -9 the broker at random points while 500 jobs go to alpha.

Runs the scenario of ``tests/reliability/test_crash_safety.py`` (live dev cluster alpha
via slurm-cli, `brokerctl serve` SIGKILLed every 0.2-1.5 s and restarted, clients
retrying with their Idempotency-Key, a reconciliation pass after the last restart) and
prints the figures: kills, lost, submitted twice, charged twice, ledger problems, times.
Needs root and the dev clusters (`deploy/slurm/devcluster up --two`).

    .venv/bin/python benchmarks/crash_kill9.py [--jobs 500] [--seed 1] [--postgres]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker import migrate  # noqa: E402
from tests.reliability import _live  # noqa: E402
from tests.reliability.test_crash_safety import run_crash_scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--pace", type=float, default=0.2, help="seconds between a client's jobs")
    ap.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = ap.parse_args()
    up = subprocess.run(
        [sys.executable, str(ROOT / "deploy/slurm/devcluster"), "up", "--two"],
        capture_output=True,
        text=True,
        check=True,
    )
    clusters_file = Path(up.stdout.strip().splitlines()[-1])
    tmp = Path(tempfile.mkdtemp(prefix="crash-"))
    if args.postgres:
        from benchmarks.submit_load import drop_pg, fresh_pg

        url = fresh_pg()
    else:
        url = f"sqlite:///{tmp / 'broker.db'}"
    try:
        migrate.upgrade(url)
        clusters = _live.alpha_only(clusters_file, tmp / "clusters.toml")
        verdict, figures = run_crash_scenario(
            url,
            clusters,
            tmp,
            args.jobs,
            seed=args.seed,
            clients=args.clients,
            pace_s=args.pace,
            log=True,
        )
    finally:
        if args.postgres:
            drop_pg(url)
    print()
    for k, v in figures.items():
        print(f"{k:<28}{v}")
    print(f"{'accepted (202 seen)':<28}{verdict.accepted}")
    print(f"{'jobs in the database':<28}{verdict.in_db}")
    print(f"{'lost':<28}{len(verdict.lost)}")
    print(f"{'submitted twice':<28}{len(verdict.submitted_twice)}")
    print(f"{'never reached Slurm':<28}{len(verdict.never_reached_scheduler)}")
    print(f"{'wrong scheduler id':<28}{len(verdict.wrong_scheduler_id)}")
    print(f"{'charged twice':<28}{len(verdict.charged_twice)}")
    print(f"{'terminal but unsettled':<28}{len(verdict.unsettled)}")
    print(f"{'ledger invariant problems':<28}{len(verdict.ledger_problems)}")
    print(f"{'final states':<28}{dict(verdict.states)}")
    print("verdict:", "OK" if verdict.ok() else f"FAILED {verdict}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if verdict.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
