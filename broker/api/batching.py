"""Natural batching of submissions: one transaction and one commit per batch.

Who owns a transaction, and when it commits (the one place this is written down):

- ``POST /projects/{id}/jobs``: this module. Each API process keeps one queue of
  submissions that passed ``intake.prepare``, whatever their enterprise, and one
  writer thread with a database connection of its own. Whenever the writer is free it
  takes *everything* queued (no timer: a batch is one submission when the broker is
  idle and grows with the load), runs ``intake.accept`` in one transaction of its own
  (each enterprise's balance rows locked once, enterprises in id order; ``BEGIN
  IMMEDIATE`` on SQLite; on PostgreSQL two round trips: the BEGIN with the lock, the
  writes with the COMMIT, ``bulk.defer_round_trips``), commits, and only then answers
  each request with its own 202, 409 or 422. A 202 is never sent for a row that is not
  durable (``synchronous_commit`` stays on); a batch that fails to commit answers every
  one of its requests with the error (503 for a database outage), and nothing of it is
  written. A batch that PostgreSQL chose as a deadlock's victim (another transaction
  locking several enterprises in another order) is run once more before it fails; one
  whose insert met a stored Idempotency-Key is run again with the keys looked up.
- Every other write request: ``broker.request_db.get_db`` opens the session; a handler
  that takes locks commits itself before it returns, else ``get_db`` commits after it.
- Reads: ``get_db``'s read session, never committed.
- The worker and the CLI: their own ``session_scope`` per unit of work.
- Services never commit.

Replays (same Idempotency-Key and body) are answered from the stored job in the batch
that sees them. Two API processes batch independently; the balance row locks order
their batches.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence

from psycopg.errors import DeadlockDetected
from setproctitle import setthreadtitle
from sqlalchemy import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..db import make_engine
from ..models import Job
from ..observability import SUBMIT_BATCH_JOBS, SUBMIT_BATCH_RERUNS, SUBMIT_BATCH_SECONDS
from ..schemas.jobs import JobCreate
from ..services import brokering, bulk, intake, workspaces
from ..services.principal import Principal
from ..services.snapshot_cache import SnapshotCache
from . import views

log = logging.getLogger(__name__)


class Answer:
    """A submission's answer: the job's JSON (202) or the error to raise."""

    __slots__ = ("body", "created", "error")

    def __init__(
        self, body: bytes | None, created: bool, error: BaseException | None = None
    ) -> None:
        self.body, self.created, self.error = body, created, error


_Queued = tuple[intake.Submission, "asyncio.Future[Answer]"]
_STOP = None
#: The writer thread's name, in Python and to the OS (``top -H``, ``ps -L``, /proc's
#: ``comm``: what ``benchmarks/submit_load.py`` splits an API process's CPU by).
WRITER_THREAD = "submit-batches"


class SubmitBatcher:
    """One queue and one writer thread per process; see the module.

    The writer is a thread of its own, not the request threadpool (it never waits for a
    free thread while it holds a balance lock) nor anyio's worker threads: requests
    reach it through a C ``SimpleQueue``, it takes whatever is queued when it is free,
    and it answers each event loop once per batch (``call_soon_threadsafe``).
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        weights: brokering.Weights,
        workspace: workspaces.WorkspaceConfig | None,
    ) -> None:
        self._factory = factory
        self._engine = _engine_of(factory)
        self._pg = self._engine.dialect.name == "postgresql"
        self._connection: Connection | None = None  # the writer thread's own
        self._weights = weights
        self._workspace = workspace
        self._routes = SnapshotCache()  # routing from memory (``services.snapshot_cache``)
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # starting and stopping the thread
        self.batches = 0
        self.largest_batch = 0
        self.looked_up = 0  # batches run again to look up a stored Idempotency-Key

    async def submit(
        self,
        principal: Principal,
        project_id: uuid.UUID,
        req: JobCreate,
        idempotency_key: str | None,
        prepared: intake.Prepared,
    ) -> Answer:
        item = intake.Submission(principal, project_id, req, idempotency_key, prepared)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if self._thread is None:
            self._start()
        self._queue.put((item, future))
        # A client that goes away does not cancel its submission: it is the writer's
        # now, and the batch it is in commits, or not, for every request in it alike
        # (a cancelled future is left unanswered).
        return await future

    def close(self) -> None:
        """Stop the writer thread once it has written what it was given."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        self._disconnect()  # the thread's, or one a caller of ``_write`` left open

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=WRITER_THREAD, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """The writer thread: everything queued is the next batch (no timer)."""
        setthreadtitle(WRITER_THREAD)
        while (first := self._queue.get()) is not _STOP:
            batch = [first]
            stop = False
            while not self._queue.empty():
                more = self._queue.get_nowait()
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._batch(batch)
            if stop:
                break
        self._disconnect()

    def _batch(self, batch: list[_Queued]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        started = time.perf_counter()
        try:
            answers = self._write([item for item, _ in batch])
        except Exception as exc:
            answers = [Answer(None, False, exc)] * len(batch)
        SUBMIT_BATCH_JOBS.observe(len(batch))
        SUBMIT_BATCH_SECONDS.observe(time.perf_counter() - started)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Answer], Answer]]] = {}
        for (_, future), answer in zip(batch, answers, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, answer))
        for loop, answered in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_results, answered)
            except RuntimeError:  # the loop is closed: nobody waits for these answers
                log.warning("a submission batch ended after its event loop")

    def _write(self, items: Sequence[intake.Submission]) -> list[Answer]:
        """One transaction for the batch: accept, commit, then the answers' JSON.

        The Idempotency-Keys are looked up only when the batch's insert says one is
        stored (a client's retry: rare), on PostgreSQL: the batch runs without the
        lookup, and again with it if its insert met a stored key. A batch that
        PostgreSQL picked as a deadlock's victim runs again too (once)."""
        lookup = not self._pg
        retried = False
        while True:
            try:
                outcomes = self._accept(items, stored_keys=lookup)
                break
            except IntegrityError as exc:
                if lookup or not intake.key_taken(exc):
                    raise
                lookup = True  # a stored key: the lookup answers it (not a retry)
                self.looked_up += 1
                SUBMIT_BATCH_RERUNS.labels("key").inc()
            except OperationalError as exc:
                if retried or not isinstance(exc.orig, DeadlockDetected):
                    raise
                retried = True
                SUBMIT_BATCH_RERUNS.labels("deadlock").inc()
                log.warning(
                    "submission batch of %d chosen as a deadlock victim: run again", len(items)
                )
        answers = []
        for out in outcomes:
            if out.error is not None or out.job is None:
                answers.append(Answer(None, False, out.error))
            elif out.detail is not None:  # a new job: its JSON from its values
                answers.append(Answer(views.job_detail_json(out.detail), out.created))
            else:  # a replay: the stored job
                assert isinstance(out.job, Job)
                body = views.job_detail(out.job, out.io).model_dump_json().encode()
                answers.append(Answer(body, out.created))
        return answers

    def _accept(
        self, items: Sequence[intake.Submission], *, stored_keys: bool = True
    ) -> list[intake.Outcome]:
        """The batch in a session of its own on the writer's connection, which the
        writer keeps from batch to batch (no pool checkout, reset and checkin per
        batch). After an error the database reported (a constraint, a deadlock) it is
        kept, rolled back; after any other, or when the connection was dropped, it is
        closed and the next batch opens another (a dropped connection fails one
        batch)."""
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self._connection = self._engine.connect()
        try:
            with self._factory(bind=connection) as session:
                outcomes = intake.accept(
                    session,
                    items,
                    weights=self._weights,
                    workspace=self._workspace,
                    routes=self._routes,
                    stored_keys=stored_keys,
                )
                session.commit()
        except BaseException as exc:
            # Rolled back by the session's close (and here, for a COMMIT that failed:
            # its transaction is left to the connection); a connection the database
            # dropped (or left in doubt) is not used again.
            if connection.invalidated or not isinstance(exc, DBAPIError):
                self._disconnect()
            else:
                connection.rollback()
            raise
        return outcomes

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()  # rolls back what is left, returns it to the pool
            except Exception:
                log.warning("closing the batch writer's connection failed", exc_info=True)


#: The writer's statements are the same few, prepared by psycopg after five runs, each
#: a lookup by key or an insert of the batch's rows. PostgreSQL plans such a statement
#: again at every run for as long as its "custom" plans look cheaper than one plan for
#: all runs (they did: the batch's size is known to a custom plan, a generic one
#: assumes 10 rows), ~0.1 ms of the server's CPU per statement and batch; and a plan
#: made while a table was small scans it whole until the table is analysed again,
#: which on a new database taking thousands of jobs a second may be a minute away.
#: So the writer's transactions plan each statement once, and never by a scan where an
#: index can answer (``enable_seqscan`` off makes a scan the last resort, not
#: forbidden). Set for the transaction only (``set_config(..., true)``, as ``SET
#: LOCAL``), sent with the BEGIN: nothing outlives the transaction, so a pooler in
#: transaction mode (PgBouncer) hands no other client a connection with these settings.
_PG_BEGIN = (
    "BEGIN",
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true),"
    " set_config('enable_seqscan', 'off', true)",
)


def writer_engine(database_url: str) -> Engine:
    """The engine of the batch writer's connections (one in use; another after an
    error), without a ping per checkout (a round trip per batch: a connection the
    database dropped fails its batch, 503, and is replaced). On PostgreSQL its
    transactions begin with the planner settings above: the driver is left in
    autocommit mode, and each transaction's BEGIN is ours, sent with the transaction's
    first statement, and its writes with its COMMIT (``bulk.defer_round_trips``)."""
    if make_url(database_url).get_backend_name() != "postgresql":
        return make_engine(database_url, pool_pre_ping=False, pool_size=2)
    engine = make_engine(
        database_url, pool_pre_ping=False, pool_size=2, isolation_level="AUTOCOMMIT"
    )

    bulk.defer_round_trips(engine, _PG_BEGIN)
    return engine


def _engine_of(factory: sessionmaker[Session]) -> Engine:
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the batch writer's session factory must be bound to an Engine")
    return bind


def _set_results(answered: list[tuple[asyncio.Future[Answer], Answer]]) -> None:
    """On the event loop: each request its answer."""
    for future, answer in answered:
        if not future.done():
            future.set_result(answer)
