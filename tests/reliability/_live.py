"""Helpers for fault tests against a live broker process and the live dev Slurm cluster alpha.

Used by the tests in this folder and by the ``benchmarks/crash_*.py`` and
``benchmarks/outage_*.py`` scripts: a killable ``brokerctl serve`` process, a tenant
synced to Slurm, submitters that retry with their Idempotency-Key, counting the
scheduler's jobs per broker tag (sacct + squeue), stopping and restarting slurmctld.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from broker.config import Settings
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Job, LedgerEntry, Role
from broker.services import ledger, projects, reconcile, slurm_sync, tenants, tokens
from broker.services.principal import SYSTEM
from broker.units import pfh_to_units
from scheduler_adapters.slurm.parse import parse_jobs

from ..servers import VENV_BIN, clean_env, free_port

DEV_STATE = Path(os.environ.get("HPC_BROKER_DEV_DIR", "/var/lib/hpc-broker-dev"))
DEVCLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "devcluster"


def alpha_only(clusters_file: Path, dest: Path) -> Path:
    """A clusters file with only alpha (slurm-cli) from the dev clusters file."""
    blocks = clusters_file.read_text().split("[[clusters]]")
    keep = [b for b in blocks[1:] if 'name = "alpha"' in b]
    assert keep, f"no alpha in {clusters_file}"
    dest.write_text("[[clusters]]" + keep[0])
    return dest


def alpha_conf(clusters_file: Path) -> str:
    import tomllib

    with clusters_file.open("rb") as fh:
        clusters = {c["name"]: c for c in tomllib.load(fh)["clusters"]}
    return str(clusters["alpha"]["options"]["slurm_conf"])


@dataclass
class Tenant:
    enterprise_id: str
    project_id: str
    token: str


def make_tenant(db_url: str, clusters_file: Path, posix_user: str, account: str) -> Tenant:
    """An enterprise with ample quota and an active project, synced to alpha's accounting."""
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        ent = tenants.create_enterprise(
            s,
            SYSTEM,
            name=f"rel-{uuid.uuid4().hex[:6]}",
            posix_user=posix_user,
            slurm_account=account,
        )
        ledger.grant(s, SYSTEM, ent.id, pfh_to_units(100), "reliability")
        project = projects.create_project(s, SYSTEM, enterprise_id=ent.id, name="faults")
        projects.approve_project(s, SYSTEM, project.id)
        _, token = tokens.create_token(s, SYSTEM, name="m", role=Role.MEMBER, enterprise_id=ent.id)
        out = Tenant(str(ent.id), str(project.id), token)
    settings = Settings(database_url=db_url, clusters_file=clusters_file)
    with session_scope(factory) as s:
        results = slurm_sync.sync(s, settings.load_clusters(), dry_run=False, only="alpha")
    assert all(not r.error for r in results), results
    engine.dispose()
    return out


