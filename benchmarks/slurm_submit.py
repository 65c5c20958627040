"""Accepted → scheduler-id jobs/s through the broker, beside a raw sbatch loop, one run.

Brings up the dev clusters (deploy/slurm/devcluster up --two), accepts N jobs per
cluster through the broker's submit service, then times the worker turning them into
scheduler jobs (alpha: slurm-cli, beta: slurmrestd). The same N jobs submitted by a
plain `sbatch --parsable` loop as the same POSIX user give the baseline. Every job is
cancelled afterwards so the clusters are left idle.

    .venv/bin/python benchmarks/slurm_submit.py [-n 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker import migrate  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.db import make_engine, make_session_factory, session_scope  # noqa: E402
from broker.models import Job, JobStatus, Role  # noqa: E402
from broker.schemas.jobs import JobCreate  # noqa: E402
from broker.services import clusters, jobs, ledger, projects, slurm_sync, tenants  # noqa: E402
from broker.services.principal import SYSTEM, Principal  # noqa: E402
from broker.worker import PassStats, Worker  # noqa: E402
from tests._slurm import ensure_posix_user, load_clusters  # noqa: E402

USER, ACCOUNT = "brokerbench", "e_bench"


def cluster_file() -> Path:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy/slurm/devcluster"), "up", "--two"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def scancel_all(conf: str) -> None:
    subprocess.run(["scancel", "-u", USER], env={**os.environ, "SLURM_CONF": conf}, check=False)


def raw_sbatch(conf: str, partition: str, account: str, workdir: Path, n: int) -> float:
    """A plain shell loop of ``sbatch --parsable`` run as the user: the fastest one
    submitter can go (one shell for the loop; no Python between the calls)."""
    argv = [
        "sbatch",
        "--parsable",
        f"--partition={partition}",
        f"--account={account}",
        "--time=1",
        f"--chdir={workdir}",
        "--output=/dev/null",
        "--wrap=true",
    ]
    loop = f"for i in $(seq {n}); do {shlex.join(argv)} >/dev/null || exit 1; done"
    t0 = time.perf_counter()
    subprocess.run(
        ["setpriv", *as_user(USER), "bash", "-c", loop],
        env={"PATH": "/usr/bin:/bin", "SLURM_CONF": conf},
        cwd=workdir,
        check=True,
    )
    return n / (time.perf_counter() - t0)


RUN = Path("/var/lib/hpc-broker-dev/run")


def daemon_cpu(pid_file: Path) -> float:
    """CPU seconds a daemon has used (0 if it is not there)."""
    try:
        pid = pid_file.read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_cpu(pgrep: list[str], *, children: bool = False) -> float:
    """CPU seconds of the processes ``pgrep`` finds (with ``children``: and of the
    children they have waited for)."""
    out = subprocess.run(["pgrep", *pgrep], capture_output=True, text=True).stdout
    total = 0.0
    for pid in out.split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        if children:
            ticks += int(fields[13]) + int(fields[14])
        total += ticks / os.sysconf("SC_CLK_TCK")
    return total


class CpuMeter:
    """CPU seconds per part over a run: this process (the worker), the tools it ran
    (its waited children: the raw loop's shell and sbatch; and the slurm-cli adapter's
    helpers that run sbatch as the user, with their sbatch), the cluster's slurmctld
    and slurmrestd, and munge."""

    def __init__(self, cluster: str) -> None:
        self.files = {
            "slurmctld": RUN / f"{cluster}-slurmctld.pid",
            "slurmrestd": RUN / f"{cluster}-slurmrestd.pid",
        }
        self.start = self.read()

    def read(self) -> dict[str, float]:
        t = os.times()
        return {
            "worker": t.user + t.system,
            "tools": t.children_user
            + t.children_system
            + processes_cpu(["-f", "_runas_helper.py"], children=True),
            **{name: daemon_cpu(f) for name, f in self.files.items()},
            "munged": processes_cpu(["-x", "munged"]),
        }

    def per_job_ms(self, n: int) -> dict[str, float]:
        end = self.read()
        return {k: (end[k] - self.start[k]) / n * 1e3 for k in end}


def as_user(name: str) -> list[str]:
    pw = pwd.getpwnam(name)
    groups = ",".join(map(str, os.getgrouplist(name, pw.pw_gid)))
    return [f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", f"--groups={groups}", "--"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-n", type=int, default=100, help="jobs a run")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each, interleaved")
    ap.add_argument(
        "--clusters", default="alpha,beta", help="which of alpha (slurm-cli), beta (slurmrestd)"
    )
    args = ap.parse_args()
    path = cluster_file()
    info = load_clusters(path)
    ensure_posix_user(USER)
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'bench.db'}"
    migrate.upgrade(url)
    settings = Settings(
        database_url=url,
        clusters_file=path,
        data_dir=tmp,
        worker_enabled=False,
        submit_batch=10_000,
    )
    configs = settings.load_clusters()
    factory = make_session_factory(make_engine(url))
    with session_scope(factory) as s:
        clusters.sync_config(s, configs)
        ent = tenants.create_enterprise(
            s, SYSTEM, name="Bench", posix_user=USER, slurm_account=ACCOUNT
        )
        ledger.grant(s, SYSTEM, ent.id, 10**18, "bench")
        proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="bench")
        projects.approve_project(s, SYSTEM, proj.id)
        slurm_sync.sync(s, configs, dry_run=False)
        account = slurm_sync.project_account(ent, proj)
        ent_id, proj_id = ent.id, proj.id
    member = Principal(None, "m", Role.MEMBER, ent_id)
    pool = clusters.AdapterPool(configs)
    worker = Worker(settings, factory, pool)
    worker.refresh_clusters()

    def broker_run(name: str) -> tuple[float, dict[str, float]]:
        """Accept n jobs, then time (and meter) the worker turning them into scheduler
        jobs."""
        with session_scope(factory) as s:
            for _ in range(args.n):
                req = JobCreate(
                    name="b", script="true", nodes=1, time_limit_minutes=1, cluster=name
                )
                jobs.submit(s, member, proj_id, req, idempotency_key=None, max_script_bytes=1000)
        meter = CpuMeter(name)
        t0 = time.perf_counter()
        while True:
            worker.submit_due(PassStats())
            with session_scope(factory) as s:
                left = (
                    s.query(Job)
                    .filter(Job.cluster == name, Job.state == JobStatus.ACCEPTED)
                    .count()
                )
            if left == 0:
                return args.n / (time.perf_counter() - t0), meter.per_job_ms(args.n)

    print(cpu_model(), f"({os.cpu_count()} CPUs)")
    print(
        f"{args.n} jobs a run, {args.repeat} runs of each, interleaved (broker, raw, broker,"
        f" ...); broker: {settings.submit_concurrency} submitters per cluster"
    )
    rows = []
    for name in args.clusters.split(","):
        conf = info[name]["options"]["slurm_conf"]
        part = info[name]["partitions"][0]["name"]
        workdir = Path(info[name]["scratch_dir"]) / "bench"
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.chown(workdir, USER)
        broker_rates, raw_rates = [], []
        cpu: dict[str, list[dict[str, float]]] = {"broker": [], "raw": []}
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            rate, used = broker_run(name)
            broker_rates.append(rate)
            cpu["broker"].append(used)
            scancel_all(conf)
            meter = CpuMeter(name)
            raw_rates.append(raw_sbatch(conf, part, account, workdir, args.n))
            cpu["raw"].append(meter.per_job_ms(args.n))
            scancel_all(conf)
            print(
                f"  {name}: broker {broker_rates[-1]:.1f}/s, raw {raw_rates[-1]:.1f}/s"
                f" (load {load:.1f})",
                flush=True,
            )
        for method, runs in cpu.items():
            parts = ", ".join(
                f"{part} {statistics.median(r[part] for r in runs):.2f}"
                for part in runs[0]
                if method == "broker" or part != "worker"
            )
            print(f"  {name}: {method} CPU ms per job (medians): {parts}")
        ratios = [b / r for b, r in zip(broker_rates, raw_rates, strict=True)]
        rows.append(
            (
                name,
                info[name]["adapter"],
                statistics.median(broker_rates),
                statistics.median(raw_rates),
                statistics.median(ratios),
            )
        )
    pool.close()
    print(
        f"{'cluster':<8}{'adapter':<12}{'broker jobs/s':>14}{'raw sbatch jobs/s':>19}"
        f"{'median ratio':>14}"
    )
    for name, adapter, b, r, ratio in rows:
        print(f"{name:<8}{adapter:<12}{b:>14.1f}{r:>19.1f}{ratio:>14.2f}")
    print("medians; a ratio is a broker run over the raw run right after it; target >= 1.5")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
