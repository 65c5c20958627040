"""The batch's statements on the DBAPI connection (``bulk.fetch`` and ``bulk.write`` on
PostgreSQL skip SQLAlchemy's per-statement work): the same rows as SQLAlchemy gives,
and the same errors: a lock wait that fails is SQLAlchemy's ``OperationalError``, a
connection the server dropped is invalidated (the next batch gets a fresh one), and a
batch PostgreSQL picks as a deadlock's victim is run once more and accepted."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from broker.api.batching import SubmitBatcher, writer_engine
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Balance, EnterpriseStatus, Job, ProjectStatus
from broker.services import brokering, bulk, intake, ledger
from broker.services.snapshot_cache import SnapshotCache

from .test_submit_batching import Tenant, _factory, factory, make_tenant, spec

__all__ = ["factory"]


@pytest.fixture(params=["engine", "writer_engine"])
def pg_factory(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path
) -> Iterator[sessionmaker[Session]]:
    """A plain engine's sessions, or the batch writer's (``writer_engine``: BEGIN sent
    with the first statement, writes with the COMMIT)."""
    for plain in _factory(pg_url, tmp_path):  # the clusters' rows, on a plain engine
        if request.param == "engine":
            yield plain
            continue
        engine = writer_engine(pg_url)
        yield make_session_factory(engine)
        engine.dispose()


def _wanted(*tenants: Tenant) -> dict[uuid.UUID, set[uuid.UUID]]:
    return {t.enterprise_id: {t.p1, t.p2} for t in tenants}


def test_fetch_gives_the_rows_sqlalchemy_gives(factory: sessionmaker[Session]) -> None:
    t = make_tenant(factory)
    wanted = _wanted(t)
    with factory() as s:
        pg = bulk.is_pg(s)
    query = ledger._lock_batch(pg, intake._HOOKED)
    params = {"ids": sorted(wanted), "projects": sorted(wanted[t.enterprise_id])}
    with session_scope(factory) as s:
        expected = [tuple(r) for r in s.connection().execute(query, params)]
        got = bulk.fetch(s, query, params)
    assert got == expected and len(got) == 3  # the enterprise's row and its two projects'
    assert type(got[0][1]) is EnterpriseStatus and got[0][1] is EnterpriseStatus.ACTIVE
    assert {type(r[17]) for r in got[1:]} == {ProjectStatus}


def _lock_balance(url: str, enterprise_id: uuid.UUID) -> psycopg.Connection:
    """Another transaction holding the enterprise's own balance row."""
    conn = psycopg.connect(url.replace("+psycopg", ""))
    conn.execute("SET deadlock_timeout = '30s'")  # the batch, not this, finds a deadlock
    conn.execute(
        "SELECT id FROM balance WHERE enterprise_id = %s AND project_id IS NULL FOR UPDATE",
        (enterprise_id,),
    )
    return conn


@pytest.mark.postgres
def test_a_failed_lock_wait_is_sqlalchemys_operational_error(
    pg_url: str, pg_factory: sessionmaker[Session]
) -> None:
    factory = pg_factory
    t = make_tenant(factory)
    other = _lock_balance(pg_url, t.enterprise_id)
    try:
        with factory() as s:
            s.execute(text("SET LOCAL lock_timeout = '50ms'"))
            with pytest.raises(OperationalError) as caught:
                ledger.lock_batch(s, _wanted(t))
            assert isinstance(caught.value.orig, psycopg.errors.LockNotAvailable)
            assert "FOR UPDATE" in str(caught.value.statement)
    finally:
        other.close()


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_not_used_again(
    pg_url: str, pg_factory: sessionmaker[Session]
) -> None:
    engine = make_engine(pg_url, pool_pre_ping=False, pool_size=1)  # as the batches' pool
    factory = make_session_factory(engine)
    t = make_tenant(factory)
    with factory() as s:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        s.commit()
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        with pytest.raises(DBAPIError) as caught:
            ledger.lock_batch(s, _wanted(t))
        assert caught.value.connection_invalidated
    with factory() as s:  # the pool's one connection is a new one
        assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
        assert ledger.lock_batch(s, _wanted(t))[0]
    engine.dispose()


