"""ledger base unit: 1 GFLOP (amounts up to 1e9 PFlop·h and beyond)

Until now a ledger unit was 1 MFLOP (3.6e12 per PFlop·h), so a signed 64-bit column
capped any amount or balance near 2.56e6 PFlop·h. From here a unit is 1 GFLOP (3.6e9
per PFlop·h; ±2.56e9 PFlop·h fit). Columns converted, every row:
``ledger_entry.amount_units``, ``balance.granted_units / held_units / charged_units``,
``project.allocation_units``, ``job.hold_units / charge_units``, ``charge_line.units``.
Node rates (``*_mflops``, MFLOP/s) and capacity caps (MFLOP/s) are rates: unchanged.
Audit details and events carry PFlop·h, which do not depend on the unit (the
``units`` of old ``job.credit`` audit rows stay as written: MFLOP).

Exactly: a value that is a whole number of GFLOP (a multiple of 1000) is divided by
1000, nothing else, whatever its column; a database whose values are all whole GFLOP
comes out as the same database over 1000. A value with a sub-GFLOP remainder is
rounded as follows (``q`` = value / 1000, exact):

- HOLD and RELEASE entries and ``job.hold_units``: up, ``ceil(q)`` (a hold is an upper
  bound; a RELEASE equals its HOLD before and after). Off by less than 1 GFLOP.
- Charge lines of a CHARGE: half-even, each within 0.5 GFLOP (1.4e-10 PFlop·h). The
  CHARGE becomes the sum of its converted lines, as charges are computed from now on,
  so statements equal the ledger to the unit; where that sum would exceed the job's
  converted hold (a charge capped at its hold), the CHARGE is that hold and its lines
  are the hold apportioned over the lines' MFLOP by largest remainder. A CHARGE with no
  lines: half-even. So every charge stays at most its hold.
- Credits (ADJUSTs reversing a CHARGE), in order, per CHARGE: each credit is the
  half-even conversion of the credits so far (capped at the converted CHARGE) less the
  credits before it, at least 1 GFLOP in magnitude (an ADJUST is never zero); its lines
  are the credit apportioned over their MFLOP by largest remainder. So credits never
  exceed their charge, except by 1 GFLOP for each credit smaller than half a GFLOP
  that had nothing left to credit.
- GRANT and other ADJUST entries: half-even, except that a non-zero amount under half
  a GFLOP becomes ±1 GFLOP (entries are never zero). Within 0.5 GFLOP, or 1 for those.
- ``job.charge_units`` (a job's net charge) is recomputed from its converted CHARGE and
  credits; a job without a CHARGE entry: half-even.
- Balance rows are recomputed from the converted entries (they were their sums; the
  entries are the ledger), so balance = Σ entries to the unit. A project row's
  ``granted_units`` (unused) is converted half-even.
- The roundings can leave an enterprise's available (granted − held − charged) a few
  GFLOP below zero (say it was exactly 0 after a period's expiry): the migration then
  appends one ADJUST of +that deficit, memo "unit conversion", actor
  "migration 0010", so the balance stays ≥ 0 and equal to its entries.
- ``project.allocation_units``: half-even, raised to the project's converted held +
  charged where rounding put those above it (and they were not above it before).

No row is deleted (the ledger is append-only). Downgrade multiplies every one of these
columns by 1000 (exact), refusing if a value would not fit 1 MFLOP units; it does not
undo the roundings or the appended ADJUSTs, which stay consistent.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 11:40:00
"""

from collections import defaultdict
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

RATIO = 1000  # MFLOP per GFLOP
INT64_MAX = 2**63 - 1
CHUNK = 500
MEMO = "unit conversion"
ACTOR = "migration 0010"

COLUMNS = [
    ("ledger_entry", "amount_units"),
    ("balance", "granted_units"),
    ("balance", "held_units"),
    ("balance", "charged_units"),
    ("project", "allocation_units"),
    ("job", "hold_units"),
    ("job", "charge_units"),
    ("charge_line", "units"),
]

GRANTED = "(kind = 'GRANT' OR (kind = 'ADJUST' AND reverses_id IS NULL))"
CHARGED = "(kind = 'CHARGE' OR (kind = 'ADJUST' AND reverses_id IS NOT NULL))"
HELD = "CASE kind WHEN 'HOLD' THEN amount_units WHEN 'RELEASE' THEN -amount_units ELSE 0 END"


