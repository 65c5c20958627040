"""Accepted submissions per second with the quota hold, and their latency.

Starts `brokerctl api --workers N` (worker off, so every accepted job keeps its hold)
on a fresh PostgreSQL database (and optionally SQLite), creates tenants with ample
quota, then runs closed-loop clients that each submit jobs back to back for a fixed
time. Prints, side by side per backend and process count: accepted/s, p50, p90, p99
and max latency. Then offers submissions open loop at a fixed rate (half the peak,
and half of 3x slurmrestd's) to read the p99 there. Optionally measures slurmrestd's
own submit rate in the same run (--slurmrestd CLUSTERS_FILE).

    .venv/bin/python benchmarks/submit_load.py [--seconds 10] [--clients 8 32]
        [--api-workers 1 2] [--slurmrestd /var/lib/hpc-broker-dev/clusters.toml]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker import migrate  # noqa: E402
from broker.db import make_engine, make_session_factory, session_scope  # noqa: E402
from broker.models import Role  # noqa: E402
from broker.services import ledger, projects, tenants, tokens  # noqa: E402
from broker.services.principal import SYSTEM  # noqa: E402
from tests.servers import brokerctl_server, clean_env  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CLUSTERS = """
[[clusters]]
name = "local"
adapter = "local"
scratch_dir = "{root}/scratch"
[clusters.options]
root_dir = "{root}/sched"
[[clusters.partitions]]
name = "default"
nodes = 4
cpus_per_node = 2
max_time_minutes = 60
rate_tflops = 1.0
"""


def fresh_pg() -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg(url: str) -> None:
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def make_tenants(url: str, n: int) -> list[tuple[str, str]]:
    """n enterprises, each with a project and a member token; returns (project, token)."""
    migrate.upgrade(url)
    engine = make_engine(url)
    out = []
    with session_scope(make_session_factory(engine)) as s:
        for i in range(n):
            ent = tenants.create_enterprise(s, SYSTEM, name=f"bench-{i}")
            ledger.grant(s, SYSTEM, ent.id, 10**18, "bench")
            proj = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="p")
            projects.approve_project(s, SYSTEM, proj.id)
            _, tok = tokens.create_token(
                s, SYSTEM, name="m", role=Role.MEMBER, enterprise_id=ent.id
            )
            out.append((str(proj.id), tok))
    engine.dispose()
    return out


def summary(latencies: list[float], wall: float, errors: int) -> dict[str, float]:
    """Accepted/s over ``wall`` and latency percentiles in ms."""
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "accepted_per_s": len(lat) / wall,
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "accepted": len(lat),
        "errors": errors,
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
    }


def run_clients(
    base: str, tenants_: list[tuple[str, str]], clients: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    body = {"name": "bench", "script": "true", "nodes": 1, "time_limit_minutes": 1}

    def client(i: int) -> None:
        nonlocal errors
        project, token = tenants_[i % len(tenants_)]
        mine: list[float] = []
        bad = 0
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = c.post(f"/projects/{project}/jobs", json=body)
                dt = time.perf_counter() - t0
                if r.status_code == 202:
                    mine.append(dt)
                else:
                    bad += 1
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - t0, errors)


def slurmrestd_rate(
    clusters_file: Path, user: str, account: str, clients: int, seconds: float
) -> dict[str, float]:
    """Closed-loop job submits to beta's slurmrestd (v0.0.38; jobs held, then cancelled)."""
    import tomllib

    from scheduler_adapters.slurm.rest import mint_token

    beta = next(
        c for c in tomllib.loads(clusters_file.read_text())["clusters"] if c["name"] == "beta"
    )
    opts = beta["options"]
    token = mint_token(Path(opts["jwt_key_file"]).read_bytes(), "slurm", 3600)
    headers = {"X-SLURM-USER-TOKEN": token, "X-SLURM-USER-NAME": user}
    body = {
        "script": "#!/bin/bash\ntrue\n",
        "job": {
            "name": "bench",
            "account": account,
            "partition": beta["partitions"][0]["name"],
            "time_limit": 1,
            "tasks": 1,
            "hold": True,
            "current_working_directory": "/tmp",
            "environment": {"PATH": "/usr/bin:/bin"},
        },
    }
    latencies: list[float] = []
    ids: list[int] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        with httpx.Client(base_url=opts["url"], headers=headers, timeout=30) as c:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = c.post("/slurm/v0.0.38/job/submit", json=body)
                dt = time.perf_counter() - t0
                if r.status_code == 200 and r.json().get("job_id"):
                    with lock:
                        latencies.append(dt)
                        ids.append(int(r.json()["job_id"]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    with httpx.Client(base_url=opts["url"], headers=headers, timeout=30) as c:
        for job_id in ids:
            c.delete(f"/slurm/v0.0.38/job/{job_id}")
    return summary(latencies, wall, 0)


def run_paced(
    base: str, tenants_: list[tuple[str, str]], rate: float, seconds: float
) -> dict[str, float]:
    """Open loop: submissions offered at ``rate``/s on a fixed schedule.

    Latency counts from each request's scheduled time, so a server that falls behind
    shows its queueing (no coordinated omission). An overloaded server is offered no
    more after ``seconds`` + 10 s; what it took by then is what it did.
    """
    total = max(1, int(rate * seconds))
    body = {"name": "paced", "script": "true", "nodes": 1, "time_limit_minutes": 1}
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    next_slot = iter(range(total))
    senders = 64
    start: list[float] = []
    # The clock starts once every client is built (TLS contexts cost ms each), with a
    # margin so that the first slots are not already overdue: no start-up burst.
    ready = threading.Barrier(senders, action=lambda: start.append(time.perf_counter() + 0.2))

    def sender(i: int) -> None:
        nonlocal errors
        project, token = tenants_[i % len(tenants_)]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
            ready.wait()
            t0 = start[0]
            while True:
                with lock:
                    k = next(next_slot, None)
                if k is None:
                    return
                due = t0 + k / rate
                now = time.perf_counter()
                if now - t0 > seconds + 10:
                    return
                time.sleep(max(0.0, due - now))
                r = c.post(f"/projects/{project}/jobs", json=body)
                dt = time.perf_counter() - due
                with lock:
                    if r.status_code == 202:
                        latencies.append(dt)
                    else:
                        errors += 1

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - start[0], errors)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--tenants", type=int, default=8)
    ap.add_argument(
        "--api-workers", type=int, nargs="+", default=[1, 2], help="`brokerctl api --workers`"
    )
    ap.add_argument(
        "--sqlite", action="store_true", help="also measure the embedded SQLite default"
    )
    ap.add_argument(
        "--slurmrestd",
        type=Path,
        metavar="CLUSTERS_FILE",
        help="also measure beta's slurmrestd submit rate (dev clusters file)",
    )
    ap.add_argument("--slurm-user", default="brokertest", help="POSIX user with an association")
    ap.add_argument("--slurm-account", default="broker-tests")
    args = ap.parse_args()
    rows: list[tuple[str, str, dict[str, float]]] = []
    rest: dict[int, float] = {}
    if args.slurmrestd:  # first: the broker's paced run needs its rate
        for n in args.clients:
            r = slurmrestd_rate(
                args.slurmrestd, args.slurm_user, args.slurm_account, n, args.seconds
            )
            rest[n] = r["accepted_per_s"]
            rows.append(("slurmrestd", f"{n} clients", r))
    peak: dict[str, float] = {}
    backends = ["postgresql"] + (["sqlite"] if args.sqlite else [])
    for backend in backends:
        for workers in args.api_workers if backend == "postgresql" else [1]:
            label = f"{'pg' if backend == 'postgresql' else backend} api x{workers}"
            tmp = Path(tempfile.mkdtemp())
            url = fresh_pg() if backend == "postgresql" else f"sqlite:///{tmp / 'b.db'}"
            try:
                ts = make_tenants(url, args.tenants)
                (tmp / "clusters.toml").write_text(CLUSTERS.format(root=tmp))
                env = clean_env(
                    BROKER_DATABASE_URL=url,
                    BROKER_CLUSTERS_FILE=str(tmp / "clusters.toml"),
                    BROKER_RATE_LIMIT_PER_MINUTE="0",
                )
                server = brokerctl_server("api", tmp, env, args=("--workers", str(workers)))
                with server as base:
                    run_clients(base, ts, 4, 1.0)  # warm-up
                    for n in args.clients:
                        r = run_clients(base, ts, n, args.seconds)
                        rows.append((label, f"{n} clients", r))
                        peak[label] = max(peak.get(label, 0.0), r["accepted_per_s"])
                    paced = [peak[label] / 2]
                    if rest:
                        paced.append(1.5 * max(rest.values()))  # half of 3x slurmrestd
                    for rate in paced:
                        paced_run = run_paced(base, ts, rate, args.seconds)
                        rows.append((label, f"{rate:.0f}/s paced", paced_run))
            finally:
                if backend == "postgresql":
                    drop_pg(url)
    print(
        f"{'server':<14}{'load':>15}{'accepted/s':>12}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
    )
    for label, load, r in rows:
        print(
            f"{label:<14}{load:>15}{r['accepted_per_s']:>12.1f}{r['p50_ms']:>9.1f}"
            f"{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{r.get('errors', 0):>8}"
        )
    if rest:
        best_rest = max(rest.values())
        for label, value in peak.items():
            print(f"{label} peak / slurmrestd peak: {value / best_rest:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
