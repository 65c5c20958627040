"""Dashboard page timings on PostgreSQL with 100 enterprises and 100k jobs.

Creates its own database (dropped first if it exists), migrates it, bulk-loads a
consistent center with COPY (enterprises, projects, balances that equal their ledger
entries, 90 days of jobs with their HOLD, RELEASE and CHARGE entries and a charge line
per node, 256 nodes with six validation campaigns and their rate versions), then
renders every dashboard page in-process as a logged-in operator and prints the median
of several renders of each, with the slowest.

    python benchmarks/dashboard.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
        [--enterprises 100] [--jobs 100000] [--repeat 7] [--keep]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from sqlalchemy import text

from broker import migrate
from broker.app import create_app
from broker.config import Settings
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import LIVE_STATES, Cluster, JobStatus, Role
from broker.services import clusters, tokens
from broker.services.principal import SYSTEM
from broker.units import CHARGE, HOLD, UNITS_PER_PFH, work_units

RATE_MFLOPS = 50_000  # the built-in local cluster's rated 0.05 TFLOP/s
STATES = [  # (state, weight): most jobs are history, a few are live
    (JobStatus.COMPLETED, 85), (JobStatus.FAILED, 5), (JobStatus.CANCELLED, 3),
    (JobStatus.TIMEOUT, 1), (JobStatus.RUNNING, 3), (JobStatus.PENDING, 2),
    (JobStatus.ACCEPTED, 1),
]  # fmt: skip


def _db_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def recreate(admin_url: str, name: str) -> str:
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = _db_url(admin_url, name)
    migrate.upgrade(url)
    return url


def _copy(cur: Any, table: str, cols: list[str], rows: list[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def fill(url: str, n_ent: int, n_jobs: int, seed: int = 7) -> dict[str, Any]:
    """Bulk-load a consistent center; returns ids worth timing pages for."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as s:
        clusters.sync_config(s, Settings(database_url=url).load_clusters())
    with engine.begin() as conn:
        cluster_id = conn.execute(text("SELECT id FROM cluster WHERE name = 'local'")).scalar()
    ents = [uuid.uuid4() for _ in range(n_ent)]
    projects = {e: [uuid.uuid4() for _ in range(5)] for e in ents}
    weights = [rnd.paretovariate(1.2) for _ in ents]  # a few big tenants, a long tail
    jobs: list[dict[str, Any]] = []
    entries: list[tuple[Any, ...]] = []
    sums: dict[uuid.UUID | tuple[uuid.UUID, uuid.UUID], list[int]] = {}
    states, sw = [s for s, _ in STATES], [w for _, w in STATES]
    for i in range(n_jobs):
        ent = rnd.choices(ents, weights)[0]
        proj = rnd.choice(projects[ent])
        state = rnd.choices(states, sw)[0]
        created = now - timedelta(seconds=rnd.uniform(0, 90 * 86400))
        nodes, limit = rnd.randint(1, 8), rnd.choice([30, 60, 240, 720, 1440])
        hold = work_units(RATE_MFLOPS, limit * 60, nodes, rounding=HOLD)
        job_id, live = uuid.uuid4(), state in LIVE_STATES or state is JobStatus.ACCEPTED
        started = None if state in (JobStatus.ACCEPTED, JobStatus.PENDING) else created
        elapsed = None if live else rnd.randint(60, limit * 60)
        ended = None if elapsed is None else created + timedelta(seconds=elapsed)
        charge = (
            None if elapsed is None else work_units(RATE_MFLOPS, elapsed, nodes, rounding=CHARGE)
        )
        if live and created < now - timedelta(days=1):  # live jobs are recent
            created = now - timedelta(seconds=rnd.uniform(0, 86400))
            started = None if started is None else created
        jobs.append(
            {
                "id": job_id, "enterprise_id": ent, "project_id": proj,
                "submitted_by": "member:bench", "idempotency_key": None, "request_hash": "",
                "name": f"job-{i}", "script": "#!/bin/bash\nsrun ./solver\n", "nodes": nodes,
                "time_limit_minutes": limit, "cluster": "local", "partition": "default",
                "routing": Jsonb({}), "state": state.value, "reason": "",
                "scheduler_job_id": None if started is None else str(10_000_000 + i),
                "node_list": Jsonb([f"local{n % 2 + 1}" for n in range(nodes)]),
                "work_dir": "", "stdout_path": "", "stderr_path": "",
                "rate_mflops": RATE_MFLOPS, "hold_units": hold, "charge_units": charge,
                "elapsed_s": elapsed, "submit_attempts": 1, "cancel_requested": False,
                "created_at": created, "updated_at": ended or created, "submitted_at": created,
                "started_at": started, "ended_at": ended, "settled_at": ended,
            }
        )  # fmt: skip
        entries.append((ent, proj, job_id, "HOLD", hold, created))
        e_sum = sums.setdefault(ent, [0, 0, 0])
        p_sum = sums.setdefault((ent, proj), [0, 0, 0])
        if charge is None:
            e_sum[1] += hold
            p_sum[1] += hold
        else:
            entries.append((ent, proj, job_id, "RELEASE", hold, ended))
            entries.append((ent, proj, job_id, "CHARGE", charge, ended))
            e_sum[2] += charge
            p_sum[2] += charge
    grants = []
    for ent in ents:
        g = sums.setdefault(ent, [0, 0, 0])
        g[0] = int((g[1] + g[2]) / rnd.uniform(0.35, 0.97)) + UNITS_PER_PFH
        parts = [int(g[0] * 0.4), int(g[0] * 0.3)]
        for k, amount in enumerate([*parts, g[0] - sum(parts)]):  # one grant a month
            at = (month - timedelta(days=62 - 31 * k)).replace(day=1)
            grants.append((ent, None, None, "GRANT", amount, at))
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        _copy(cur, "enterprise", ["id", "name", "posix_user", "slurm_account", "status",
              "capacity_cap_mflops", "period_kind", "carry_over", "current_period", "created_at"],
              [(e, f"Enterprise {i:03d}", f"hcb_e{i:03d}", f"e_{i:03d}", "active",
                None if i % 4 else 400_000 * (1 + i % 3), "month", True, f"{now:%Y-%m}",
                month - timedelta(days=70)) for i, e in enumerate(ents)])  # fmt: skip
        _copy(cur, "project", ["id", "enterprise_id", "name", "description", "status",
              "allocation_units", "created_at", "approved_at"],
              [(p, e, f"project-{k}", "", "active" if k < 4 else "draft", None,
                month - timedelta(days=60), None) for e in ents
               for k, p in enumerate(projects[e])])  # fmt: skip
        _copy(cur, "balance", ["enterprise_id", "project_id", "granted_units", "held_units",
              "charged_units"],
              [(k, None, *v) if isinstance(k, uuid.UUID) else (k[0], k[1], 0, v[1], v[2])
               for k, v in sums.items()]
              + [(e, p, 0, 0, 0) for e in ents for p in projects[e]
                 if (e, p) not in sums])  # fmt: skip
        cols = list(jobs[0])
        _copy(cur, "job", cols, [tuple(j[c] for c in cols) for j in jobs])
        ledger = sorted(grants + entries, key=lambda r: r[5])
        _copy(cur, "ledger_entry", ["enterprise_id", "project_id", "job_id", "kind",
              "amount_units", "created_at", "period", "memo", "actor"],
              [(*row, "", "", "system") for row in ledger])  # fmt: skip
        # A fresh table: the entries' ids are their COPY order. One charge line per node.
        charge_ids = {row[2]: i + 1 for i, row in enumerate(ledger) if row[3] == "CHARGE"}
        _copy(cur, "charge_line", ["entry_id", "enterprise_id", "project_id", "job_id", "period",
              "cluster", "partition", "node", "node_seconds", "rate_mflops", "units", "memo",
              "created_at"],
              [(charge_ids[j["id"]], j["enterprise_id"], j["project_id"], j["id"],
                f"{j['ended_at']:%Y-%m}", "local", "default", f"c{(i * 7 + n) % 256:03d}",
                j["elapsed_s"], RATE_MFLOPS,
                work_units(RATE_MFLOPS, j["elapsed_s"], rounding=CHARGE), "", j["ended_at"])
               for i, j in enumerate(jobs) if j["charge_units"] is not None
               for n in range(j["nodes"])])  # fmt: skip
        nodes = [uuid.uuid4() for _ in range(256)]
        _copy(cur, "node", ["id", "cluster_id", "name", "cpus", "memory_mb", "gpus", "partitions",
              "state", "reason", "rate_mflops", "validation", "updated_at"],
              [(node_id, cluster_id, f"c{n:03d}", 64, 256_000, 0, Jsonb(["default"]),
                "drained" if n % 61 == 0 else "idle", "GEMM below reference" if n % 61 == 0 else "",
                None if n % 5 == 0 else rnd.randint(45_000, 52_000),
                "degraded" if n % 61 == 0 else ("unvalidated" if n % 5 == 0 else "validated"), now)
               for n, node_id in enumerate(nodes)])  # fmt: skip
        # Six monthly-ish validation campaigns on the validated and degraded nodes; each
        # passing run sets a rate version.
        runs, rates = [], []
        for c in range(6):
            at = now - timedelta(days=15 * (6 - c))
            for n, node_id in enumerate(nodes):
                if n % 5 == 0 and n % 61:
                    continue
                failed = n % 61 == 0 and c == 5
                gemm = 30.0 if failed else rnd.uniform(45.0, 52.0)
                runs.append((node_id, "local", "default", str(uuid.UUID(int=c + 1)),
                             "failed" if failed else "passed", str(900_000 + len(runs)), "",
                             gemm, 3.1, 40.2, 60.0,
                             Jsonb(["gemm_gflops 30 below 45 (reference 50, lower -10%)"]
                                   if failed else []), Jsonb({}), at, at))  # fmt: skip
                if not failed:
                    rates.append((node_id, round(gemm * 1000), len(runs), min(c + 1, 3), at))
        _copy(cur, "validation_run", ["node_id", "cluster", "partition", "campaign", "state",
              "scheduler_job_id", "work_dir", "gemm_gflops", "fft_gflops", "stream_gbs",
              "peak_gflops", "reasons", "result", "created_at", "finished_at"], runs)  # fmt: skip
        _copy(cur, "node_rate", ["node_id", "rate_mflops", "run_id", "samples", "valid_from"],
              rates)  # fmt: skip
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    engine.dispose()
    big = max(ents, key=lambda e: sums[e][2])
    lines = sum(
        j["nodes"]
        for j in jobs
        if j["enterprise_id"] == big and j["ended_at"] is not None and j["ended_at"] >= month
    )
    print(f"largest enterprise: {lines} charge lines this month")
    return {"enterprise": big, "project": projects[big][0], "now": now}


