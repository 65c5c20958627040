"""Scheduler outage: stop alpha's slurmctld for 60 s under load, print the drain time.

Runs the scenario of ``tests/reliability/test_scheduler_outage.py`` with a longer outage:
`brokerctl serve` accepts jobs for alpha while its slurmctld is down, then the backlog
drains after slurmctld is started again (always, even on error). Prints how many jobs
were accepted during the outage, the seconds from recovery until every job reached
Slurm, and the end-of-run audit (lost, submitted twice, charged twice, ledger).
Needs root and the dev clusters (`deploy/slurm/devcluster up --two`).

    .venv/bin/python benchmarks/outage_slurmctld.py [--outage 60] [--jobs 120]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker import migrate  # noqa: E402
from tests.reliability import _live  # noqa: E402
from tests.reliability.test_scheduler_outage import run_outage_scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=120)
    args = ap.parse_args()
    up = subprocess.run(
        [sys.executable, str(ROOT / "deploy/slurm/devcluster"), "up", "--two"],
        capture_output=True,
        text=True,
        check=True,
    )
    clusters_file = Path(up.stdout.strip().splitlines()[-1])
    tmp = Path(tempfile.mkdtemp(prefix="outage-"))
    url = f"sqlite:///{tmp / 'broker.db'}"
    migrate.upgrade(url)
    clusters = _live.alpha_only(clusters_file, tmp / "clusters.toml")
    verdict, figures = run_outage_scenario(url, clusters, tmp, outage_s=args.outage, jobs=args.jobs)
    for k, v in figures.items():
        print(f"{k:<30}{v}")
    print(f"{'lost':<30}{len(verdict.lost)}")
    print(f"{'submitted twice':<30}{len(verdict.submitted_twice)}")
    print(f"{'charged twice':<30}{len(verdict.charged_twice)}")
    print(f"{'ledger invariant problems':<30}{len(verdict.ledger_problems)}")
    print(f"{'final states':<30}{dict(verdict.states)}")
    ok = verdict.ok() and figures["drain_after_recovery_s"] <= 30
    print("verdict:", "OK" if ok else f"FAILED {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
