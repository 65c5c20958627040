"""The worker loop: submit accepted jobs, poll live ones, push cancels, refresh clusters.

Each step runs in short transactions of its own so that a crash at any point leaves
the database in a state the next run repairs (see ``services.scheduling``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import scheduler_adapters as sa_

from . import leader, observability
from .config import Settings
from .db import session_scope
from .models import LIVE_STATES, TERMINAL_STATES, Cluster, Job, JobTask
from .services import (
    brokering,
    clusters,
    collection,
    dependencies,
    ledger,
    scheduling,
    slurm_sync,
    staging,
    tenants,
    validation,
    webhooks,
)

log = logging.getLogger(__name__)


@dataclass
class PassStats:
    submitted: int = 0
    adopted: int = 0
    rejected: int = 0
    retried: int = 0
    settled: int = 0
    cancelled: int = 0
    collected: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)

    def bump(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def add(self, other: PassStats) -> None:
        """Count ``other``'s outcomes in (a submitter thread's own stats)."""
        for name, value in vars(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        self.errors += other.errors


#: jobs decided, submitted and recorded together (``Worker.submit_due``)
SUBMIT_ROUND = 32


@dataclass(frozen=True, slots=True)
class _Ready:
    """A job counted as attempted, with what its scheduler is given."""

    job_id: uuid.UUID
    cluster: str
    spec: sa_.JobSpec
    plan: staging.StagePlan | None


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the scheduler answered: its job id, or why not."""

    ready: _Ready
    result: str | sa_.SchedulerError | None  # None: nothing to record


