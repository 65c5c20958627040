"""Natural batching of submissions: one transaction and one commit per batch.

Who owns a transaction, and when it commits (the one place this is written down):

- ``POST /projects/{id}/jobs``: this module. Each API process keeps one queue of
  submissions that passed ``intake.prepare``, whatever their enterprise, and at most
  one writer. A request that finds no writer starts one; the writer takes *everything*
  queued (no timer: a batch is one submission when the broker is idle and grows with
  the load), runs ``intake.accept`` in one transaction of its own (each enterprise's
  balance rows locked once, enterprises in id order; ``BEGIN IMMEDIATE`` on SQLite),
  commits, and only then answers each request with its own 202, 409 or 422. A 202 is
  never sent for a row that is not durable (``synchronous_commit`` stays on); a batch
  that fails to commit answers every one of its requests with the error (503 for a
  database outage), and nothing of it is written. A batch that PostgreSQL chose as a
  deadlock's victim (another transaction locking several enterprises in another
  order) is run once more before it fails.
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
import uuid
from collections.abc import Sequence

import anyio
import anyio.to_thread
from psycopg.errors import DeadlockDetected
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..models import Job
from ..schemas.jobs import JobCreate
from ..services import brokering, intake, workspaces
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


class SubmitBatcher:
    """One queue and at most one writer per process; see the module."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        weights: brokering.Weights,
        workspace: workspaces.WorkspaceConfig | None,
        writers: int = 8,
    ) -> None:
        self._factory = factory
        self._weights = weights
        self._workspace = workspace
        self._routes = SnapshotCache()  # routing from memory (``services.snapshot_cache``)
        self._queue: list[_Queued] = []
        self._writer: asyncio.Task[None] | None = None
        # Writers run on threads of their own: never waiting for the request threadpool
        # while they hold a balance lock.
        self._limiter = anyio.CapacityLimiter(writers)
        self.batches = 0
        self.largest_batch = 0

    async def submit(
        self,
        principal: Principal,
        project_id: uuid.UUID,
        req: JobCreate,
        idempotency_key: str | None,
        prepared: intake.Prepared,
    ) -> Answer:
        item = intake.Submission(principal, project_id, req, idempotency_key, prepared)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._queue.append((item, future))
        if self._writer is None:
            self._writer = loop.create_task(self._drain())
        # A client that goes away does not cancel its submission: the batch it is in
        # commits, or not, for every request in it alike.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while batch := self._queue:
                self._queue = []
                self.batches += 1
                self.largest_batch = max(self.largest_batch, len(batch))
                try:
                    answers = await anyio.to_thread.run_sync(
                        self._write, [item for item, _ in batch], limiter=self._limiter
                    )
                except Exception as exc:
                    answers = [Answer(None, False, exc)] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            # No await between the empty queue and here: nothing was queued meanwhile.
            self._writer = None

    def _write(self, items: Sequence[intake.Submission]) -> list[Answer]:
        """One transaction for the batch: accept, commit, then the answers' JSON."""
        try:
            outcomes = self._accept(items)
        except OperationalError as exc:
            if not isinstance(exc.orig, DeadlockDetected):
                raise
            log.warning("submission batch of %d chosen as a deadlock victim: run again", len(items))
            outcomes = self._accept(items)
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

    def _accept(self, items: Sequence[intake.Submission]) -> list[intake.Outcome]:
        with self._factory() as session:
            try:
                outcomes = intake.accept(
                    session,
                    items,
                    weights=self._weights,
                    workspace=self._workspace,
                    routes=self._routes,
                )
                session.commit()
            except BaseException:
                session.rollback()
                raise
        return outcomes
