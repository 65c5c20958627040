"""Database outage: PostgreSQL restarts under load; the API answers 503, then recovers.

A PostgreSQL instance of this test's own (initdb in a temporary folder, its own port) so
that restarting it disturbs no other test session using the shared server. The broker
(`brokerctl serve`: API and worker) runs against it while clients submit jobs and read
lists; PostgreSQL is stopped (fast shutdown), kept down a few seconds and started again,
the way ``pg_ctlcluster <version> main restart`` does. Meanwhile every answer is a 2xx or
a 503 ``{"error": "Unavailable", ...}`` with Retry-After, none hangs, none is a 500;
afterwards every request succeeds again without restarting the broker, and no
acknowledged job is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from broker import migrate
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Job
from broker.services import ledger

from ..broker.test_concurrency import CLUSTERS, _tenant
from ..servers import brokerctl_server, clean_env, free_port

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PluginImportFixer:ImportWarning"),
]


def _pg_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.iterdir(), key=lambda p: int(p.name)) if root.exists() else []
    if not versions:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    return versions[-1] / "bin"


class PrivatePostgres:
    """A throw-away PostgreSQL cluster owned by the postgres user, on 127.0.0.1:port."""

    def __init__(self, root: Path) -> None:
        self.bin = _pg_bin()
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def init(self) -> None:
        pw = pwd.getpwnam("postgres")
        self.data.parent.mkdir(parents=True, exist_ok=True)
        os.chown(self.data.parent, pw.pw_uid, pw.pw_gid)
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres"
        )
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", opts, "-w", "start",
        )  # fmt: skip

    def stop(self, check: bool = True) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop",
            check=check,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/broker"


@pytest.fixture
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    if os.geteuid() != 0:
        pytest.skip("runs PostgreSQL as the postgres user: needs root")
    root = Path(f"/tmp/hcb-pg-{uuid.uuid4().hex[:8]}")
    pg = PrivatePostgres(root)
    try:
        pg.init()
        admin = make_engine(pg.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "broker"'))
        admin.dispose()
        migrate.upgrade(pg.url)
        yield pg
    finally:
        pg.stop(check=False)
        shutil.rmtree(root, ignore_errors=True)


class Load:
    """Clients submitting jobs and listing them; every answer recorded with its time."""

    def __init__(self, base: str, project: str, token: str) -> None:
        self.base, self.project, self.token = base, project, token
        self.stop = threading.Event()
        self.answers: list[tuple[float, str, int, str, float, str]] = []
        self.accepted: set[str] = set()
        self.broken: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()

    def client(self, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {"name": "db", "script": "sleep 30", "nodes": 1, "time_limit_minutes": 1}
        with httpx.Client(base_url=self.base, headers=headers, timeout=15) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                what, t0 = ("submit", "list")[n % 2], time.monotonic()
                try:
                    if what == "submit":
                        r = c.post(
                            f"/projects/{self.project}/jobs",
                            json=body,
                            headers={"Idempotency-Key": f"c{i}-{n}"},
                        )
                    else:
                        r = c.get("/jobs?limit=5")
                except httpx.TransportError as exc:
                    with self.lock:
                        self.broken.append((t0, what, repr(exc)))
                    continue
                dt = time.monotonic() - t0
                error = r.json().get("error", "") if r.status_code >= 400 else ""
                with self.lock:
                    retry = r.headers.get("Retry-After", "")
                    self.answers.append((t0, what, r.status_code, error, dt, retry))
                    if r.status_code == 202:
                        self.accepted.add(r.json()["id"])
                time.sleep(0.02)


def test_postgres_restart_under_load_gives_503_then_recovers(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    ent, project, token = _tenant(private_pg.url)
    ledger_engine = make_engine(private_pg.url)
    clusters = tmp_path / "clusters.toml"
    clusters.write_text(CLUSTERS.format(root=tmp_path))
    env = clean_env(
        BROKER_DATABASE_URL=private_pg.url,
        BROKER_CLUSTERS_FILE=str(clusters),
        BROKER_RATE_LIMIT_PER_MINUTE="0",
        BROKER_WORKER_INTERVAL_S="0.5",
    )
    # _tenant's grant fits 20 jobs: cancel as we go would be racy, so grant plenty more.
    from broker.services.principal import SYSTEM

    with session_scope(make_session_factory(ledger_engine)) as s:
        ledger.grant(s, SYSTEM, uuid.UUID(ent), 10**15, "load")
    with brokerctl_server("serve", tmp_path, env) as base:
        load = Load(base, project, token)
        threads = [threading.Thread(target=load.client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        down_at = time.monotonic()
        private_pg.stop()
        time.sleep(1)
        ready = httpx.get(f"{base}/readyz", timeout=15)
        time.sleep(3)
        start_at = time.monotonic()
        private_pg.start()
        up_at = time.monotonic()
        time.sleep(6)
        load.stop.set()
        for t in threads:
            t.join()
        after = httpx.get(f"{base}/jobs?limit=1", headers={"Authorization": f"Bearer {token}"})
    during = [a for a in load.answers if down_at + 0.2 < a[0] < start_at]
    late = [a for a in load.answers if a[0] > up_at + 3]
    codes = Counter((a[1], a[2], a[3]) for a in load.answers)
    print("answers:", dict(codes), "max latency", max(a[4] for a in load.answers))
    print("transport errors:", [(round(b[0] - down_at, 2), b[1], b[2]) for b in load.broken])
    assert not load.broken, "connections broken: the broker must answer, not drop them"
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert not [a for a in load.answers if a[2] >= 500 and a[2] != 503], codes
    for a in load.answers:
        if a[2] == 503:
            assert a[3] == "Unavailable" and a[5], a
    assert during and all(a[2] == 503 for a in during), Counter(a[2] for a in during)
    assert max(a[4] for a in load.answers) < 10, "a request hung"
    assert late and all(a[2] in (200, 202) for a in late), Counter(a[2] for a in late)
    assert after.status_code == 200
    with session_scope(make_session_factory(ledger_engine)) as s:
        ids = {str(j) for j in s.scalars(select(Job.id))}
        assert load.accepted <= ids, "an acknowledged job is missing"
        assert ledger.check_invariants(s, uuid.UUID(ent)) == []
    ledger_engine.dispose()
