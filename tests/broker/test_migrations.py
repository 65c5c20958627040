"""Migrations reach head on SQLite and PostgreSQL, head matches the models, and 0010
converts a populated ledger from 1 MFLOP to 1 GFLOP units exactly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, Boolean, Connection, DateTime, Integer, MetaData, String, select, text

import broker.models  # noqa: F401
from broker import migrate
from broker.db import Base, make_engine, make_session_factory, session_scope
from broker.models import Balance, ChargeLine, Job, LedgerEntry, Project
from broker.services import billing, ledger, statements
from broker.services.principal import SYSTEM


def test_upgrade_head_then_autogenerate_finds_no_diff(db_url: str) -> None:
    migrate.upgrade(db_url)  # idempotent on an already migrated database
    assert migrate.current(db_url) == migrate.head()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_from_first_revision_keeps_rows(tmp_path: Path) -> None:
    """SQLite rebuilds tables on ALTER: rows referenced by foreign keys must survive."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO enterprise (id, name, posix_user, slurm_account, status, created_at)"
                " VALUES ('00000000000000000000000000000001', 'Old', 'old', 'e_old', 'active',"
                " '2026-01-01 00:00:00')"
            )
        )
        # 5 GFLOP in the units of the time (MFLOP): a grant and the balance it made.
        conn.execute(
            text(
                "INSERT INTO ledger_entry (enterprise_id, kind, amount_units, memo, actor,"
                " created_at) VALUES ('00000000000000000000000000000001', 'GRANT', 5000, '',"
                " 'op', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO balance (enterprise_id, granted_units, held_units, charged_units)"
                " VALUES ('00000000000000000000000000000001', 5000, 0, 0)"
            )
        )
    migrate.upgrade(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, period_kind, carry_over FROM enterprise")).one()
        assert tuple(row) == ("Old", "month", 1)
        assert conn.execute(text("SELECT granted_units FROM balance")).scalar() == 5
        assert conn.execute(text("SELECT amount_units FROM ledger_entry")).scalar() == 5
    engine.dispose()


# -- 0010: MFLOP -> GFLOP on a populated database -----------------------------------------


T0 = datetime(2026, 10, 20, 12, tzinfo=UTC)


def _filler(column: Any) -> Any:
    """A value for a required column this test does not care about."""
    t = column.type
    if isinstance(t, Boolean):
        return False
    if isinstance(t, DateTime):
        return T0
    if isinstance(t, JSON):
        return []
    if isinstance(t, Integer):
        return 0
    if isinstance(t, String):
        return "x"
    return "x"


@dataclass
class Old:
    """Writes rows at revision 0009 with the columns that revision has (reflected)."""

    conn: Connection
    meta: MetaData = field(default_factory=MetaData)

    def __post_init__(self) -> None:
        self.meta.reflect(self.conn)
        self.sqlite = self.conn.dialect.name == "sqlite"

    def uid(self, value: uuid.UUID | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return value.hex

    def insert(self, table: str, **values: Any) -> Any:
        t = self.meta.tables[table]
        row = {}
        for col in t.columns:
            if col.name in values:
                value = values[col.name]
                row[col.name] = self.uid(value) if isinstance(value, uuid.UUID) else value
            elif (
                not col.nullable
                and col.server_default is None
                and not (col.primary_key and isinstance(col.type, Integer))
            ):
                row[col.name] = uuid.uuid4().hex[:8] if col.unique else _filler(col)
        if "id" in t.c and isinstance(t.c.id.type, Integer) and "id" not in values:
            return self.conn.execute(t.insert().values(row).returning(t.c.id)).scalar_one()
        self.conn.execute(t.insert().values(row))
        return values.get("id")


@dataclass
class Tenant:
    """One enterprise's rows in MFLOP, with its balance sums kept as the ledger would."""

    old: Old
    name: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    granted: int = 0
    held: int = 0
    charged: int = 0
    projects: dict[uuid.UUID, list[int]] = field(default_factory=dict)  # held, charged

    def __post_init__(self) -> None:
        self.old.insert(
            "enterprise",
            id=self.id,
            name=self.name,
            posix_user=self.name,
            slurm_account=f"e_{self.name}",
            status="active",
            created_at=T0,
        )

    def project(self, allocation: int | None) -> uuid.UUID:
        pid = uuid.uuid4()
        self.old.insert(
            "project",
            id=pid,
            enterprise_id=self.id,
            name=f"p{pid.hex[:6]}",
            description="",
            status="active",
            allocation_units=allocation,
            created_at=T0,
        )
        self.projects[pid] = [0, 0]
        return pid

    def entry(self, kind: str, amount: int, **kw: Any) -> int:
        entry_id: int = self.old.insert(
            "ledger_entry",
            enterprise_id=self.id,
            kind=kind,
            amount_units=amount,
            **{"memo": "", "actor": "test", "created_at": T0, "period": "2026-10", **kw},
        )
        proj = self.projects.get(kw.get("project_id"))  # type: ignore[arg-type]
        if kind == "GRANT" or (kind == "ADJUST" and "reverses_id" not in kw):
            self.granted += amount
        elif kind in ("HOLD", "RELEASE"):
            sign = 1 if kind == "HOLD" else -1
            self.held += sign * amount
            if proj is not None:
                proj[0] += sign * amount
        else:
            self.charged += amount
            if proj is not None:
                proj[1] += amount
        return entry_id

    def job(
        self,
        project: uuid.UUID,
        hold: int,
        lines: list[int] | None = None,
        credits: list[list[int]] | None = None,
    ) -> uuid.UUID:
        """A job: its HOLD, and if ``lines`` are given its settlement and credits."""
        jid = uuid.uuid4()
        charge = None
        if lines is not None:
            charge = sum(lines) - sum(sum(c) for c in credits or [])
        self.old.insert(
            "job",
            id=jid,
            enterprise_id=self.id,
            project_id=project,
            submitted_by="m",
            request_hash="h",
            name="j",
            script="true",
            nodes=len(lines or [1]),
            time_limit_minutes=60,
            cluster="local",
            partition="default",
            routing={},
            state="completed" if lines is not None else "running",
            reason="",
            node_list=[],
            work_dir="",
            stdout_path="",
            stderr_path="",
            hold_units=hold,
            charge_units=charge,
            submit_attempts=0,
            cancel_requested=False,
            created_at=T0,
            updated_at=T0,
        )
        on = {"project_id": project, "job_id": jid}
        held = self.entry("HOLD", hold, **on)
        if lines is None:
            return jid
        self.entry("RELEASE", hold, reverses_id=held, **on)
        charge_id = self.entry("CHARGE", sum(lines), **on)
        self._lines(jid, project, charge_id, lines)
        for credit in credits or []:
            credit_id = self.entry("ADJUST", -sum(credit), reverses_id=charge_id, **on)
            self._lines(jid, project, credit_id, [-u for u in credit])
        return jid

    def _lines(self, jid: uuid.UUID, project: uuid.UUID, entry: int, units: list[int]) -> None:
        for i, u in enumerate(units):
            self.old.insert(
                "charge_line",
                entry_id=entry,
                enterprise_id=self.id,
                project_id=project,
                job_id=jid,
                period="2026-10",
                cluster="local",
                partition="default",
                node=f"n{i}",
                node_seconds=60,
                rate_mflops=1,
                units=u,
                memo="",
                created_at=T0,
            )

    def balances(self) -> None:
        """The balance rows, equal to the entries' sums (as the ledger keeps them)."""
        self.old.insert(
            "balance",
            enterprise_id=self.id,
            granted_units=self.granted,
            held_units=self.held,
            charged_units=self.charged,
        )
        for pid, (held, charged) in self.projects.items():
            self.old.insert(
                "balance",
                enterprise_id=self.id,
                project_id=pid,
                granted_units=0,
                held_units=held,
                charged_units=charged,
            )


G = 1000  # MFLOP per GFLOP: the values below are written in MFLOP
PFH = 3_600_000_000  # GFLOP per PFlop·h


def _populate(conn: Connection) -> dict[str, Tenant]:
    old = Old(conn)
    # "whole": every value a whole number of GFLOP, amounts as large as MFLOP allowed.
    whole = Tenant(old, "whole")
    wp = whole.project(allocation=1_000_000 * PFH * G)
    whole.entry("GRANT", 2_000_000 * PFH * G)
    whole.entry("ADJUST", -250 * PFH * G, memo="fix")
    whole.job(wp, hold=400_000 * PFH * G, lines=[100_000 * PFH * G, 7 * G])
    whole.job(wp, hold=30 * G, lines=[10 * G, 20 * G])  # charged its whole hold
    whole.job(wp, hold=90 * G, lines=[40 * G, 50 * G], credits=[[50 * G]])
    whole.job(wp, hold=123_456 * G)  # running: an open hold
    whole.balances()

    # "frac": sub-GFLOP remainders everywhere.
    frac = Tenant(old, "frac")
    fp = frac.project(allocation=500_000_000_500)  # x.5: half-even to 500,000,000
    frac.entry("GRANT", 1_000_000_000_700)
    frac.entry("GRANT", 300)  # under half a GFLOP: 1, never 0
    frac.job(fp, hold=10_000_600, lines=[1_500, 2_500, 3_333_777])  # 2 + 2 + 3,334
    frac.job(fp, hold=3_000, lines=[1_500, 1_500])  # 2 + 2 > its hold of 3: capped
    frac.job(
        fp,
        hold=50_000_000,
        lines=[20_000_200, 20_000_200],
        credits=[[20_000_200], [300]],  # a whole node, then a crumb
    )
    frac.job(fp, hold=99_999_999_999)  # running
    unused = frac.granted - frac.held - frac.charged
    frac.entry("ADJUST", -unused, memo="unused budget of 2026-09 expired")  # available: 0
    frac.balances()

    # "tight": available exactly 0, which rounding would take below 0; an allocation
    # that rounding would leave below what the project holds.
    tight = Tenant(old, "tight")
    tp = tight.project(allocation=1_400)
    tight.entry("GRANT", 1_400)
    tight.job(tp, hold=1_400)
    tight.balances()
    return {"whole": whole, "frac": frac, "tight": tight}


def _snapshot(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "ledger_entry": "SELECT id, kind, amount_units FROM ledger_entry ORDER BY id",
        "balance": "SELECT id, granted_units, held_units, charged_units FROM balance ORDER BY id",
        "project": "SELECT id, allocation_units FROM project ORDER BY id",
        "job": "SELECT id, hold_units, charge_units FROM job ORDER BY id",
        "charge_line": "SELECT id, units FROM charge_line ORDER BY id",
    }
    return {k: [tuple(r) for r in conn.execute(text(q))] for k, q in queries.items()}


def _in(rows: list[tuple[Any, ...]], ids: set[Any]) -> list[tuple[Any, ...]]:
    return [r for r in rows if r[0] in ids]


def test_0010_converts_a_populated_ledger_exactly(empty_url: str) -> None:
    url = empty_url
    migrate.upgrade(url, "0009")
    engine = make_engine(url)
    with engine.begin() as conn:
        tenants = _populate(conn)
    with engine.connect() as conn:
        before = _snapshot(conn)
        whole_ids = {
            k: {
                r[0]
                for r in conn.execute(
                    text(
                        {
                            "ledger_entry": "SELECT id FROM ledger_entry WHERE enterprise_id = :e",
                            "balance": "SELECT id FROM balance WHERE enterprise_id = :e",
                            "project": "SELECT id FROM project WHERE enterprise_id = :e",
                            "job": "SELECT id FROM job WHERE enterprise_id = :e",
                            "charge_line": "SELECT id FROM charge_line WHERE enterprise_id = :e",
                        }[k]
                    ),
                    {"e": tenants["whole"].old.uid(tenants["whole"].id)},
                )
            }
            for k in before
        }

    migrate.upgrade(url, "0010")
    with engine.connect() as conn:
        after = _snapshot(conn)

    # Whole GFLOP: divided by 1000, every column of every row; nothing appended.
    for table, rows in before.items():
        old_rows = _in(rows, whole_ids[table])
        new_rows = _in(after[table], whole_ids[table])
        assert new_rows == [
            (r[0], *(v if isinstance(v, str) or v is None else v // G for v in r[1:]))
            for r in old_rows
        ], table
    assert len(after["ledger_entry"]) == len(before["ledger_entry"]) + 1  # "tight"'s ADJUST

    # The services below map today's models: the later revisions' columns must exist
    # (they leave the ledger's amounts alone).
    migrate.upgrade(url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        by_name = {t.name: t for t in tenants.values()}
        # The largest amounts of the old unit, now exact in the new one.
        whole = by_name["whole"]
        bal = ledger.balance(s, SYSTEM, whole.id)
        assert bal.granted_units == (2_000_000 - 250) * PFH
        assert bal.charged_units == 100_000 * PFH + 7 + 30 + 90 - 50
        assert bal.held_units == 123_456

        for t in tenants.values():
            # Invariants: balances = Σ entries, available ≥ 0, one HOLD/RELEASE/CHARGE.
            assert ledger.check_invariants(s, t.id) == [], t.name
            # Statement totals = ledger, to the unit.
            doc = statements.statement(s, SYSTEM, t.id, "2026-10")
            assert doc["net_units"] == billing.ledger_charged(s, t.id), t.name
            # Within rounding of the exact value: at most a few GFLOP per enterprise.
            b = ledger.balance(s, SYSTEM, t.id)
            assert abs(b.granted_units * G - t.granted) <= 3 * G, t.name
            assert abs(b.held_units * G - t.held) <= 3 * G, t.name
            assert abs(b.charged_units * G - t.charged) <= 3 * G, t.name

        for job in s.scalars(select(Job)).all():
            hold = s.scalar(
                select(LedgerEntry.amount_units).where(
                    LedgerEntry.job_id == job.id, LedgerEntry.kind == "HOLD"
                )
            )
            assert hold == job.hold_units
            charge = ledger.charge_entry(s, job.id)
            if charge is None:
                continue
            lines = s.scalars(
                select(ChargeLine.units).where(ChargeLine.entry_id == charge.id)
            ).all()
            assert charge.amount_units == sum(lines)  # the charge is its lines
            assert charge.amount_units <= hold  # and never more than its hold
            credits = s.scalars(
                select(LedgerEntry).where(LedgerEntry.reverses_id == charge.id)
            ).all()
            for c in credits:
                credit_lines = s.scalars(
                    select(ChargeLine.units).where(ChargeLine.entry_id == c.id)
                ).all()
                assert c.amount_units == sum(credit_lines) < 0
            assert job.charge_units == charge.amount_units + sum(c.amount_units for c in credits)
            assert 0 <= sum(-c.amount_units for c in credits) <= charge.amount_units

        # "frac", row by row: the documented roundings.
        frac = by_name["frac"]
        amounts = [
            (e.kind.value, e.amount_units)
            for e in s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.enterprise_id == frac.id)
                .order_by(LedgerEntry.id)
            )
        ]
        assert amounts[:2] == [("GRANT", 1_000_000_001), ("GRANT", 1)]
        assert amounts[2:5] == [("HOLD", 10_001), ("RELEASE", 10_001), ("CHARGE", 3_338)]
        assert amounts[5:8] == [("HOLD", 3), ("RELEASE", 3), ("CHARGE", 3)]  # capped
        assert amounts[8:13] == [
            ("HOLD", 50_000),
            ("RELEASE", 50_000),
            ("CHARGE", 40_000),
            ("ADJUST", -20_000),
            ("ADJUST", -1),  # 0.3 GFLOP: 1, as an ADJUST is never 0
        ]
        assert amounts[13] == ("HOLD", 100_000_000)
        assert amounts[14][0] == "ADJUST"  # the expiry, half-even
        assert len(amounts) == 15
        proj = s.scalars(select(Project).where(Project.enterprise_id == frac.id)).one()
        assert proj.allocation_units == 500_000_000

        # "tight": the rounding deficit is an appended ADJUST; the allocation covers use.
        tight = by_name["tight"]
        extra = s.scalars(
            select(LedgerEntry).where(
                LedgerEntry.enterprise_id == tight.id, LedgerEntry.actor == "migration 0010"
            )
        ).one()
        assert (extra.kind.value, extra.amount_units, extra.memo) == (
            "ADJUST",
            1,
            "unit conversion",
        )
        b = ledger.balance(s, SYSTEM, tight.id)
        assert (b.granted_units, b.held_units, b.available_units) == (2, 2, 0)
        proj = s.scalars(select(Project).where(Project.enterprise_id == tight.id)).one()
        row = s.scalars(select(Balance).where(Balance.project_id == proj.id)).one()
        assert proj.allocation_units == row.held_units == 2

    # Down again: times 1000, exactly; whole-GFLOP rows are as they were.
    _downgrade(url, "0009")
    with engine.connect() as conn:
        down = _snapshot(conn)
    for table, rows in after.items():
        assert down[table] == [
            (r[0], *(v if isinstance(v, str) or v is None else v * G for v in r[1:])) for r in rows
        ], table
        assert _in(down[table], whole_ids[table]) == _in(before[table], whole_ids[table])
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    """Alembic downgrade on a connection of ours, closed even when the migration fails."""
    engine = make_engine(url, sqlite_foreign_keys=False)
    try:
        with engine.connect() as conn:
            cfg = migrate.alembic_config(url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()


def test_0010_downgrade_refuses_amounts_mflop_cannot_hold(empty_url: str) -> None:
    url = empty_url
    migrate.upgrade(url, "0010")
    engine = make_engine(url)
    with engine.begin() as conn:
        old = Old(conn)
        t = Tenant(old, "big")
        t.entry("GRANT", 10**9 * PFH)  # 1e9 PFlop·h in GFLOP: 3.6e18, x1000 overflows
        t.balances()
    with pytest.raises(RuntimeError, match="cannot go below revision 0010"):
        _downgrade(url, "0009")
    assert migrate.current(url) == "0010"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT granted_units FROM balance")).scalar() == 10**9 * PFH
    engine.dispose()