def _page_paths(ids: dict[str, Any], client: TestClient) -> list[tuple[str, str]]:
    ent, proj = ids["enterprise"], ids["project"]
    first = client.get("/ops/jobs").text
    cursor = re.search(r"cursor=([A-Za-z0-9_=-]+)", first)
    deep = f"/ops/jobs?cursor={cursor.group(1)}" if cursor else "/ops/jobs"
    return [
        ("overview", "/ops"),
        ("enterprises", "/ops/enterprises"),
        ("enterprises by use, p2", "/ops/enterprises?sort=used&page=2"),
        ("enterprise (largest)", f"/ops/enterprises/{ent}"),
        ("ledger, this month", f"/ops/enterprises/{ent}/ledger"),
        ("jobs", "/ops/jobs"),
        ("jobs, next page", deep),
        ("jobs by enterprise", f"/ops/jobs?enterprise={ent}"),
        ("jobs by project", f"/ops/jobs?enterprise={ent}&project={proj}"),
        ("jobs running", "/ops/jobs?state=running"),
        ("jobs completed on local", "/ops/jobs?cluster=local&state=completed"),
        ("jobs live refresh rows", "/ops/jobs/rows"),
        ("clusters", "/ops/clusters"),
        (
            "enterprise, last month's statement",
            f"/ops/enterprises/{ent}?month={(ids['now'].replace(day=1) - timedelta(days=1)):%Y-%m}",
        ),
        (
            "download: statement CSV, this month",
            f"/ops/enterprises/{ent}/statement.csv?month={ids['now']:%Y-%m}",
        ),
        ("cluster local (256 nodes)", "/ops/clusters/local"),
        ("cluster local, node c061 history", "/ops/clusters/local?node=c061"),
        ("projects to approve", "/ops/projects"),
    ]