# -- the roundings, in SQL (integer / and % truncate on SQLite and PostgreSQL) and Python
def _rhe_sql(x: str) -> str:
    """Half-even of x / 1000 (symmetric: the magnitude's half-even, signed)."""

    def mag(a: str) -> str:
        return (
            f"({a} / {RATIO} + CASE WHEN {a} % {RATIO} > {RATIO // 2}"
            f" OR ({a} % {RATIO} = {RATIO // 2} AND ({a} / {RATIO}) % 2 = 1)"
            " THEN 1 ELSE 0 END)"
        )

    return f"(CASE WHEN {x} >= 0 THEN {mag(x)} ELSE -{mag(f'(-{x})')} END)"


def _ceil_sql(x: str) -> str:
    return f"({x} / {RATIO} + CASE WHEN {x} % {RATIO} > 0 THEN 1 ELSE 0 END)"


def _nonzero_sql(converted: str, x: str) -> str:
    return (
        f"(CASE WHEN {converted} = 0 AND {x} > 0 THEN 1"
        f" WHEN {converted} = 0 AND {x} < 0 THEN -1 ELSE {converted} END)"
    )


def _rhe(x: int) -> int:
    whole, rest = divmod(abs(x), RATIO)
    whole += 2 * rest > RATIO or (2 * rest == RATIO and whole % 2 == 1)
    return whole if x >= 0 else -whole