class BrokerProcess:
    """`brokerctl serve` (API + worker in one process) that can be killed with SIGKILL."""

    def __init__(self, cwd: Path, env: dict[str, str], command: str = "serve") -> None:
        self.cwd, self.env, self.command = cwd, env, command
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self, timeout_s: float = 60) -> None:
        log = (self.cwd / f"{self.command}.log").open("ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "brokerctl"), self.command, "--port", str(self.port)],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.cwd / f"{self.command}.log").read_text()[-3000:]
                raise RuntimeError(f"broker did not start:\n{tail}")
            time.sleep(0.05)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def broker_env(db_url: str, clusters_file: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        BROKER_DATABASE_URL=db_url,
        BROKER_CLUSTERS_FILE=str(clusters_file),
        BROKER_RATE_LIMIT_PER_MINUTE="0",
        BROKER_WORKER_INTERVAL_S="0.2",
        BROKER_SUBMIT_RETRY_BASE_S="1",
        BROKER_SUBMIT_RETRY_MAX_S="8",
        **extra,
    )


@dataclass
class Submissions:
    """What the clients saw: job ids acknowledged with 202, per Idempotency-Key."""

    accepted: dict[str, str] = field(default_factory=dict)  # key -> job id
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_jobs(
    base_of: Any,
    tenant: Tenant,
    keys: list[str],
    out: Submissions,
    *,
    script: str = "true",
    stop: threading.Event | None = None,
    give_up_s: float = 300,
    pace_s: float = 0.0,
) -> None:
    """Submit one job per key, retrying each (same key) until a 202 or a 4xx comes back.

    ``base_of()`` gives the broker's current base URL (it may be restarting).
    """
    body = {"name": "fault", "script": script, "nodes": 1, "time_limit_minutes": 1}
    headers = {"Authorization": f"Bearer {tenant.token}"}
    deadline = time.monotonic() + give_up_s
    with httpx.Client(timeout=30) as client:
        for key in keys:
            while not (stop is not None and stop.is_set()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not submit {key} in {give_up_s} s")
                t0 = time.perf_counter()
                try:
                    r = client.post(
                        f"{base_of()}/projects/{tenant.project_id}/jobs",
                        json=body,
                        headers={**headers, "Idempotency-Key": key},
                    )
                except httpx.TransportError:
                    with out.lock:
                        out.transport_errors += 1
                    time.sleep(0.1)
                    continue
                with out.lock:
                    out.statuses[r.status_code] += 1
                if r.status_code == 202:
                    with out.lock:
                        prior = out.accepted.setdefault(key, r.json()["id"])
                        out.latencies.append(time.perf_counter() - t0)
                    assert prior == r.json()["id"], f"key {key} gave two jobs"
                    time.sleep(pace_s)
                    break
                if r.status_code in (429, 503):
                    time.sleep(float(r.headers.get("Retry-After", "0.5")) / 5)
                    continue
                raise AssertionError(f"{key}: {r.status_code} {r.text}")


def scheduler_jobs_by_tag(conf: str, since: datetime) -> dict[str, list[str]]:
    """Every alpha job carrying a broker tag since ``since``: tag -> scheduler job ids.

    Counts sacct's and squeue's jobs directly (not ``list_tagged``, which keeps the
    first job of a duplicated tag), so a job submitted twice shows two ids.
    """
    env = {"PATH": "/usr/bin:/bin", "SLURM_CONF": conf}
    start = since.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    docs = []
    for argv in (["sacct", "--json", "--allusers", "-S", start, "-E", "now"], ["squeue", "--json"]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        docs.append(json.loads(proc.stdout))
    jobs = {**parse_jobs(docs[0], "alpha"), **parse_jobs(docs[1], "alpha")}
    by_tag: dict[str, list[str]] = {}
    for job_id, info in jobs.items():
        if info.tag:
            by_tag.setdefault(info.tag, []).append(job_id)
    return by_tag


def reconcile_alpha(db_url: str, clusters_file: Path, since: datetime) -> reconcile.ReconcileReport:
    """What `brokerctl jobs reconcile --cluster alpha` does, in process."""
    from broker.services import clusters

    settings = Settings(database_url=db_url, clusters_file=clusters_file)
    pool = clusters.AdapterPool(settings.load_clusters())
    engine = make_engine(db_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            return reconcile.reconcile(
                s,
                pool.get("alpha"),
                "alpha",
                since=since,
                now=datetime.now(UTC),
                dry_run=False,
            )
    finally:
        pool.close()
        engine.dispose()


@dataclass
class Audit:
    """The end-of-run verdict: every figure the crash and outage checks assert on."""

    accepted: int
    in_db: int
    lost: list[str]
    states: Counter[str]
    unsubmitted: list[str]
    submitted_twice: dict[str, list[str]]
    never_reached_scheduler: list[str]
    wrong_scheduler_id: list[str]
    charged_twice: list[str]
    unsettled: list[str]
    ledger_problems: list[str]
    strays: list[str]

    def ok(self) -> bool:
        return not (
            self.lost
            or self.unsubmitted
            or self.submitted_twice
            or self.never_reached_scheduler
            or self.wrong_scheduler_id
            or self.charged_twice
            or self.unsettled
            or self.ledger_problems
        )


def audit(db_url: str, tenant: Tenant, subs: Submissions, conf: str, since: datetime) -> Audit:
    from sqlalchemy import func, select

    from broker.services.scheduling import tag_of

    engine = make_engine(db_url)
    by_tag = scheduler_jobs_by_tag(conf, since - timedelta(minutes=1))
    with session_scope(make_session_factory(engine)) as s:
        ent = uuid.UUID(tenant.enterprise_id)
        rows = list(s.scalars(select(Job).where(Job.enterprise_id == ent)))
        by_id = {str(j.id): j for j in rows}
        lost = [jid for jid in subs.accepted.values() if jid not in by_id]
        per_job = Counter(
            (str(job_id), kind.value)
            for job_id, kind in s.execute(
                select(LedgerEntry.job_id, LedgerEntry.kind).where(
                    LedgerEntry.enterprise_id == ent, LedgerEntry.job_id.is_not(None)
                )
            )
        )
        charged_twice = sorted({j for (j, kind), n in per_job.items() if n > 1})
        unsettled = [str(j.id) for j in rows if j.state.terminal and j.settled_at is None]
        twice = {}
        missing, wrong, unsubmitted = [], [], []
        for j in rows:
            ids = by_tag.get(tag_of(j), [])
            if len(ids) > 1:
                twice[str(j.id)] = ids
            if j.scheduler_job_id is None:
                unsubmitted.append(str(j.id))
            elif not ids:
                missing.append(str(j.id))
            elif j.scheduler_job_id not in ids:
                wrong.append(str(j.id))
        mine = {tag_of(j) for j in rows}
        strays = [t for t in by_tag if t not in mine and tenant.enterprise_id in t]
        problems = ledger.check_invariants(s, ent)
        n_jobs = s.scalar(select(func.count()).select_from(Job).where(Job.enterprise_id == ent))
    engine.dispose()
    return Audit(
        accepted=len(subs.accepted),
        in_db=int(n_jobs or 0),
        lost=lost,
        states=Counter(j.state.value for j in rows),
        unsubmitted=unsubmitted,
        submitted_twice=twice,
        never_reached_scheduler=missing,
        wrong_scheduler_id=wrong,
        charged_twice=charged_twice,
        unsettled=unsettled,
        ledger_problems=problems,
        strays=strays,
    )


def wait_all_terminal(db_url: str, tenant: Tenant, timeout_s: float) -> float:
    """Seconds until every job of the tenant is terminal (AssertionError past timeout)."""
    from sqlalchemy import select

    engine = make_engine(db_url)
    t0 = time.monotonic()
    try:
        while True:
            with session_scope(make_session_factory(engine)) as s:
                states = list(
                    s.scalars(
                        select(Job.state).where(
                            Job.enterprise_id == uuid.UUID(tenant.enterprise_id)
                        )
                    )
                )
            if states and all(st.terminal for st in states):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise AssertionError(f"not all terminal after {timeout_s} s: {Counter(states)}")
            time.sleep(0.5)
    finally:
        engine.dispose()


def count_submitted(db_url: str, tenant: Tenant) -> tuple[int, int]:
    """(jobs, jobs with a scheduler id) of the tenant."""
    from sqlalchemy import func, select

    engine = make_engine(db_url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            ent = uuid.UUID(tenant.enterprise_id)
            total = s.scalar(select(func.count()).select_from(Job).where(Job.enterprise_id == ent))
            done = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.enterprise_id == ent, Job.scheduler_job_id.is_not(None))
            )
            return int(total or 0), int(done or 0)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- slurmctld outage
def _ctld_pidfile() -> Path:
    return DEV_STATE / "run" / "alpha-slurmctld.pid"


def ctld_pid() -> int | None:
    try:
        pid = int(_ctld_pidfile().read_text().split()[0])
        if b"slurmctld" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def slurmctld_stopped(conf: str) -> Iterator[None]:
    """Stop alpha's slurmctld; always start it again, the way devcluster starts it.

    Holds devcluster's lock meanwhile so that another test session's ``devcluster up``
    waits instead of restarting the controller in the middle of the outage.
    """
    lock = (DEV_STATE / ".lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        pid = ctld_pid()
        assert pid is not None, "alpha slurmctld is not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while ctld_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if ctld_pid() == pid:
            os.kill(pid, signal.SIGKILL)
        yield
    finally:
        try:
            if ctld_pid() is None:
                # devcluster's own start: `slurmctld` with SLURM_CONF, it daemonizes.
                subprocess.run(
                    ["slurmctld"], env={**os.environ, "SLURM_CONF": conf}, check=False, timeout=60
                )
            _wait_ctld_up(conf)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        # Let devcluster check the whole cluster (nodes resumed, slurmrestd) as usual.
        subprocess.run(
            [sys.executable, str(DEVCLUSTER), "up", "--two"],
            capture_output=True,
            check=False,
            timeout=300,
        )


def _wait_ctld_up(conf: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["scontrol", "ping"],
            env={"PATH": "/usr/bin:/bin", "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if "is UP" in out:
            return
        time.sleep(0.2)
    raise RuntimeError("alpha slurmctld did not come back")


def random_kill_times(rng: random.Random, n: int, low: float, high: float) -> list[float]:
    return [rng.uniform(low, high) for _ in range(n)]
