"""Settle 1,000,000 synthetic finished-job records into monthly statements on PostgreSQL.

Two timed steps, printed side by side with their rates:
1. price + store: each record (job, enterprise, project, node, start, elapsed, rate)
   through the broker's own settlement arithmetic (`billing.month_seconds`: month
   split, rate x node-seconds in integer MFLOP), its charge lines streamed into
   `charge_line` of a fresh, migrated database by COPY as they are priced (two
   streams; PostgreSQL ingests one chunk while Python prices the next). The lines
   pass the schema's checks: the ledger-entry trigger and both indexes;
2. statements: the month's totals per enterprise and project
   (`statements.monthly_totals`, one indexed GROUP BY), checked against the sum of
   the priced lines to the unit.

With ``--baseline`` the same records also go into a database at schema 0005 (a
per-row foreign key from each line to its ledger entry, lines indexed by job), and
the two are printed side by side.

    .venv/bin/python benchmarks/statements_1m.py [--records 1000000] [--baseline]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker import migrate
from broker.db import make_engine, make_session_factory, session_scope
from broker.services import billing, statements

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CHUNK = 20_000  # records priced per COPY write


def _ledger_entry(dsn: str) -> int:
    """An enterprise and one ledger entry for the lines to belong to."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO enterprise (id, name, posix_user, slurm_account, status,"
            " created_at, period_kind, carry_over, current_period) VALUES"
            " ('00000000-0000-0000-0000-000000000001', 'bench', 'b', 'b', 'active',"
            " now(), 'month', true, '2026-11')"
        )
        cur.execute(
            "INSERT INTO ledger_entry (enterprise_id, kind, amount_units, memo,"
            " actor, created_at, period) VALUES"
            " ('00000000-0000-0000-0000-000000000001', 'GRANT', 1, '', 'bench',"
            " now(), '2026-11') RETURNING id"
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


Record = tuple[uuid.UUID, uuid.UUID, uuid.UUID, str, datetime, int, int]


@dataclass
class Result:
    lines: int
    statement_rows: int
    store_s: float
    statements_s: float
    python_cpu_s: float
    equal: bool


def synthetic(n: int) -> list[Record]:
    """n finished jobs of 100 enterprises (5 projects each) on 256 nodes, late Oct/Nov."""
    rng = random.Random(7)
    ents = [uuid.uuid4() for _ in range(100)]
    projects = {e: [uuid.uuid4() for _ in range(5)] for e in ents}
    base = datetime(2026, 10, 20, tzinfo=UTC)
    return [
        (
            uuid.uuid4(),
            ents[i % 100],
            projects[ents[i % 100]][i % 5],
            f"n{i % 256:03d}",
            base + timedelta(seconds=rng.randrange(0, 20 * 86400)),
            rng.randrange(1, 4 * 3600),
            rng.choice([50_000, 100_000, 200_000]),
        )
        for i in range(n)
    ]


def settle(url: str, records: list[Record]) -> Result:
    """Price and store the records' charge lines, then the months' statement totals."""
    dsn = url.replace("postgresql+psycopg", "postgresql")
    entry = _ledger_entry(dsn)
    now = datetime.now(UTC).isoformat()
    # UUIDs as 32 hex digits (PostgreSQL reads them so); a tenant's ids once each.
    ids = {u: u.hex for r in records for u in (r[1], r[2])}
    priced = [0, 0]  # lines, units
    lock = threading.Lock()

    def copy_part(part: list[Record]) -> float:
        """Price one share of the records and stream its lines into one COPY."""
        cpu0 = time.thread_time()
        n_lines = units_sum = 0
        with (
            psycopg.connect(dsn) as conn,
            conn.cursor() as cur,
            cur.copy(
                "COPY charge_line (entry_id, enterprise_id, project_id, job_id, period,"
                " cluster, partition, node, node_seconds, rate_mflops, units, memo,"
                " created_at) FROM STDIN"
            ) as copy,
        ):
            for k in range(0, len(part), CHUNK):
                out = []
                for job, ent, proj, node, start, elapsed, rate in part[k : k + CHUNK]:
                    head = f"{entry}\t{ids[ent]}\t{ids[proj]}\t{job.hex}\t"
                    for period, seconds in billing.month_seconds(start, elapsed):
                        units = rate * seconds
                        units_sum += units
                        out.append(
                            f"{head}{period}\talpha\tcpu\t{node}\t{seconds}\t{rate}\t"
                            f"{units}\t\t{now}\n"
                        )
                n_lines += len(out)
                copy.write("".join(out))  # PostgreSQL ingests while the next chunk prices
        with lock:
            priced[0] += n_lines
            priced[1] += units_sum
        return time.thread_time() - cpu0

    half = len(records) // 2
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # two COPY streams: two backends ingest
        cpu = sum(pool.map(copy_part, [records[:half], records[half:]]))
    store_s = time.perf_counter() - t0

    engine = make_engine(url)
    factory = make_session_factory(engine, write=False)
    t0 = time.perf_counter()
    with session_scope(factory) as s:
        totals = {m: statements.monthly_totals(s, m) for m in ("2026-10", "2026-11")}
    statements_s = time.perf_counter() - t0
    engine.dispose()
    got = sum(sum(t.values()) for t in totals.values())
    assert got == priced[1], (got, priced[1])
    return Result(
        priced[0],
        sum(len(t) for t in totals.values()),
        store_s,
        statements_s,
        cpu,
        got == priced[1],
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument(
        "--baseline", action="store_true", help="also settle at schema 0005 (per-row FK)"
    )
    args = ap.parse_args()
    records = synthetic(args.records)
    schemas = [("head", "head")] + ([("0005 (row FK)", "0005")] if args.baseline else [])
    admin = make_engine(PG, isolation_level="AUTOCOMMIT")
    results: list[tuple[str, Result]] = []
    try:
        for label, revision in schemas:
            name = f"stmt_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = PG.rsplit("/", 1)[0] + "/" + name
            try:
                migrate.upgrade(url, revision)
                results.append((label, settle(url, records)))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
    n = args.records
    first = results[0][1]
    print(
        f"{n} finished-job records -> {first.lines} charge lines, "
        f"{first.statement_rows} statement rows (2 months)"
    )
    print(
        f"{'schema':<15}{'price+store s':>14}{'statements s':>13}{'total s':>9}"
        f"{'records/s':>11}{'Python CPU s':>13}  totals = lines"
    )
    for label, r in results:
        total = r.store_s + r.statements_s
        print(
            f"{label:<15}{r.store_s:>14.2f}{r.statements_s:>13.2f}{total:>9.2f}"
            f"{n / total:>11.0f}{r.python_cpu_s:>13.2f}  {r.equal}"
        )
    print("target: total <= 10 s on PostgreSQL")


if __name__ == "__main__":
    main()
