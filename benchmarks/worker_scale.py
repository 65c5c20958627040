"""The worker with 10,000 live jobs on 10 clusters: CPU per poll pass, requests per
minute per controller, beside today's poll-every-pass design. One run.

Each cluster is a simulated Slurm controller: ``status`` answers as 22.05's
``squeue --json`` does (every job of the controller, recorded field shapes, parsed by
the adapters' own ``parse_jobs``) after a controller's latency (``--latency-ms`` plus
``--per-job-us`` per job in the answer), and counts its requests. The broker's database
(SQLite by default, ``--db postgresql+psycopg://...``) holds the live jobs.

Printed: the machine, then CPU seconds (this process: parsing, the database, Python)
and wall seconds of one poll pass with nothing changed and with 1% of the jobs changed;
then requests per minute per cluster over a quiet run, with the worker's back-off and
with it off (today's design: a full squeue per cluster every pass), in a scaled run
(``--scale``: intervals divided by it, counts multiplied back).

    .venv/bin/python benchmarks/worker_scale.py [--clusters 10 --jobs 1000]

``--live N`` measures instead on the dev cluster alpha (slurm-cli): N broker jobs queued
there (``sleep``, one node: one runs, the rest pend), then slurmctld's RPCs per minute
from ``sdiag`` over ``--live-s`` seconds of worker passes each way: polling every pass
(today) and with the back-off. Every job is cancelled afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

import scheduler_adapters as sa_  # noqa: E402
from broker import migrate  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.db import make_engine, make_session_factory, session_scope  # noqa: E402
from broker.models import Job, JobStatus  # noqa: E402
from broker.services import ledger, projects, tenants  # noqa: E402
from broker.services.principal import SYSTEM  # noqa: E402
from broker.worker import PassStats, Worker  # noqa: E402
from scheduler_adapters.slurm.parse import parse_jobs  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class SimulatedSlurm(sa_.SchedulerAdapter):
    """A controller holding ``jobs`` (id -> state word), answering like squeue --json."""

    kind = "simulated"

    def __init__(self, cluster: str, ids: Sequence[str], latency_s: float, per_job_s: float):
        super().__init__(cluster)
        self.states = dict.fromkeys(ids, "RUNNING")
        self.latency_s, self.per_job_s = latency_s, per_job_s
        self.requests = 0
        self.start = int(time.time()) - 60
        self.answer = ""
        self.changed()

    def changed(self) -> None:
        """The controller's next answer (its own work, not the broker's: made here)."""
        self.answer = json.dumps(self._doc())

    def _doc(self) -> dict[str, Any]:
        return {
            "meta": {"Slurm": {"release": "22.05.8"}, "plugin": {"type": "openapi/v0.0.38"}},
            "errors": [],
            "jobs": [
                {
                    "job_id": int(job_id),
                    "array_job_id": 0,
                    "array_task_id": None,
                    "array_task_string": "",
                    "job_state": state,
                    "state_reason": "None",
                    "nodes": f"{self.cluster}-n{int(job_id) % 64:02d}",
                    "start_time": self.start,
                    "end_time": self.start + 3600,
                    "submit_time": self.start - 5,
                    "exit_code": 0,
                    "restart_cnt": 0,
                    "comment": f"broker:{job_id}",
                    "name": "job",
                    "account": "acct",
                    "partition": "batch",
                    "user_name": "user",
                }
                for job_id, state in self.states.items()
            ],
        }

    def status(self, job_ids: Sequence[str]) -> dict[str, sa_.JobInfo]:
        self.requests += 1
        self._count("squeue")
        time.sleep(self.latency_s + self.per_job_s * len(self.states))
        found = parse_jobs(json.loads(self.answer))  # what the adapter does with squeue's
        return {j: found[j] for j in job_ids if j in found}

    def submit(self, spec: sa_.JobSpec) -> str:
        raise sa_.SchedulerError("not in this benchmark", cluster=self.cluster)

    def cancel(self, job_id: str) -> None:
        pass

    def ping(self) -> sa_.ClusterInfo:
        return sa_.ClusterInfo(self.cluster, "22.05.8")

    def nodes(self) -> list[sa_.NodeInfo]:
        return []

    def list_tagged(self, since: datetime) -> dict[str, sa_.JobInfo]:
        return {}


class Pool:
    def __init__(self, adapters: dict[str, SimulatedSlurm]) -> None:
        self.adapters = adapters

    def get(self, cluster: str) -> SimulatedSlurm:
        return self.adapters[cluster]

    def close(self) -> None:
        pass


def populate(url: str, clusters: int, per_cluster: int) -> dict[str, list[str]]:
    factory = make_session_factory(make_engine(url))
    with session_scope(factory) as s:
        ent = tenants.create_enterprise(s, SYSTEM, name="Scale", posix_user="scale")
        ledger.grant(s, SYSTEM, ent.id, 10**15, "bench")
        proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="scale")
        projects.approve_project(s, SYSTEM, proj.id)
        ent_id, proj_id = ent.id, proj.id
    ids: dict[str, list[str]] = {}
    now = datetime.now(UTC)
    next_id = 1000
    for c in range(clusters):
        name = f"sim{c:02d}"
        rows = []
        ids[name] = []
        for _ in range(per_cluster):
            next_id += 1
            ids[name].append(str(next_id))
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "enterprise_id": ent_id,
                    "project_id": proj_id,
                    "name": "job",
                    "script": "#!/bin/bash\ntrue\n",
                    "nodes": 1,
                    "time_limit_minutes": 120,
                    "cluster": name,
                    "partition": "batch",
                    "state": JobStatus.RUNNING,
                    "native_state": "RUNNING",
                    "reason": "",
                    "scheduler_job_id": str(next_id),
                    "node_list": [f"{name}-n{next_id % 64:02d}"],
                    "started_at": datetime.fromtimestamp(int(time.time()) - 60, UTC),
                    "submitted_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        with session_scope(factory) as s:
            s.execute(insert(Job), rows)
    return ids


def timed_pass(worker: Worker) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    worker.poll(PassStats())
    return time.process_time() - cpu0, time.perf_counter() - wall0


def sdiag_rpcs(env: dict[str, str]) -> dict[str, int]:
    """slurmctld's RPC counts by message type since the last ``sdiag --reset``."""
    out = subprocess.run(["sdiag"], env=env, capture_output=True, text=True, check=True).stdout
    section = out.split("Remote Procedure Call statistics by message type", 1)[1]
    section = section.split("Remote Procedure Call statistics by user", 1)[0]
    counts = {}
    for line in section.splitlines():
        m = re.match(r"\s*(\w+)\s*\(\s*\d+\)\s*count:(\d+)", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def live(n: int, seconds: float) -> None:
    """``--live``: N queued broker jobs on alpha, slurmctld RPCs/min before and after."""
    from broker.models import Role
    from broker.schemas.jobs import JobCreate
    from broker.services import clusters, jobs, slurm_sync
    from broker.services.principal import Principal
    from tests._slurm import ensure_posix_user, load_clusters

    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy/slurm/devcluster"), "up", "--two"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    conf = load_clusters(path)["alpha"]["options"]["slurm_conf"]
    env = {**os.environ, "SLURM_CONF": conf}
    user = "brokerscale"
    ensure_posix_user(user)
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'live.db'}"
    migrate.upgrade(url)
    settings = Settings(
        database_url=url, clusters_file=path, data_dir=tmp, worker_enabled=False,
        submit_batch=n,
    )  # fmt: skip
    configs = settings.load_clusters()
    factory = make_session_factory(make_engine(url))
    with session_scope(factory) as s:
        clusters.sync_config(s, configs)
        ent = tenants.create_enterprise(
            s, SYSTEM, name="Scale live", posix_user=user, slurm_account="e_scale"
        )
        ledger.grant(s, SYSTEM, ent.id, 10**15, "bench")
        proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="scale")
        projects.approve_project(s, SYSTEM, proj.id)
        slurm_sync.sync(s, configs, dry_run=False, only="alpha")
        ent_id, proj_id = ent.id, proj.id
    member = Principal(None, "m", Role.MEMBER, ent_id)
    with session_scope(factory) as s:
        for _ in range(n):
            req = JobCreate(name="pend", script="sleep 900", time_limit_minutes=20, cluster="alpha")
            jobs.submit(s, member, proj_id, req, idempotency_key=None, max_script_bytes=1000)
    pool = clusters.AdapterPool(configs)
    worker = Worker(settings, factory, pool)
    try:
        while True:
            stats = PassStats()
            worker.submit_due(stats)
            if not stats.submitted:
                break
        # Held in Slurm so that they wait without taking alpha's one node from anyone
        # else's jobs (live all the same: pending); the one that started is cancelled.
        listed = subprocess.run(
            ["squeue", "-h", "-u", user, "-o", "%i %T"], env=env, capture_output=True, text=True
        ).stdout.split("\n")
        pending = [ln.split()[0] for ln in listed if ln.endswith("PENDING")]
        started = [ln.split()[0] for ln in listed if ln.strip() and not ln.endswith("PENDING")]
        for i in range(0, len(pending), 100):
            subprocess.run(["scontrol", "hold", ",".join(pending[i : i + 100])], env=env)
        if started:
            subprocess.run(["scancel", *started], env=env)
        n = len(pending)
        version = worker.pool.get("alpha").ping().version
        print(f"live: {n} broker jobs in alpha's queue (Slurm {version})")
        rows = []
        for label, backoff in (("today: every pass", False), ("back-off (this design)", True)):
            worker.poll_backoff = backoff
            worker._poll_due.clear()
            worker._poll_gap.clear()
            subprocess.run(["sdiag", "--reset"], env=env, check=True, capture_output=True)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.monotonic()
                worker.run_once()
                time.sleep(max(0.0, settings.worker_interval_s - (time.monotonic() - started)))
            counts = sdiag_rpcs(env)
            rows.append((label, sum(counts.values()) * 60 / seconds, counts))
        print(f"{'slurmctld RPCs per minute (sdiag), ' + str(n) + ' live jobs':<50}{'per min':>10}")
        for label, per_min, counts in rows:
            top = ", ".join(
                f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3]
            )
            print(f"{label:<50}{per_min:>10.1f}   ({top})")
        print(f"ratio: {rows[0][1] / max(rows[1][1], 1e-9):.1f}x fewer RPCs")
    finally:
        subprocess.run(["scancel", "-u", user], env=env, check=False)
        pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=1000, help="live jobs per cluster")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--per-job-us", type=float, default=20.0)
    ap.add_argument("--db", default=None, help="database URL (default: a SQLite file)")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--quiet-s", type=float, default=12.0, help="length of the scaled run")
    ap.add_argument("--scale", type=float, default=10.0)
    ap.add_argument("--live", type=int, default=0, help="N live jobs on alpha (sdiag)")
    ap.add_argument("--live-s", type=float, default=60.0)
    args = ap.parse_args()
    if args.live:
        print(f"CPU: {cpu_model()} ({os.cpu_count()} logical), load {os.getloadavg()[0]:.1f}")
        live(args.live, args.live_s)
        return
    tmp = Path(tempfile.mkdtemp())
    url = args.db or f"sqlite:///{tmp / 'scale.db'}"
    migrate.upgrade(url)
    ids = populate(url, args.clusters, args.jobs)
    adapters = {
        name: SimulatedSlurm(name, job_ids, args.latency_ms / 1e3, args.per_job_us / 1e6)
        for name, job_ids in ids.items()
    }
    settings = Settings(database_url=url, data_dir=tmp, worker_enabled=False)
    factory = make_session_factory(make_engine(url))
    worker = Worker(settings, factory, Pool(adapters))  # type: ignore[arg-type]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical), load {os.getloadavg()[0]:.1f}")
    print(f"database: {url.split(':', 1)[0]}; {args.clusters} clusters x {args.jobs} live jobs")
    timed_pass(worker)  # warm: compiled queries, first parse
    quiet = [timed_pass(worker) for _ in range(args.passes)]
    busy = []
    for p in range(args.passes):
        for adapter in adapters.values():  # 1% of the jobs change state this pass
            for i, job_id in enumerate(adapter.states):
                if i % 100 == p:
                    adapter.states[job_id] = "SUSPENDED" if p % 2 == 0 else "RUNNING"
            adapter.changed()
        busy.append(timed_pass(worker))
    print(f"{'one poll pass':<34}{'CPU s (median)':>16}{'wall s (median)':>17}")
    for label, runs in (("nothing changed", quiet), ("1% of the jobs changed", busy)):
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{label:<34}{cpu:>16.3f}{wall:>17.3f}")
    print("target: CPU <= 1 s per pass with 10,000 live jobs")
    # Requests per minute per cluster over a quiet stretch, in a run scaled in time:
    # intervals divided by --scale, the controller answering at once, counts per real minute.
    for adapter in adapters.values():
        adapter.latency_s = adapter.per_job_s = 0.0
        adapter.requests = 0
    scaled = Settings(
        database_url=url,
        data_dir=tmp,
        worker_enabled=False,
        worker_interval_s=settings.worker_interval_s / args.scale,
        poll_max_interval_s=settings.poll_max_interval_s / args.scale,
    )
    w = Worker(scaled, factory, Pool(adapters))  # type: ignore[arg-type]
    w.poll_backoff = True
    end = time.monotonic() + args.quiet_s
    passes = 0
    while time.monotonic() < end:
        started = time.monotonic()
        w.poll(PassStats())
        passes += 1
        time.sleep(max(0.0, scaled.worker_interval_s - (time.monotonic() - started)))
    minutes = args.quiet_s * args.scale / 60
    ours = statistics.median(a.requests for a in adapters.values()) / minutes
    today = 60 / settings.worker_interval_s  # one full squeue per cluster every pass
    print(f"{'squeue requests per minute per cluster, quiet':<50}{'per min':>10}")
    print(f"{'today: a full squeue every pass (1 s passes)':<50}{today:>10.1f}")
    label = f"back-off to {settings.poll_max_interval_s:g} s (this design)"
    print(f"{label:<50}{ours:>10.1f}")
    print(
        f"ratio: {today / max(ours, 1e-9):.1f}x fewer requests "
        f"(measured over {passes} passes of a run scaled x{args.scale:g})"
    )


if __name__ == "__main__":
    main()
