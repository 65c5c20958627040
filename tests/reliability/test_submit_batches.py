"""The batched accept path under faults: kill -9 of an API process mid-load, and a
token revoked while every API process holds it in its cache.

kill -9: 16 clients submit back to back (each API process batches what is queued, so
a batch is in flight nearly all the time) while `brokerctl api` is SIGKILLed, three
times. Every 202 a client saw has its job, HOLD, audit row and outbox event; every job
in the database has all four (nothing half-written); the ledger's invariants hold.

Revocation: a token used on both of `brokerctl api --workers 2`'s processes, then
revoked from another process (as `brokerctl token revoke` does), is refused by every
API process within a second.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from broker.db import make_engine, make_session_factory, session_scope
from broker.models import AuditEvent, EntryKind, Job, JobEvent, LedgerEntry
from broker.services import ledger, tokens
from broker.services.principal import SYSTEM
from broker.units import pfh_to_units

from .._submit_load import LoadTenant, api_processes, make_tenants

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _tenant(db_url: str) -> LoadTenant:
    return make_tenants(db_url, 1, pfh_to_units(1000), prefix="kill")[0]


def _submit_until_dead(
    base: str, project: str, token: str, seen: dict[str, str], clients: int = 16
) -> threading.Event:
    """Start ``clients`` threads submitting back to back; each 202's key -> job id goes
    into ``seen``. Returns an event set once 50 were accepted."""
    warm = threading.Event()
    lock = threading.Lock()
    body = {"name": "k", "script": "true", "nodes": 1, "time_limit_minutes": 1}

    def client() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            while True:
                key = uuid.uuid4().hex
                try:
                    r = c.post(
                        f"/projects/{project}/jobs", json=body, headers={"Idempotency-Key": key}
                    )
                except httpx.TransportError:
                    return  # the process is gone
                if r.status_code == 202:
                    with lock:
                        seen[key] = r.json()["id"]
                        if len(seen) % 50 == 0:
                            warm.set()

    for _ in range(clients):
        threading.Thread(target=client, daemon=True).start()
    return warm


def test_kill9_during_batches_keeps_every_202_whole(pg_url: str, tmp_path: Path) -> None:
    t = _tenant(pg_url)
    ent, project = t.enterprise_id, t.project
    seen: dict[str, str] = {}
    for _ in range(3):
        before = len(seen)
        with api_processes(pg_url, tmp_path) as (proc, root):
            warm = _submit_until_dead(f"{root}/api/v1", project, t.token, seen)
            assert warm.wait(60)
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.5)  # clients see the dead connection and stop
        assert len(seen) > before
    engine = make_engine(pg_url)
    with session_scope(make_session_factory(engine)) as s:
        jobs = {str(j.id): j for j in s.scalars(select(Job).where(Job.enterprise_id == ent))}
        for key, job_id in seen.items():
            assert job_id in jobs and jobs[job_id].idempotency_key == key
        holds = set(
            s.scalars(
                select(LedgerEntry.job_id).where(
                    LedgerEntry.enterprise_id == ent, LedgerEntry.kind == EntryKind.HOLD
                )
            )
        )
        audited = set(
            s.scalars(
                select(AuditEvent.target_id).where(
                    AuditEvent.enterprise_id == ent, AuditEvent.action == "job.submit"
                )
            )
        )
        events = set(
            s.scalars(select(JobEvent.job_id).where(JobEvent.project_id == uuid.UUID(project)))
        )
        # Every job, seen by its client or not, is whole; nothing else was written.
        assert {str(h) for h in holds} == set(jobs)
        assert audited == set(jobs)
        assert {str(e) for e in events} == set(jobs)
        n_events = s.scalar(
            select(func.count())
            .select_from(JobEvent)
            .where(JobEvent.project_id == uuid.UUID(project))
        )
        assert n_events == len(jobs)
        assert ledger.check_invariants(s, ent) == []
    engine.dispose()
    print(f"202s seen: {len(seen)}, jobs stored: {len(jobs)}")


def test_revoked_token_is_refused_within_a_second_on_every_process(
    pg_url: str, tmp_path: Path
) -> None:
    t = _tenant(pg_url)

    def code() -> int:
        # A new connection each time: the kernel spreads them over both processes.
        with httpx.Client(timeout=10) as c:
            auth = {"Authorization": f"Bearer {t.token}"}
            return c.get(f"{root}/api/v1/me", headers=auth).status_code

    with api_processes(pg_url, tmp_path, workers=2) as (_, root):
        assert [code() for _ in range(40)] == [200] * 40  # cached on both processes
        with httpx.Client(timeout=10) as c:
            auth = {"Authorization": f"Bearer {t.token}"}
            url = f"{root}/api/v1/projects/{t.project}/jobs"
            job = {"name": "r", "script": "true", "nodes": 1, "time_limit_minutes": 1}
            assert {c.post(url, json=job, headers=auth).status_code for _ in range(4)} == {202}
        engine = make_engine(pg_url)
        with session_scope(make_session_factory(engine)) as s:  # another process's revoke
            tokens.revoke_token(s, SYSTEM, t.token_id)
        revoked_at = time.monotonic()
        engine.dispose()
        time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
        assert [code() for _ in range(40)] == [401] * 40
        job = {"name": "r", "script": "true", "nodes": 1, "time_limit_minutes": 1}
        with httpx.Client(timeout=10) as c:  # submissions too (their lean path's cache)
            auth = {"Authorization": f"Bearer {t.token}"}
            url = f"{root}/api/v1/projects/{t.project}/jobs"
            assert {c.post(url, json=job, headers=auth).status_code for _ in range(20)} == {401}