def time_pages(url: str, ids: dict[str, Any], repeat: int) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=url, data_dir=Path(tmp), worker_enabled=False)
        app = create_app(settings, run_worker=False)
        with TestClient(app) as client:
            with session_scope(app.state.session_factory) as s:
                _, token = tokens.create_token(
                    s, SYSTEM, name="bench", role=Role.OPERATOR, enterprise_id=None
                )
                assert s.query(Cluster).count() >= 1
            form = client.get("/ops/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            r = client.post("/ops/login", data={"csrf": csrf.group(1), "token": token})
            assert r.status_code == 200, r.text[:200]
            out = []
            for name, path in _page_paths(ids, client):
                samples = []
                for _ in range(repeat + 1):
                    t0 = time.perf_counter()
                    r = client.get(path)
                    samples.append(time.perf_counter() - t0)
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
                samples = samples[1:]  # the first warms caches
                out.append((name, statistics.median(samples), max(samples)))
            return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--db", default="broker_dashboard_bench")
    ap.add_argument("--enterprises", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    url = recreate(args.url, args.db)
    ids = fill(url, args.enterprises, args.jobs)
    print(f"filled {args.enterprises} enterprises, {args.jobs} jobs in "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    rows = time_pages(url, ids, args.repeat)
    width = max(len(n) for n, _, _ in rows)
    print(f"\n{'page':<{width}}  median ms  max ms   (of {args.repeat} renders)")
    for name, med, worst in rows:
        flag = "" if worst < 1.0 else "  <-- over 1 s"
        if name.startswith("download:"):
            flag += "  (a file of every charge line, not a page)"
        print(f"{name:<{width}}  {med * 1000:9.1f}  {worst * 1000:6.1f}{flag}")
    if not args.keep:
        admin = make_engine(args.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)'))
        admin.dispose()
    pages = [worst for name, _, worst in rows if not name.startswith("download:")]
    return 0 if all(worst < 1.0 for worst in pages) else 1


if __name__ == "__main__":
    sys.exit(main())
