"""Settle 1,000,000 synthetic finished-job records into monthly statements on PostgreSQL.

Three timed steps, printed side by side with their rates:
1. price: each record (job, enterprise, project, node, start, elapsed, rate) through
   the broker's own settlement arithmetic (`billing.month_seconds`: month split, rate x
   node-seconds in integer MFLOP), giving charge lines;
2. store: COPY the lines into `charge_line` of a fresh, migrated database;
3. statements: the month's totals per enterprise and project
   (`statements.monthly_totals`, one indexed GROUP BY), checked against the sum of
   the priced lines to the unit.

    .venv/bin/python benchmarks/statements_1m.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker import migrate
from broker.db import make_engine, make_session_factory, session_scope
from broker.services import billing, statements

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = random.Random(7)
    name = f"stmt_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG.rsplit("/", 1)[0] + "/" + name
    try:
        migrate.upgrade(url)
        ents = [uuid.uuid4() for _ in range(100)]
        projects = {e: [uuid.uuid4() for _ in range(5)] for e in ents}
        base = datetime(2026, 10, 20, tzinfo=UTC)
        records = []
        for i in range(args.records):
            ent = ents[i % 100]
            start = base + timedelta(seconds=rng.randrange(0, 20 * 86400))
            records.append(
                (
                    uuid.uuid4(),
                    ent,
                    projects[ent][i % 5],
                    f"n{i % 256:03d}",
                    start,
                    rng.randrange(1, 4 * 3600),
                    rng.choice([50_000, 100_000, 200_000]),
                )
            )

        t0 = time.perf_counter()
        lines = []
        for job, ent, proj, node, start, elapsed, rate in records:
            for period, seconds in billing.month_seconds(start, elapsed):
                lines.append((job, ent, proj, period, node, seconds, rate, rate * seconds))
        t_price = time.perf_counter() - t0

        t0 = time.perf_counter()
        dsn = url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn) as conn:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO enterprise (id, name, posix_user, slurm_account, status,"
                    " created_at, period_kind, carry_over, current_period) VALUES"
                    " ('00000000-0000-0000-0000-000000000001', 'bench', 'b', 'b', 'active',"
                    " now(), 'month', true, '2026-11') RETURNING id"
                )
                cur.execute(
                    "INSERT INTO ledger_entry (enterprise_id, kind, amount_units, memo,"
                    " actor, created_at, period) VALUES"
                    " ('00000000-0000-0000-0000-000000000001', 'GRANT', 1, '', 'bench',"
                    " now(), '2026-11') RETURNING id"
                )
                entry = cur.fetchone()[0]  # type: ignore[index]
            conn.commit()
        now = datetime.now(UTC).isoformat()
        half = len(lines) // 2

        def copy_part(part: list[tuple[Any, ...]]) -> None:
            # One COPY stream per core: PostgreSQL ingests them in parallel.
            with (
                psycopg.connect(dsn) as conn,
                conn.cursor() as cur,
                cur.copy(
                    "COPY charge_line (entry_id, enterprise_id, project_id, job_id, period,"
                    " cluster, partition, node, node_seconds, rate_mflops, units, memo,"
                    " created_at) FROM STDIN"
                ) as copy,
            ):
                for k in range(0, len(part), 50_000):
                    copy.write(
                        "".join(
                            f"{entry}\t{ent}\t{proj}\t{job}\t{period}\talpha\tcpu\t"
                            f"{node}\t{seconds}\t{rate}\t{units}\t\t{now}\n"
                            for job, ent, proj, period, node, seconds, rate, units in part[
                                k : k + 50_000
                            ]
                        )
                    )

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(copy_part, [lines[:half], lines[half:]]))
        t_store = time.perf_counter() - t0

        engine = make_engine(url)
        factory = make_session_factory(engine, write=False)
        t0 = time.perf_counter()
        with session_scope(factory) as s:
            totals = {m: statements.monthly_totals(s, m) for m in ("2026-10", "2026-11")}
        t_stmt = time.perf_counter() - t0
        engine.dispose()
        expected = sum(ln[7] for ln in lines)
        got = sum(sum(t.values()) for t in totals.values())
        assert got == expected, (got, expected)
        n = args.records
        print(
            f"{n} finished-job records -> {len(lines)} charge lines, "
            f"{sum(len(t) for t in totals.values())} statement rows (2 months)"
        )
        print(f"{'step':<12}{'seconds':>9}{'records/s':>12}")
        for step, secs in (("price", t_price), ("store", t_store), ("statements", t_stmt)):
            print(f"{step:<12}{secs:>9.2f}{n / secs:>12.0f}")
        print(
            f"{'total':<12}{t_price + t_store + t_stmt:>9.2f}   (target <= 10 s); "
            f"totals equal the priced lines: {got == expected}"
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