@pytest.mark.postgres
def test_a_batch_picked_as_a_deadlock_victim_is_run_again(
    pg_url: str, pg_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    factory = pg_factory
    first, second = sorted((make_tenant(factory) for _ in range(2)), key=lambda t: t.enterprise_id)
    batcher = SubmitBatcher(factory, weights=brokering.Weights(), workspace=None)
    items = [
        intake.Submission(
            t.member, t.p2, spec(), None, intake.prepare(spec(), None, max_script_bytes=4096)
        )
        for t in (first, second)
    ]
    # Another transaction holds the second enterprise's row; the batch locks the first's
    # and waits for it; then the other asks for the first's: a cycle.
    other = _lock_balance(pg_url, second.enterprise_id)
    answers: list[object] = []
    writer = threading.Thread(target=lambda: answers.extend(batcher._write(items)))
    with caplog.at_level(logging.WARNING, logger="broker.api.batching"):
        writer.start()
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as watch:
            for _ in range(100):  # the batch waits for the second enterprise's row
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()
                if waiting and waiting[0] >= 1:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the batch never waited for the locked row")
        other.execute(
            "SELECT id FROM balance WHERE enterprise_id = %s AND project_id IS NULL FOR UPDATE",
            (first.enterprise_id,),
        )  # granted once the batch, the victim, rolled back
        other.commit()
        other.close()
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert [getattr(a, "error", None) for a in answers] == [None, None]
    assert [getattr(a, "created", None) for a in answers] == [True, True]
    assert any("deadlock victim" in r.getMessage() for r in caplog.records)
    with session_scope(factory) as s:
        for t in (first, second):
            assert ledger.check_invariants(s, t.enterprise_id) == []
            assert s.query(Job).filter_by(enterprise_id=t.enterprise_id).count() == 1


@pytest.mark.postgres
def test_the_writer_keeps_its_connection_and_replaces_one_the_server_dropped(
    pg_url: str, pg_factory: sessionmaker[Session]
) -> None:
    """The batch writer keeps one connection from batch to batch; when the server drops
    it, that batch fails (nothing of it written) and the next one runs on a new one."""
    factory = pg_factory
    t = make_tenant(factory)
    batcher = SubmitBatcher(factory, weights=brokering.Weights(), workspace=None)

    def batch() -> list[object]:
        item = intake.Submission(
            t.member, t.p2, spec(), None, intake.prepare(spec(), None, max_script_bytes=4096)
        )
        return [a.error for a in batcher._write([item])]

    def writer_pid() -> int:
        """The writer's connection's backend (and that connection left idle)."""
        connection = batcher._connection
        assert connection is not None
        pid = int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        connection.rollback()
        return pid

    assert batch() == [None]
    pid = writer_pid()
    assert batch() == [None] and writer_pid() == pid  # the same connection
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    with pytest.raises(OperationalError):
        batch()
    assert batcher._connection is None
    assert batch() == [None] and writer_pid() != pid
    with session_scope(factory) as s:
        assert s.query(Job).filter_by(enterprise_id=t.enterprise_id).count() == 3
        assert ledger.check_invariants(s, t.enterprise_id) == []
    batcher.close()
    assert batcher._connection is None


_SETTINGS = ("plan_cache_mode", "enable_seqscan")


@pytest.mark.postgres
def test_the_writers_connections_plan_once_and_look_jobs_up_by_index(pg_url: str) -> None:
    """``writer_engine``'s transactions plan each prepared statement once (generic
    plans) and scan a table only where no index answers: the Idempotency-Key lookup goes
    through the unique index even on an empty ``job`` table (truncated here), where a
    scan looks cheapest and the plan would be kept as the table grows."""
    engine = writer_engine(pg_url)
    query = intake._keys(True).compile(dialect=engine.dialect).string
    params = {"projects": [uuid.uuid4()] * 8, "keys": [f"k{i}" for i in range(8)]}
    with engine.connect() as conn:
        show = [conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in _SETTINGS]
        assert show == ["force_generic_plan", "off"]  # in the writer's transaction
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cur.execute("EXPLAIN " + query, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
        conn.commit()
        # ... and only there (SET LOCAL): a pooler may give the connection to another
        for name, default in zip(_SETTINGS, ("auto", "on"), strict=True):
            cur.execute(f"SHOW {name}")
            assert cur.fetchone() == (default,)
    assert "uq_job_project_id_idempotency_key" in plan and "Seq Scan on job" not in plan, plan
    engine.dispose()


@pytest.mark.postgres
def test_a_stored_key_found_by_the_insert_is_answered_as_a_replay(
    pg_factory: sessionmaker[Session],
) -> None:
    """The PostgreSQL writer looks Idempotency-Keys up only when its insert meets a
    stored one: that batch is rolled back and run again with the lookup, and each item
    gets the answer it would have had (a replay, a new job, a 422 for another body
    under a used key), on the same connection."""
    factory = pg_factory
    t = make_tenant(factory)
    batcher = SubmitBatcher(factory, weights=brokering.Weights(), workspace=None)

    def item(key: str, name: str = "b") -> intake.Submission:
        req = spec(name=name)
        return intake.Submission(
            t.member, t.p2, req, key, intake.prepare(req, key, max_script_bytes=4096)
        )

    [first] = batcher._write([item("k1")])
    assert first.created and first.body is not None
    assert batcher.looked_up == 0  # no key was looked up: none was stored
    connection = batcher._connection
    answers = batcher._write([item("k2"), item("k1"), item("k1", name="other"), item("k3")])
    assert [(a.created, type(a.error).__name__) for a in answers] == [
        (True, "NoneType"),
        (False, "NoneType"),
        (False, "IdempotencyMismatch"),
        (True, "NoneType"),
    ]
    assert answers[1].body is not None
    assert json.loads(answers[1].body)["id"] == json.loads(first.body)["id"]
    assert batcher.looked_up == 1
    assert batcher._connection is connection  # kept: the database's refusal, not a fault
    with session_scope(factory) as s:
        keys = s.scalars(select(Job.idempotency_key).where(Job.enterprise_id == t.enterprise_id))
        assert sorted(k or "" for k in keys) == ["k1", "k2", "k3"]
        assert ledger.check_invariants(s, t.enterprise_id) == []
    batcher.close()


class _RoundTrips:
    """A TCP relay between a client and PostgreSQL that counts the server's
    ReadyForQuery messages: one ends each round trip (a simple query's, or a pipeline's
    Sync), so their count is the number of times the client waited for the server."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.ready = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        pending = b""
        try:
            while data := src.recv(65536):
                if count:  # counted before the client can read it
                    pending = self._count(pending + data)
                dst.sendall(data)
        except OSError:  # the other side went away
            pass
        finally:
            dst.close()

    def _count(self, pending: bytes) -> bytes:
        """Count the whole messages in ``pending``; what is left of it."""
        while len(pending) >= 5:  # a message: its type byte, then its length (int32)
            size = 1 + int.from_bytes(pending[1:5], "big")
            if len(pending) < size:
                break
            self.ready += pending[0] == ord("Z")
            pending = pending[size:]
        return pending

    def close(self) -> None:
        self.listener.close()


def _items(t: Tenant, n: int) -> list[intake.Submission]:
    req = spec()
    return [
        intake.Submission(
            t.member, t.p2, req, uuid.uuid4().hex, intake.prepare(req, None, max_script_bytes=4096)
        )
        for _ in range(n)
    ]


@pytest.mark.postgres
def test_a_batch_of_the_writer_is_two_round_trips(pg_url: str, tmp_path: Path) -> None:
    """On ``writer_engine`` a batch of known projects is two round trips: its BEGIN (and
    planner settings) with the lock, its writes with the COMMIT (it was four: BEGIN,
    lock, writes, COMMIT). A statement run between a write and the COMMIT sees the
    write, and what a batch wrote is committed (read from another connection)."""
    url = make_url(pg_url)
    relay = _RoundTrips(url.host or "127.0.0.1", url.port or 5432)
    relayed = url.set(
        host="127.0.0.1", port=relay.port, query={"sslmode": "disable", "gssencmode": "disable"}
    )
    for plain in _factory(pg_url, tmp_path):
        t = make_tenant(plain)
        engine = writer_engine(relayed.render_as_string(hide_password=False))
        batcher = SubmitBatcher(
            make_session_factory(engine), weights=brokering.Weights(), workspace=None
        )
        batcher._routes = SnapshotCache(ttl_s=3600)  # routing read once (then every 0.5 s)
        batcher._write(_items(t, 1))  # routing read, the project's enterprise learnt
        counts = []
        for n in (1, 1, 1, 1, 1, 1, 8, 8):  # psycopg prepares a statement at its 5th run
            before = relay.ready
            answers = batcher._write(_items(t, n))
            assert [a.error for a in answers] == [None] * n
            counts.append(relay.ready - before)
        assert counts == [2] * 8
        with session_scope(plain) as s:  # committed, every job with its HOLD
            assert s.query(Job).filter_by(enterprise_id=t.enterprise_id).count() == 1 + 6 + 16
            assert ledger.check_invariants(s, t.enterprise_id) == []
        # A read between a write and the COMMIT is sent after the write, and sees it.
        with make_session_factory(engine)() as s:
            ids = bulk.fetch(
                s, ledger._lock_batch(True, ()), {"ids": [t.enterprise_id], "projects": [t.p2]}
            )
            held = ids[0][11]
            bulk.write(s, [], [(Balance, [{"id": ids[0][7], "held_units": held + 5}])])
            read = s.execute(
                text("SELECT held_units FROM balance WHERE id = :id"), {"id": ids[0][7]}
            ).scalar_one()
            assert read == held + 5
            s.rollback()
        with session_scope(plain) as s:  # rolled back: nothing of it kept
            assert ledger.check_invariants(s, t.enterprise_id) == []
        batcher.close()
        engine.dispose()
    relay.close()