def _ceil(x: int) -> int:
    return -(-x // RATIO)


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Non-negative integers proportional to ``weights`` adding up to ``total`` exactly."""
    whole = sum(weights)
    if whole == 0:
        return [total] + [0] * (len(weights) - 1)
    shares = [total * w // whole for w in weights]
    rest = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[:rest]:
        shares[i] += 1
    return shares


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


def _lines_of(conn: sa.Connection, entry_ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    lines: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for chunk in _chunks(entry_ids):
        rows = conn.execute(
            sa.text(
                "SELECT id, entry_id, units FROM charge_line WHERE entry_id IN :ids ORDER BY id"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": chunk},
        )
        for line_id, entry_id, units in rows:
            lines[entry_id].append((line_id, int(units)))
    return lines


def _set(conn: sa.Connection, sql: str, rows: list[dict[str, int]]) -> None:
    if rows:
        conn.execute(sa.text(sql), rows)


def upgrade() -> None:
    conn = op.get_bind()
    x = conn.execute
    op.create_index("tmp_0010_charge_line_entry", "charge_line", ["entry_id"])

    # 1. What needs the MFLOP values, read before anything changes.
    # CHARGEs whose lines, converted one by one, would add up past the converted hold.
    capped = x(
        sa.text(
            f"SELECT c.id, h.amount_units FROM ledger_entry c"
            f" JOIN ledger_entry h ON h.job_id = c.job_id AND h.kind = 'HOLD'"
            f" JOIN (SELECT entry_id, SUM({_rhe_sql('units')}) AS s FROM charge_line"
            f" GROUP BY entry_id) t ON t.entry_id = c.id"
            f" WHERE c.kind = 'CHARGE' AND t.s > {_ceil_sql('h.amount_units')}"
        )
    ).all()
    capped_hold = {int(cid): _ceil(int(hold)) for cid, hold in capped}
    capped_lines = _lines_of(conn, list(capped_hold))
    credits = x(
        sa.text(
            "SELECT id, reverses_id, amount_units FROM ledger_entry"
            " WHERE kind = 'ADJUST' AND reverses_id IS NOT NULL ORDER BY id"
        )
    ).all()
    credit_lines = _lines_of(conn, [int(c[0]) for c in credits])
    within = set(
        x(
            sa.text(
                "SELECT p.id FROM project p JOIN balance b ON b.project_id = p.id"
                " WHERE p.allocation_units IS NOT NULL"
                " AND p.allocation_units >= b.held_units + b.charged_units"
            ).columns(id=sa.Uuid)
        ).scalars()
    )

    # 2. Entries and lines, in bulk.
    x(
        sa.text(
            f"UPDATE charge_line SET units = {_rhe_sql('units')} WHERE entry_id NOT IN"
            " (SELECT id FROM ledger_entry WHERE kind = 'ADJUST' AND reverses_id IS NOT NULL)"
        )
    )
    x(
        sa.text(
            f"UPDATE ledger_entry SET amount_units = {_ceil_sql('amount_units')}"
            " WHERE kind IN ('HOLD', 'RELEASE')"
        )
    )
    rhe = _rhe_sql("amount_units")
    x(
        sa.text(
            f"UPDATE ledger_entry SET amount_units = {_nonzero_sql(rhe, 'amount_units')}"
            f" WHERE {GRANTED}"
        )
    )
    x(sa.text(f"UPDATE ledger_entry SET amount_units = {rhe} WHERE kind = 'CHARGE'"))
    x(
        sa.text(
            "UPDATE ledger_entry SET amount_units ="
            " (SELECT SUM(units) FROM charge_line l WHERE l.entry_id = ledger_entry.id)"
            " WHERE kind = 'CHARGE'"
            " AND EXISTS (SELECT 1 FROM charge_line l WHERE l.entry_id = ledger_entry.id)"
        )
    )

    # 3. CHARGEs capped at their hold: the hold, apportioned over the lines' MFLOP.
    line_rows: list[dict[str, int]] = []
    entry_rows: list[dict[str, int]] = []
    for cid, hold in capped_hold.items():
        lines = capped_lines[cid]
        shares = _apportion(hold, [units for _, units in lines])
        line_rows += [{"id": lid, "u": u} for (lid, _), u in zip(lines, shares, strict=True)]
        entry_rows.append({"id": cid, "u": hold})

    # 4. Credits, per CHARGE in order, against the converted CHARGE.
    charges = {}
    charge_ids = sorted({int(c[1]) for c in credits})
    for chunk in _chunks(charge_ids):
        rows = x(
            sa.text(
                "SELECT id, job_id, amount_units FROM ledger_entry"
                " WHERE kind = 'CHARGE' AND id IN :ids"
            )
            .bindparams(sa.bindparam("ids", expanding=True))
            .columns(id=sa.BigInteger, job_id=sa.Uuid, amount_units=sa.BigInteger),
            {"ids": chunk},
        )
        for cid, job_id, amount in rows:
            charges[int(cid)] = (job_id, int(amount))
    for cid, hold in capped_hold.items():
        if cid in charges:
            charges[cid] = (charges[cid][0], hold)
    exact: dict[int, int] = defaultdict(int)  # credited so far per charge, MFLOP
    done: dict[int, int] = defaultdict(int)  # credited so far per charge, GFLOP
    for credit_id, reverses_id, amount in credits:
        credit_id, reverses_id, amount = int(credit_id), int(reverses_id), int(amount)
        sign = -1 if amount < 0 else 1
        cap = charges[reverses_id][1] if reverses_id in charges else abs(_rhe(amount)) + 1
        exact[reverses_id] += abs(amount)
        target = min(cap, _rhe(exact[reverses_id]))
        size = max(1, target - done[reverses_id])
        done[reverses_id] += size
        entry_rows.append({"id": credit_id, "u": sign * size})
        lines = credit_lines.get(credit_id, [])
        shares = _apportion(size, [abs(units) for _, units in lines])
        line_rows += [{"id": lid, "u": sign * u} for (lid, _), u in zip(lines, shares, strict=True)]
    _set(conn, "UPDATE charge_line SET units = :u WHERE id = :id", line_rows)
    _set(conn, "UPDATE ledger_entry SET amount_units = :u WHERE id = :id", entry_rows)

    # 5. Jobs: the hold up, the net charge from the converted entries.
    x(
        sa.text(
            f"UPDATE job SET hold_units = {_ceil_sql('hold_units')},"
            f" charge_units = {_rhe_sql('charge_units')}"
        )
    )
    x(
        sa.text(
            "UPDATE job SET charge_units = (SELECT e.amount_units FROM ledger_entry e"
            " WHERE e.job_id = job.id AND e.kind = 'CHARGE')"
            " WHERE EXISTS (SELECT 1 FROM ledger_entry e"
            " WHERE e.job_id = job.id AND e.kind = 'CHARGE')"
        )
    )
    job_t = sa.table("job", sa.column("id", sa.Uuid), sa.column("charge_units", sa.BigInteger))
    for cid, credited in done.items():
        if cid in charges:
            job_id, charge = charges[cid]
            x(
                job_t.update()
                .where(job_t.c.id == sa.literal(job_id, sa.Uuid))
                .values(charge_units=charge - credited)
            )

    # 6. Enterprises left below zero by the roundings: one ADJUST each.
    sums = x(
        sa.text(
            f"SELECT enterprise_id,"
            f" SUM(CASE WHEN {GRANTED} THEN amount_units ELSE 0 END),"
            f" SUM({HELD}),"
            f" SUM(CASE WHEN {CHARGED} THEN amount_units ELSE 0 END)"
            f" FROM ledger_entry GROUP BY enterprise_id"
        ).columns(enterprise_id=sa.Uuid)
    ).all()
    entry_t = sa.table(
        "ledger_entry",
        sa.column("enterprise_id", sa.Uuid),
        sa.column("kind", sa.String),
        sa.column("amount_units", sa.BigInteger),
        sa.column("period", sa.String),
        sa.column("memo", sa.String),
        sa.column("actor", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    now = sa.func.current_timestamp()
    for ent_id, granted, held, charged in sums:
        deficit = int(held or 0) + int(charged or 0) - int(granted or 0)
        if deficit > 0:
            x(
                entry_t.insert().values(
                    enterprise_id=ent_id,
                    kind="ADJUST",
                    amount_units=deficit,
                    period="",
                    memo=MEMO,
                    actor=ACTOR,
                    created_at=now,
                )
            )

    # 7. Balances from the entries; allocations.
    def total(owner: str, where: str, value: str = "amount_units") -> str:
        return (
            f"COALESCE((SELECT SUM({value}) FROM ledger_entry e"
            f" WHERE e.{owner} = balance.{owner} AND {where}), 0)"
        )

    holds = "kind IN ('HOLD', 'RELEASE')"
    x(
        sa.text(
            f"UPDATE balance SET granted_units = {total('enterprise_id', GRANTED)},"
            f" held_units = {total('enterprise_id', holds, HELD)},"
            f" charged_units = {total('enterprise_id', CHARGED)}"
            " WHERE project_id IS NULL"
        )
    )
    x(
        sa.text(
            f"UPDATE balance SET granted_units = {_rhe_sql('granted_units')},"
            f" held_units = {total('project_id', holds, HELD)},"
            f" charged_units = {total('project_id', CHARGED)}"
            " WHERE project_id IS NOT NULL"
        )
    )
    x(
        sa.text(
            f"UPDATE project SET allocation_units = {_rhe_sql('allocation_units')}"
            " WHERE allocation_units IS NOT NULL"
        )
    )
    project_t = sa.table(
        "project", sa.column("id", sa.Uuid), sa.column("allocation_units", sa.BigInteger)
    )
    below = x(
        sa.text(
            "SELECT p.id, b.held_units + b.charged_units FROM project p"
            " JOIN balance b ON b.project_id = p.id WHERE p.allocation_units IS NOT NULL"
            " AND p.allocation_units < b.held_units + b.charged_units"
        ).columns(id=sa.Uuid)
    ).all()
    for pid, used in below:
        if pid in within:
            x(
                project_t.update()
                .where(project_t.c.id == sa.literal(pid, sa.Uuid))
                .values(allocation_units=int(used))
            )
    op.drop_index("tmp_0010_charge_line_entry", "charge_line")


def downgrade() -> None:
    conn = op.get_bind()
    limit = INT64_MAX // RATIO
    for table, column in COLUMNS:
        big = conn.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE {column} > {limit} OR {column} < -{limit}")
        ).scalar()
        if big:
            raise RuntimeError(
                f"{table}.{column}: {big} values above {limit:,} GFLOP do not fit in units of"
                " 1 MFLOP; this database cannot go below revision 0010"
            )
    for table, column in COLUMNS:
        conn.execute(sa.text(f"UPDATE {table} SET {column} = {column} * {RATIO}"))