class Worker:
    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        pool: clusters.AdapterPool,
        *,
        refresh_interval_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.pool = pool
        self.refresh_interval_s = refresh_interval_s
        self._last_refresh = 0.0
        self._cancels_sent: set[str] = set()
        # Per cluster: when it is polled next and the gap after an unchanged poll
        # (``poll``); only the running loop backs off (``run_forever``).
        self.poll_backoff = False
        # SQLite has one writer: the submitters take turns here for their short
        # transactions rather than in SQLite's busy handler, which sleeps up to 100 ms.
        sqlite = settings.database_url.startswith("sqlite")
        self._submit_lock: threading.Lock | None = threading.Lock() if sqlite else None
        self._poll_due: dict[str, float] = {}
        self._poll_gap: dict[str, float] = {}

    # -- the loop ---------------------------------------------------------------
    def run_once(self) -> PassStats:
        stats = PassStats()
        if time.monotonic() - self._last_refresh >= self.refresh_interval_s:
            self.refresh_clusters()
        self.submit_due(stats)
        self.push_cancels(stats)
        self.poll(stats)
        self.collect_outputs(stats)
        self.deliver_webhooks()
        return stats

    def deliver_webhooks(self) -> None:
        """Send due webhook deliveries from the outbox (in order per target, with backoff)."""
        webhooks.deliver_due(self.factory, self.settings, scheduling.utcnow())

    def run_forever(self, stop: threading.Event, lock: leader.LeaderLock | None = None) -> None:
        """Loop until ``stop``, working only while this worker holds the leader lock."""
        lock = lock or leader.for_database(self.settings.database_url)
        log.info("worker started", extra={"lock": lock.describe()})
        self.poll_backoff = self.settings.poll_max_interval_s > 0
        waiting, due = False, None
        try:
            while not stop.is_set():
                if not lock.ensure():
                    observability.WORKER_LEADER.set(0)
                    if not waiting:
                        log.info("another worker holds the leader lock; waiting")
                    waiting, due = True, None
                    stop.wait(lock.poll_s)
                    continue
                observability.WORKER_LEADER.set(1)
                waiting, started = False, time.monotonic()
                try:
                    stats = self.run_once()
                except Exception:  # keep the loop alive; the next pass repairs
                    observability.WORKER_PASS_ERRORS.inc()
                    log.exception("worker pass failed")
                else:
                    _record(stats, time.monotonic() - started, started - (due or started))
                due = time.monotonic() + self.settings.worker_interval_s
                stop.wait(self.settings.worker_interval_s)
        finally:
            lock.release()
            observability.WORKER_LEADER.set(0)
        log.info("worker stopped")

    # -- steps ------------------------------------------------------------------
    def refresh_clusters(self) -> None:
        self._last_refresh = time.monotonic()
        with session_scope(self.factory) as s:
            tenants.roll_periods(s, scheduling.utcnow())
        with session_scope(self.factory) as s:  # a new period reaches Slurm at once
            slurm_sync.push_due(s, list(self.pool.configs.values()))
        with session_scope(self.factory) as s:
            names = list(s.scalars(select(Cluster.name).where(Cluster.enabled)))
        for name in names:
            found = clusters.probe(self.pool, name)
            with session_scope(self.factory) as s:
                row = s.scalar(select(Cluster).where(Cluster.name == name))
                if row is not None:
                    clusters.record_probe(s, row, found)

    def submit_due(self, stats: PassStats) -> None:
        """Submit what is due: a pipeline of three steps, each job through all three.

        1. *Decide*, ``SUBMIT_ROUND`` jobs in acceptance order per transaction, under
           their enterprises' quota locks (as an API cancel takes them):
           ``begin_submission`` adopts, cancels, holds, or counts an attempt and builds
           the job's spec.
        2. *Submit*: per cluster, ``submit_concurrency`` submitters take decided jobs in
           acceptance order from one queue (each an sbatch or a slurmrestd call that
           waits on the controller), so a later job can overtake at most the
           ``submit_concurrency - 1`` in flight beside it (by milliseconds: Slurm's age
           priority does not tell them apart; with 1 the order is strict).
        3. *Record*: one recorder writes the answers a round at a time in one
           transaction, or sooner once every job decided so far has its answer.

        The steps overlap (deciding runs at most two rounds ahead of the submitters),
        so the database is no longer what a submission waits for. A crash between the
        steps is repaired as before: an attempt counted tells the next pass to look for
        the job's tag first.
        """
        now = scheduling.utcnow()
        with session_scope(self.factory) as s:
            due = [
                (j.id, j.cluster, j.submit_attempts, j.created_at)
                for j in scheduling.due_for_submit(s, now, self.settings.submit_batch)
            ]
        tagged_for: dict[str, dict[str, sa_.JobInfo]] = {}
        for cluster in dict.fromkeys(c for _, c, _, _ in due):
            tagged: dict[str, sa_.JobInfo] = {}
            if any(attempts > 0 for _, cl, attempts, _ in due if cl == cluster):
                since = min(c for _, cl, _, c in due if cl == cluster) - scheduling.TAG_LOOKBACK
                try:
                    tagged = self.pool.get(cluster).list_tagged(since)
                except sa_.SchedulerError as exc:
                    stats.errors.append(f"{cluster}: list_tagged: {exc}")
                    continue  # cannot tell what was submitted: try again next pass
            tagged_for[cluster] = tagged
        ids = [job_id for job_id, cluster, _, _ in due if cluster in tagged_for]
        if not ids:
            return
        width = {
            cluster: min(self.settings.submit_concurrency, sum(c == cluster for _, c, _, _ in due))
            for cluster in tagged_for
        }
        queues: dict[str, queue.SimpleQueue[_Ready | None]] = {
            c: queue.SimpleQueue() for c in width
        }
        answers: queue.SimpleQueue[_Answer | None] = queue.SimpleQueue()
        ahead = threading.Semaphore(2 * SUBMIT_ROUND)  # decided, not yet submitted

        counts = {"decided": 0, "answered": 0}
        counting = threading.Lock()

        def submitter(cluster: str) -> PassStats:
            mine = PassStats()
            while (item := queues[cluster].get()) is not None:
                try:
                    answers.put(self._call_scheduler(item, mine))
                finally:
                    ahead.release()
            return mine

        def recorder() -> PassStats:
            # Records a round's worth of answers at a time, or what has come when every
            # job decided so far has its answer: few transactions, none waited for long.
            mine, got = PassStats(), []
            while (answer := answers.get()) is not None:
                got.append(answer)
                with counting:
                    counts["answered"] += 1
                    caught_up = counts["answered"] == counts["decided"]
                if len(got) >= SUBMIT_ROUND or caught_up:
                    self._record_answers(got, now, mine)
                    got = []
            self._record_answers(got, now, mine)
            return mine

        threads = 1 + sum(width.values())
        with ThreadPoolExecutor(threads, thread_name_prefix="submit") as pool:
            recording = pool.submit(recorder)
            submitting = [pool.submit(submitter, c) for c, n in width.items() for _ in range(n)]
            try:
                for at in range(0, len(ids), SUBMIT_ROUND):
                    for item in self._begin_round(
                        ids[at : at + SUBMIT_ROUND], tagged_for, now, stats
                    ):
                        ahead.acquire()
                        queues[item.cluster].put(item)
            finally:
                for cluster, n in width.items():
                    for _ in range(n):
                        queues[cluster].put(None)
                for future in submitting:
                    stats.add(future.result())
                answers.put(None)
                stats.add(recording.result())

    def _begin_round(
        self,
        ids: list[uuid.UUID],
        tagged_for: dict[str, dict[str, sa_.JobInfo]],
        now: datetime,
        stats: PassStats,
    ) -> list[_Ready]:
        """Step 1 of a round, in one transaction; if it fails, again one job at a time,
        so one job's failure touches that job only."""
        try:
            mine = PassStats()
            with self._submitters_turn(), session_scope(self.factory) as s:
                ready = self._begin_jobs(s, ids, tagged_for, now, mine)
            stats.add(mine)
            return ready
        except Exception:
            if len(ids) == 1:
                raise
            log.exception("deciding %d jobs together failed: one at a time", len(ids))
        ready = []
        for job_id in ids:
            try:
                ready += self._begin_round([job_id], tagged_for, now, stats)
            except Exception as exc:
                log.exception("submitting job %s failed", job_id)
                stats.errors.append(f"submit {job_id}: {exc}")
        return ready

    def _begin_jobs(
        self,
        s: Session,
        ids: list[uuid.UUID],
        tagged_for: dict[str, dict[str, sa_.JobInfo]],
        now: datetime,
        stats: PassStats,
    ) -> list[_Ready]:
        owners = s.scalars(select(Job.enterprise_id).where(Job.id.in_(ids)).distinct())
        for enterprise_id in sorted(owners):  # one order for every multi-row locker
            ledger.lock_enterprise(s, enterprise_id)
        # Read under the locks: a cancel committed before them is seen.
        query = select(Job).where(Job.id.in_(ids)).execution_options(populate_existing=True)
        jobs = {job.id: job for job in s.scalars(query) if scheduling.awaiting_submission(job)}
        known = scheduling.known_for(s, list(jobs.values()))
        ready = []
        for job_id in ids:
            job = jobs.get(job_id)
            if job is None:
                continue
            native = self.pool.get(job.cluster).supports_dependencies if job.depends_on else False
            outcome, spec, plan = scheduling.begin_submission(
                s, job, tagged_for[job.cluster], now, native_dependencies=native, known=known
            )
            if outcome is scheduling.Step.SUBMIT and spec is not None:
                ready.append(_Ready(job.id, job.cluster, spec, plan))
            elif outcome is not scheduling.Step.HELD:  # held: looked at again next pass
                stats.bump(outcome.value)
        return ready

    def _call_scheduler(self, item: _Ready, stats: PassStats) -> _Answer:
        """Step 2 for one job, outside any transaction: stage in, then submit. The
        answer's result is None if the stage-in rejected the job (recorded already) or
        the call failed unexpectedly (logged; the job is looked for by tag next pass)."""
        if item.plan is not None and not self._stage_in(item.plan, stats):
            return _Answer(item, None)
        try:
            return _Answer(item, self.pool.get(item.cluster).submit(item.spec))
        except sa_.SchedulerError as exc:
            return _Answer(item, exc)
        except Exception as exc:  # one job's failure touches that job only
            log.exception("submitting job %s failed", item.job_id)
            stats.errors.append(f"{item.cluster}: submit {item.job_id}: {exc}")
            return _Answer(item, None)

    def _record_answers(self, answers: list[_Answer], now: datetime, stats: PassStats) -> None:
        self._record_round(answers, now, stats)
        for cluster in dict.fromkeys(a.ready.cluster for a in answers):
            self.poll_soon(cluster)

    def _record_round(self, answers: list[_Answer], now: datetime, stats: PassStats) -> None:
        """Step 3: every answer of the round in one transaction (again one at a time
        if that fails). A job cancelled or adopted meanwhile is left as it is."""
        answers = [a for a in answers if a.result is not None]
        if not answers:
            return
        try:
            mine = PassStats()
            with self._submitters_turn(), session_scope(self.factory) as s:
                query = select(Job).where(Job.id.in_([a.ready.job_id for a in answers]))
                jobs = {job.id: job for job in s.scalars(query)}
                for answer in answers:
                    job = jobs.get(answer.ready.job_id)
                    if answer.result is None or job is None:
                        continue
                    if scheduling.awaiting_submission(job):
                        self._record(s, job, answer.result, now, mine)
            stats.add(mine)
            return
        except Exception:
            if len(answers) == 1:
                log.exception("recording job %s's submission failed", answers[0].ready.job_id)
                stats.errors.append(f"record {answers[0].ready.job_id}: failed")
                return
            log.exception("recording %d submissions together failed: one at a time", len(answers))
        for answer in answers:
            self._record_round([answer], now, stats)

    def _record(
        self,
        s: Session,
        job: Job,
        result: str | sa_.SchedulerError,
        now: datetime,
        stats: PassStats,
    ) -> None:
        if isinstance(result, str):
            scheduling.mark_submitted(job, result, scheduling.utcnow())
            stats.submitted += 1
        elif result.transient:
            scheduling.backoff(
                job,
                now,
                str(result),
                self.settings.submit_retry_base_s,
                self.settings.submit_retry_max_s,
            )
            stats.retried += 1
        elif self.settings.reroute_on_reject and scheduling.reroute(
            s, job, str(result), brokering.weights_from(self.settings)
        ):
            stats.retried += 1
        else:
            scheduling.reject(s, job, str(result), scheduling.utcnow())
            stats.rejected += 1

    def _stage_in(self, plan: staging.StagePlan, stats: PassStats) -> bool:
        """Copy a job's inputs outside any transaction; False if it was rejected."""
        try:
            outcome = staging.run_stage_in(plan)
        except staging.StagingError as exc:
            with self._submitters_turn(), session_scope(self.factory) as s:
                job = s.get(Job, plan.job_id)
                if job is not None and scheduling.awaiting_submission(job):
                    scheduling.fail_stage_in(s, job, str(exc), scheduling.utcnow())
                    stats.rejected += 1
            return False
        with self._submitters_turn(), session_scope(self.factory) as s:
            staging.record_stage_in(s, plan.job_id, outcome)
        return True

    def push_cancels(self, stats: PassStats) -> None:
        """Cancel in the scheduler what users asked to cancel (jobs and array tasks), and
        jobs whose dependencies can no longer be met (``dependencies.never_met``)."""
        with session_scope(self.factory) as s:
            for job_id, reason in dependencies.never_met(s):
                job = s.get(Job, job_id)
                if job is not None:
                    job.cancel_requested, job.cancel_reason = True, reason[:300]
                    job.reason = reason[:1000]
        with session_scope(self.factory) as s:
            todo = [
                (j.cluster, j.scheduler_job_id)
                for j in s.scalars(
                    select(Job).where(
                        Job.cancel_requested,
                        Job.state.in_(LIVE_STATES),
                        Job.scheduler_job_id.is_not(None),
                    )
                )
            ]
            todo += [
                (j.cluster, sa_.task_job_id(j.scheduler_job_id or "", t.index))
                for t, j in s.execute(
                    select(JobTask, Job)
                    .join(Job, Job.id == JobTask.job_id)
                    .where(
                        JobTask.cancel_requested,
                        JobTask.state.not_in(TERMINAL_STATES),
                        Job.state.in_(LIVE_STATES),
                        Job.scheduler_job_id.is_not(None),
                    )
                ).all()
            ]
        for cluster, sched_id in todo:
            key = f"{cluster}/{sched_id}"
            if key in self._cancels_sent or sched_id is None:
                continue
            try:
                self.pool.get(cluster).cancel(sched_id)
                self._cancels_sent.add(key)
                self.poll_soon(cluster)
            except sa_.SchedulerError as exc:
                stats.errors.append(f"{cluster}: cancel {sched_id}: {exc}")

    def poll(self, stats: PassStats) -> None:
        """Follow every live job and node-validation job: one status call per cluster
        for both, then a short transaction of its own for each job whose answer changed
        (one failure touches one job), and one for the validation jobs that ended
        (rates, drains, credits)."""
        with session_scope(self.factory) as s:
            live_clusters = list(
                s.scalars(
                    select(Job.cluster)
                    .where(Job.state.in_(LIVE_STATES), Job.scheduler_job_id.is_not(None))
                    .distinct()
                )
            )
            validating = validation.awaited(s)
        for cluster in dict.fromkeys([*live_clusters, *validating]):
            started = time.monotonic()
            if self.poll_backoff and started < self._poll_due.get(cluster, 0.0):
                continue
            changed = self._poll_cluster(cluster, stats, validating.get(cluster, []))
            base = self.settings.worker_interval_s
            gap = self._poll_gap.get(cluster, base)
            gap = base if changed else min(2 * gap, self.settings.poll_max_interval_s)
            self._poll_gap[cluster], self._poll_due[cluster] = gap, started + gap

    def _submitters_turn(self) -> AbstractContextManager[Any]:
        return self._submit_lock if self._submit_lock is not None else nullcontext()

    def poll_soon(self, cluster: str) -> None:
        """Poll ``cluster`` at the next pass (a job was submitted or cancelled there)."""
        self._poll_due.pop(cluster, None)
        self._poll_gap.pop(cluster, None)

    def _poll_cluster(self, cluster: str, stats: PassStats, validating: list[str]) -> bool:
        """One status call for the cluster's live jobs and its ``validating`` jobs;
        whether any of them changed (or the call failed: polled again at the next
        pass)."""
        with session_scope(self.factory) as s:
            seen = scheduling.Seen.live(s, cluster)
        try:
            infos = self.pool.get(cluster).status(list(dict.fromkeys([*seen, *validating])))
        except sa_.SchedulerError as exc:
            stats.errors.append(f"{cluster}: status: {exc}")
            return True  # nothing is known: nothing is marked unseen either
        ended = {i: infos[i] for i in validating if i in infos and infos[i].state.terminal}
        changed = bool(ended)
        if ended:
            try:
                with session_scope(self.factory) as s:
                    validation.judge_ended(
                        s, self.pool, self.settings, cluster, ended, scheduling.utcnow()
                    )
            except Exception as exc:  # the cluster's jobs are followed all the same
                log.exception("judging validation jobs on %s failed", cluster)
                stats.errors.append(f"{cluster}: validation: {exc}")
        for sched_id, before in seen.items():
            info = infos.get(sched_id)
            if info is not None and not before.changed(info):
                continue
            changed = True
            try:
                with session_scope(self.factory) as s:
                    job = s.get(Job, before.job_id)
                    if job is None or job.scheduler_job_id != sched_id or job.state.terminal:
                        continue
                    now = scheduling.utcnow()
                    if info is None:
                        if scheduling.mark_unseen(s, job, now, self.settings.lost_grace_s):
                            stats.lost += 1
                    elif scheduling.apply_info(
                        s, job, info, now, center_failures=self.settings.charge_center_failures
                    ):
                        stats.settled += 1
            except Exception as exc:  # one job's failure touches that job only
                log.exception("polling job %s failed", before.job_id)
                stats.errors.append(f"{cluster}: job {before.job_id}: {exc}")
        return changed

    def collect_outputs(self, stats: PassStats) -> None:
        """Stage-out of settled jobs: each copy outside any transaction, one job at a time."""
        with session_scope(self.factory) as s:
            due = collection.due(s, self.settings.submit_batch)
        for job_id in due:
            try:
                with session_scope(self.factory) as s:
                    plan = collection.plan(s, job_id)
                if plan is None:
                    continue
                fetched = collection.fetch(plan, timeout_s=self.settings.stage_out_timeout_s)
                try:
                    with session_scope(self.factory) as s:
                        collection.finish(s, plan, fetched)
                finally:
                    fetched.discard()
                stats.collected += 1
            except Exception as exc:  # one job's failure touches that job only
                log.exception("stage-out of job %s failed", job_id)
                stats.errors.append(f"stage-out {job_id}: {exc}")
                with session_scope(self.factory) as s:
                    collection.failed(s, job_id, f"stage-out failed: {exc}"[:300])


def _record(stats: PassStats, duration_s: float, lag_s: float) -> None:
    counts = {k: v for k, v in vars(stats).items() if isinstance(v, int)}
    counts["errors"] = len(stats.errors)
    observability.record_pass(counts, duration_s, lag_s)
    if any(counts.values()):
        log.info("worker pass", extra={**counts, "error_samples": stats.errors[:5]})


def start_in_thread(worker: Worker) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(
        target=worker.run_forever, args=(stop,), name="broker-worker", daemon=True
    )
    thread.start()
    return thread, stop
