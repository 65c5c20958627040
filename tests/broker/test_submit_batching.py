"""Every rule of a submission holds when submissions are accepted in batches.

``intake.accept`` takes a batch of submissions, of one enterprise or several, in one
transaction (each enterprise's rows locked once, one flush). A batch must answer each
item exactly as the same submissions one by one would, in arrival order: the tests run
the same sequence both ways, on SQLite and on PostgreSQL, and compare every answer and
the ledger they leave. Then the batcher itself, in process: 100 concurrent submissions
against a quota for 20 form batches and accept exactly 20; and the lean submit path
answers as the route does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from broker.api.batching import WRITER_THREAD, Answer, SubmitBatcher
from broker.app import create_app
from broker.config import Settings, load_clusters_file
from broker.db import make_engine, make_session_factory, session_scope
from broker.errors import BrokerError
from broker.models import (
    AuditEvent,
    EnterpriseStatus,
    EntryKind,
    Job,
    JobDependency,
    JobEvent,
    JobIO,
    JobTask,
    LedgerEntry,
    Role,
)
from broker.schemas.jobs import JobCreate
from broker.services import (
    brokering,
    clusters,
    intake,
    jobs,
    ledger,
    projects,
    tenants,
    tokens,
    workspaces,
)
from broker.services.principal import SYSTEM, Principal
from broker.units import pfh_to_units

from .._submit_load import write_clusters

HOLD_PFH = 0.001  # 1 node x 60 min x 1 TFLOP/s
RATE_MFLOPS = 1_000_000
NO_SUCH_JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")


@dataclass
class Tenant:
    enterprise_id: uuid.UUID
    p1: uuid.UUID  # allocation: two 1-node holds
    p2: uuid.UUID  # no allocation
    member: Principal
    other_project: uuid.UUID  # another enterprise's


def _factory(db_url: str, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        clusters.sync_config(s, load_clusters_file(write_clusters(tmp_path)))
    yield factory
    engine.dispose()


@pytest.fixture
def factory(db_url: str, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    yield from _factory(db_url, tmp_path)


def make_tenant(
    factory: sessionmaker[Session],
    *,
    grant_jobs: int = 1000,
    cap_nodes: int | None = None,
    p1_jobs: int = 2,
) -> Tenant:
    with session_scope(factory) as s:
        ent = tenants.create_enterprise(
            s,
            SYSTEM,
            name=f"batch-{uuid.uuid4().hex[:6]}",
            capacity_cap_mflops=None if cap_nodes is None else cap_nodes * RATE_MFLOPS,
        )
        ledger.grant(s, SYSTEM, ent.id, pfh_to_units(HOLD_PFH * grant_jobs), "jobs")
        p1 = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="p1")
        p2 = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="p2")
        for p in (p1, p2):
            projects.approve_project(s, SYSTEM, p.id)
        s.flush()
        ledger.allocate(s, SYSTEM, p1, pfh_to_units(HOLD_PFH * p1_jobs))
        tok, _ = tokens.create_token(s, SYSTEM, name="m", role=Role.MEMBER, enterprise_id=ent.id)
        other = tenants.create_enterprise(s, SYSTEM, name=f"other-{uuid.uuid4().hex[:6]}")
        op = projects.create_project(s, SYSTEM, enterprise_id=other.id, name="o")
        projects.approve_project(s, SYSTEM, op.id)
        member = Principal(tok.id, "m", Role.MEMBER, ent.id)
        return Tenant(ent.id, p1.id, p2.id, member, op.id)


def spec(**kw: Any) -> JobCreate:
    body = {"name": "b", "script": "true", "nodes": 1, "time_limit_minutes": 60, **kw}
    return JobCreate.model_validate(body)


def _answer(out: intake.Outcome) -> tuple[str, ...]:
    """What a client would see: accepted (new or replayed), or the error and its text."""
    if out.error is not None:
        return (type(out.error).__name__, str(out.error))
    assert out.job is not None
    return ("created" if out.created else "replayed", out.job.cluster)


def run(
    factory: sessionmaker[Session],
    items: Sequence[tuple[Principal, uuid.UUID, JobCreate, str | None]],
    *,
    batched: bool,
    workspace: workspaces.WorkspaceConfig | None = None,
) -> list[intake.Outcome]:
    """The submissions as one batch (one transaction), or one transaction each."""
    subs = [
        intake.Submission(who, pid, req, key, intake.prepare(req, key, max_script_bytes=4096))
        for who, pid, req, key in items
    ]
    groups = [subs] if batched else [[s] for s in subs]
    outcomes: list[intake.Outcome] = []
    for group in groups:
        with session_scope(factory) as s:
            outcomes += intake.accept(s, group, workspace=workspace)
    return outcomes


def ledger_state(factory: sessionmaker[Session], t: Tenant) -> dict[str, Any]:
    with session_scope(factory) as s:
        assert ledger.check_invariants(s, t.enterprise_id) == []
        bal = ledger.balance(s, SYSTEM, t.enterprise_id)
        p1 = ledger.project_balance(s, projects.project_or_404(s, t.p1))
        holds = s.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.enterprise_id == t.enterprise_id, LedgerEntry.kind == EntryKind.HOLD)
        )
        return {"held": bal.held_units, "p1_held": p1.held_units, "holds": holds}


def test_quota_for_20_accepts_the_first_20_of_100_in_one_batch(
    factory: sessionmaker[Session],
) -> None:
    t = make_tenant(factory, grant_jobs=20, p1_jobs=1000)
    items = [(t.member, t.p2, spec(), f"k{i}") for i in range(100)]
    outs = run(factory, items, batched=True)
    assert [o.error is None for o in outs] == [True] * 20 + [False] * 80
    assert {type(o.error).__name__ for o in outs[20:]} == {"QuotaExceeded"}
    assert ledger_state(factory, t)["holds"] == 20


def test_same_key_twice_in_one_batch_makes_one_job(factory: sessionmaker[Session]) -> None:
    t = make_tenant(factory)
    items = [
        (t.member, t.p2, spec(), "same"),
        (t.member, t.p2, spec(), "same"),  # same body: the same job
        (t.member, t.p2, spec(name="other"), "same"),  # another body: 422
        (t.member, t.p1, spec(), "same"),  # keys are per project: a new job
    ]
    outs = run(factory, items, batched=True)
    assert outs[0].created and outs[1].job is outs[0].job and not outs[1].created
    assert type(outs[2].error).__name__ == "IdempotencyMismatch"
    assert outs[3].created and outs[3].job is not outs[0].job
    with session_scope(factory) as s:
        keyed = s.scalars(select(Job).where(Job.enterprise_id == t.enterprise_id)).all()
        assert sorted(j.project_id == t.p1 for j in keyed) == [False, True]
    assert ledger_state(factory, t)["holds"] == 2
    # A replay in a later batch is answered from the stored job.
    again = run(factory, items[:1], batched=True)
    assert again[0].job is not None and again[0].job.id == outs[0].job.id  # type: ignore[union-attr]
    assert not again[0].created


def _every_rule(t: Tenant) -> list[tuple[Principal, uuid.UUID, JobCreate, str | None]]:
    """A sequence that meets each rule at least once, refusals between acceptances
    (capacity cap: 4 nodes; p1's allocation: two 1-node holds)."""
    m = t.member
    return [
        (m, t.p1, spec(), "a"),  # accepted: p1 holds 1 of its 2, 1 node in use
        (m, t.other_project, spec(), None),  # another enterprise's project: 404
        (m, t.p2, spec(inputs=["missing.dat"]), None),  # 422 inputs[0]
        (m, t.p2, spec(callback_url="http://127.0.0.1:9/x"), None),  # 422 callback_url
        (m, t.p1, spec(), "b"),  # accepted: p1's allocation is used up, 2 nodes in use
        (m, t.p1, spec(), "c"),  # 409: the project's allocation
        (m, t.p1, spec(), "a"),  # replay of "a" (the same job, not a refusal)
        (m, t.p2, spec(depends_on=[{"job_id": str(NO_SUCH_JOB)}]), None),  # 422
        (m, t.p2, spec(nodes=2), "d"),  # accepted: 4 nodes in use, the cap
        (m, t.p2, spec(), "e"),  # capacity cap: no partition fits (422 naming nodes)
        (m, t.p2, spec(nodes=9), None),  # routing: 422 naming nodes
        (m, t.p2, spec(script="x" * 5000), None),  # 422 script (prepare's, in its turn)
        (m, t.p2, spec(array="0-3%2"), None),  # capacity: two tasks at once, 2 nodes
    ]


def test_a_batch_answers_each_item_as_one_at_a_time_would(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cfg = workspaces.WorkspaceConfig(tmp_path / "ws", 1 << 20)
    both = []
    for batched in (False, True):
        t = make_tenant(factory, cap_nodes=4)
        outs = run(factory, _every_rule(t), batched=batched, workspace=cfg)
        both.append(([_answer(o) for o in outs], ledger_state(factory, t)))
    (one_by_one, ledger_a), (batch, ledger_b) = both
    assert batch == one_by_one
    hold = pfh_to_units(HOLD_PFH)
    assert ledger_a == ledger_b == {"held": 4 * hold, "p1_held": 2 * hold, "holds": 3}
    assert [a[0] for a in batch] == [
        "created",
        "NotFound",
        "InvalidInput",
        "InvalidInput",
        "created",
        "QuotaExceeded",
        "replayed",
        "InvalidInput",
        "created",
        "InvalidInput",
        "InvalidInput",
        "InvalidInput",
        "InvalidInput",
    ]
    assert "allocation" in batch[5][1]
    fields = [a[1].split(":")[0] for a in batch if a[0] == "InvalidInput"]
    assert fields == [
        "inputs[0]",
        "callback_url",
        "depends_on[0].job_id",
        "nodes",
        "nodes",
        "script",
        "nodes",
    ]
    assert "capacity cap" in batch[9][1] and "capacity cap" in batch[12][1]


def test_one_batch_of_three_enterprises_keeps_each_ones_rules(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The batcher takes whatever is queued, of any enterprise: three enterprises'
    sequences interleaved in one batch get, item by item, the answers each sequence
    gets alone one at a time, and each enterprise's ledger is the same."""
    cfg = workspaces.WorkspaceConfig(tmp_path / "ws", 1 << 20)
    alone = []
    for _ in range(3):
        t = make_tenant(factory, cap_nodes=4)
        outs = run(factory, _every_rule(t), batched=False, workspace=cfg)
        alone.append(([_answer(o) for o in outs], ledger_state(factory, t)))
    ts = [make_tenant(factory, cap_nodes=4) for _ in range(3)]
    rules = [_every_rule(t) for t in ts]
    mixed = [item for row in zip(*rules, strict=True) for item in row]
    outs = run(factory, mixed, batched=True, workspace=cfg)
    for i, t in enumerate(ts):
        answers = [_answer(o) for o in outs[i::3]]
        assert (answers, ledger_state(factory, t)) == alone[i]
    assert [a[0] for a in alone[0][0]].count("created") == 3


def _os_thread_names() -> list[str]:
    """This process's threads as the OS names them (/proc's comm); one that ends
    meanwhile is left out."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):
            names.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
    return names


def test_the_writer_thread_bears_its_name_to_the_os(factory: sessionmaker[Session]) -> None:
    """``top -H`` and benchmarks/submit_load.py tell the writer's CPU from the event
    loop's by the thread's OS name; it is there while the writer runs, and gone after
    ``close``."""
    t = make_tenant(factory)
    batcher = SubmitBatcher(factory, weights=brokering.Weights(), workspace=None)
    prepared = intake.prepare(spec(), None, max_script_bytes=4096)
    assert WRITER_THREAD not in _os_thread_names()

    async def submit() -> Answer:
        return await batcher.submit(t.member, t.p2, spec(), None, prepared)

    answer = asyncio.run(submit())
    assert answer.error is None and answer.created
    assert _os_thread_names().count(WRITER_THREAD) == 1
    batcher.close()
    # joined in Python; the OS thread ends just after
    deadline = time.monotonic() + 5
    while WRITER_THREAD in _os_thread_names() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert WRITER_THREAD not in _os_thread_names()


def test_arrays_dependencies_io_audit_and_outbox_in_one_batch(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    t = make_tenant(factory)
    first = run(factory, [(t.member, t.p2, spec(), "parent")], batched=True)[0]
    assert first.job is not None
    parent = first.job.id
    items = [
        (t.member, t.p2, spec(array="0-3%2"), "arr"),
        (t.member, t.p2, spec(depends_on=[{"job_id": str(parent)}]), "dep"),
        (t.member, t.p2, spec(outputs=["*.out"]), "io"),
        (t.member, t.p2, spec(nodes=9), "bad"),
    ]
    cfg = workspaces.WorkspaceConfig(tmp_path / "ws", 1 << 20)
    outs = run(factory, items, batched=True, workspace=cfg)
    assert [o.created for o in outs] == [True, True, True, False]
    arr, dep, io = (o.job for o in outs[:3])
    assert arr is not None and dep is not None and io is not None
    with session_scope(factory) as s:
        ids = [arr.id, dep.id, io.id]
        tasks = s.scalars(select(JobTask.index).where(JobTask.job_id == arr.id)).all()
        assert sorted(tasks) == [0, 1, 2, 3]
        assert s.scalars(
            select(JobDependency.parent_id).where(JobDependency.job_id == dep.id)
        ).all() == [parent]
        assert s.get(JobIO, io.id) is not None and s.get(JobIO, dep.id) is None
        for job_id in ids:
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(LedgerEntry)
                    .where(LedgerEntry.job_id == job_id, LedgerEntry.kind == EntryKind.HOLD)
                )
                == 1
            )
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(AuditEvent.action == "job.submit", AuditEvent.target_id == str(job_id))
                )
                == 1
            )
            assert (
                s.scalar(
                    select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)
                )
                == 1
            )
        assert (
            s.scalar(
                select(func.count()).select_from(Job).where(Job.enterprise_id == t.enterprise_id)
            )
            == 4
        )


def test_a_suspended_enterprise_refuses_the_whole_batch(factory: sessionmaker[Session]) -> None:
    t = make_tenant(factory)
    run(factory, [(t.member, t.p2, spec(), "before")], batched=True)
    with session_scope(factory) as s:
        tenants.set_status(s, SYSTEM, t.enterprise_id, EnterpriseStatus.SUSPENDED)
    outs = run(
        factory,
        [(t.member, t.p2, spec(), f"k{i}") for i in range(3)]
        + [(t.member, t.p2, spec(), "before")],
        batched=True,
    )
    assert [_answer(o)[0] for o in outs] == ["Conflict"] * 3 + ["replayed"]


def test_jobs_submit_is_a_batch_of_one(factory: sessionmaker[Session]) -> None:
    t = make_tenant(factory, grant_jobs=1)
    with session_scope(factory) as s:
        res = jobs.submit(s, t.member, t.p2, spec(), idempotency_key="x", max_script_bytes=100)
        assert res.created
    with session_scope(factory) as s, pytest.raises(BrokerError) as exc:
        jobs.submit(s, t.member, t.p2, spec(name="2"), idempotency_key="y", max_script_bytes=100)
    assert type(exc.value).__name__ == "QuotaExceeded"


@dataclass
class Served:
    app: Any
    tenant: Tenant
    token: str
    factory: sessionmaker[Session]


def _served(tmp_path: Path, **tenant: Any) -> Served:
    """The app on SQLite (the embedded default), in process, and a member's token."""
    from broker import migrate

    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    migrate.upgrade(db_url)
    factory = next(_factory(db_url, tmp_path))
    t = make_tenant(factory, **tenant)
    with session_scope(factory) as s:
        _, token = tokens.create_token(
            s, SYSTEM, name="m2", role=Role.MEMBER, enterprise_id=t.enterprise_id
        )
    settings = Settings(
        database_url=db_url,
        clusters_file=tmp_path / "clusters.toml",
        worker_enabled=False,
        rate_limit_per_minute=0,
        data_dir=tmp_path / "data",
    )
    return Served(create_app(settings, run_worker=False, sync_clusters=False), t, token, factory)


def test_concurrent_http_submissions_form_batches_and_accept_exactly_20(tmp_path: Path) -> None:
    """In process (SQLite, the embedded default): 100 requests at once through the
    batcher against a quota for 20."""
    srv = _served(tmp_path, grant_jobs=20, p1_jobs=1000)
    t, token, app = srv.tenant, srv.token, srv.app

    async def race() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"name": "r", "script": "true", "nodes": 1, "time_limit_minutes": 60}
            return await asyncio.gather(
                *(
                    c.post(
                        f"/api/v1/projects/{t.p2}/jobs",
                        json=body,
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{i}"},
                    )
                    for i in range(100)
                )
            )

    responses = asyncio.run(race())
    codes = [r.status_code for r in responses]
    assert codes.count(202) == 20 and codes.count(409) == 80, codes
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"QuotaExceeded"}
    batcher = app.state.submit_batcher
    assert batcher.largest_batch > 1 and batcher.batches < 100, vars(batcher)
    assert ledger_state(srv.factory, t)["holds"] == 20


def test_the_lean_submit_path_answers_as_the_route_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the token is cached, submissions skip FastAPI's middleware and routing
    (``submit_path``):
    the same 202 body and headers, the same errors; a body the model refuses, a token
    not cached or no token at all are answered by the route itself."""
    from broker.api import submit_path

    lean = 0
    submit = submit_path.SubmitFront._submit

    async def counted(self: Any, *args: Any) -> None:
        nonlocal lean
        lean += 1
        await submit(self, *args)

    monkeypatch.setattr(submit_path.SubmitFront, "_submit", counted)
    srv = _served(tmp_path, grant_jobs=3)
    # No lifespan here (ASGITransport), so no refresher: an entry would go stale 0.5 s
    # after the first request read it, and a slow first batch made the next request
    # the route's (a flaky failure under load). What expires a token is tested apart.
    srv.app.state.token_cache.ttl_s = 60
    t = srv.tenant
    auth = {"Authorization": f"Bearer {srv.token}"}
    body = {"name": "r", "script": "true", "nodes": 1, "time_limit_minutes": 60}

    async def go() -> None:
        transport = httpx.ASGITransport(app=srv.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c:

            async def post(
                json: Any = body, key: str | None = None, headers: Any = auth, pid: Any = t.p2
            ) -> httpx.Response:
                extra = {} if key is None else {"Idempotency-Key": key}
                return await c.post(f"/projects/{pid}/jobs", json=json, headers=headers | extra)

            first = await post(key="a")  # the token is read, then cached: the route
            assert first.status_code == 202 and lean == 0
            second = await post(key="b")
            assert second.status_code == 202 and lean == 1
            shown = (await c.get(f"/jobs/{second.json()['id']}", headers=auth)).json()
            assert second.json() == shown
            assert second.headers["content-type"] == "application/json"
            assert "x-request-id" in second.headers  # the app's middleware still ran
            replay = await post(key="b")
            assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
            assert replay.json()["id"] == second.json()["id"]
            mismatch = await post(json=body | {"name": "other"}, key="b")
            assert (mismatch.status_code, mismatch.json()["error"]) == (422, "IdempotencyMismatch")
            gone = await post(pid=t.other_project)
            assert (gone.status_code, gone.json()["error"]) == (404, "NotFound")
            assert (await post()).status_code == 202
            over = await post()  # a quota for 3 jobs
            assert (over.status_code, over.json()["error"]) == (409, "QuotaExceeded")
            served = lean
            bad = await post(json=body | {"nodes": 0})  # the route's 422 names the field
            assert bad.status_code == 422 and bad.json()["detail"].startswith("nodes:")
            assert (await post(headers={})).status_code == 401
            other = {"Authorization": "Bearer nope"}
            assert (await post(headers=other)).status_code == 401
            assert lean == served == 6

    asyncio.run(go())
    assert ledger_state(srv.factory, t)["holds"] == 3


def test_the_submit_front_keeps_the_body_limit_id_and_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The front answers before the app's middleware, so it keeps what that does itself:
    a body over the limit without Content-Length (chunked) gets the app's 413 and makes
    no job; an accepted submission gets its X-Request-ID (the client's, when safe) and
    one access log line."""
    srv = _served(tmp_path)
    app, t = srv.app, srv.tenant
    auth = {"Authorization": f"Bearer {srv.token}"}
    limit = app.state.settings.max_body_bytes

    async def chunks(n: int) -> AsyncIterator[bytes]:
        yield b'{"name": "big", "script": "'
        for _ in range(n):
            yield b"x" * 65536
        yield b'", "nodes": 1, "time_limit_minutes": 5}'

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c:
            url = f"/projects/{t.p2}/jobs"
            body = {"name": "r", "script": "true", "nodes": 1, "time_limit_minutes": 60}
            assert (await c.post(url, json=body, headers=auth)).status_code == 202  # cached
            big = await c.post(
                url,
                content=chunks(limit // 65536 + 2),
                headers=auth | {"Content-Type": "application/json"},
            )
            assert big.status_code == 413 and big.json()["error"] == "PayloadTooLarge"
            assert "content-length" not in big.request.headers  # sent chunked
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="broker.access"):
                ok = await c.post(url, json=body, headers=auth | {"X-Request-ID": "abc-1"})
            assert ok.status_code == 202 and ok.headers["x-request-id"] == "abc-1"
            lines = [r for r in caplog.records if r.name == "broker.access"]
            assert len(lines) == 1 and lines[0].request_id == "abc-1"  # type: ignore[attr-defined]
            assert lines[0].status == 202  # type: ignore[attr-defined]

    asyncio.run(go())
    with session_scope(srv.factory) as s:
        names = s.scalars(select(Job.name).where(Job.enterprise_id == t.enterprise_id)).all()
    assert sorted(names) == ["r", "r"]


@pytest.mark.postgres
def test_idempotency_keys_are_looked_up_in_the_unique_index(pg_url: str, tmp_path: Path) -> None:
    """The stored keys of a batch are found pair by pair in the unique index on
    (project_id, idempotency_key), not by scanning the project's jobs: with 3,000 jobs
    in the project and fresh statistics, the plan of the statement a batch runs."""
    made = _factory(pg_url, tmp_path)
    factory = next(made)
    try:
        _keys_plan_and_rows(factory)
    finally:
        next(made, None)  # the engine disposed


def _keys_plan_and_rows(factory: sessionmaker[Session]) -> None:
    from sqlalchemy import text

    from broker.services.intake import _keys

    t = make_tenant(factory, grant_jobs=10_000)
    items = [(t.member, t.p2, spec(), f"key-{i}") for i in range(3000)]
    assert all(o.error is None for o in run(factory, items, batched=True))
    engine = factory.kw["bind"]
    with engine.connect() as conn:
        conn.execute(text("ANALYZE job"))
        stmt = cast(Select[Any], _keys(True)).compile(dialect=engine.dialect)
        params = stmt.construct_params({"projects": [t.p2, t.p2], "keys": ["key-7", "new"]})
        plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + str(stmt), params).scalars())
        found = conn.exec_driver_sql(str(stmt), params).all()
    assert "uq_job_project_id_idempotency_key" in plan and "Seq Scan on job" not in plan, plan
    assert [row[2] for row in found] == ["key-7"]


def test_token_cache_refresh_keeps_busy_tokens_and_drops_revoked_ones(tmp_path: Path) -> None:
    """The lean path trusts the cache: ``refresh`` (every ttl/2 while the app runs)
    re-reads the tokens in use in one query, drops a revoked one at once and forgets
    one unused for ``idle_s``."""
    from broker.services.token_cache import TokenCache

    srv = _served(tmp_path)
    with session_scope(srv.factory) as s:
        idle_row, idle = tokens.create_token(
            s, SYSTEM, name="idle", role=Role.MEMBER, enterprise_id=srv.tenant.enterprise_id
        )
    cache = TokenCache(ttl_s=60, idle_s=30)
    busy = cache.load(srv.factory, srv.token)
    cache.load(srv.factory, idle)
    cache._used[tokens.hash_token(idle)] -= 31  # unused for longer than idle_s
    cache.refresh(srv.factory)
    assert cache.get(srv.token) == busy and cache.get(idle) is None
    assert busy.token_id is not None
    with session_scope(srv.factory) as s:
        tokens.revoke_token(s, SYSTEM, busy.token_id)  # not through a watched factory
    assert cache.get(srv.token) == busy  # a TTL of 60 s alone would keep it a minute
    cache.refresh(srv.factory)
    assert cache.get(srv.token) is None
    assert idle_row.id != busy.token_id
