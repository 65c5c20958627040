"""The client against a running broker, embedded default and live alpha/beta: submit,
wait, output, cancel, 50 MB up and down (resumed by Range), errors, the charge."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.client import (
    AsyncClient,
    Backoff,
    Client,
    InvalidInput,
    JobSpec,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)

from .conftest import Broker

pytestmark = pytest.mark.slow

MIB = 1 << 20


class Flaky(httpx.BaseTransport):
    """The real transport, with faults: the answer to the first request matching
    ``lose`` is lost after the broker acted on it; the first body matching ``cut`` is
    cut after ``cut_after`` bytes. Records each request's Range header."""

    def __init__(self, lose: str = "", cut: str = "", cut_after: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose, self.cut, self.cut_after = lose, cut, cut_after
        self.ranges: list[str | None] = []
        self.requests: list[tuple[str, str]] = []

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.ranges.append(request.headers.get("range"))
        self.requests.append((request.method, request.url.path))
        resp = self.inner.handle_request(request)
        target = f"{request.method} {request.url.path}"
        if self.lose and self.lose in target:
            self.lose = ""
            resp.read()
            raise httpx.ReadError("connection reset (the answer was lost)", request=request)
        if self.cut and self.cut in target and resp.status_code in (200, 206):
            self.cut = ""
            return httpx.Response(
                resp.status_code,
                headers=resp.headers,
                stream=_Cut(resp, self.cut_after, request),
                request=request,
            )
        return resp


class _Cut(httpx.SyncByteStream):
    def __init__(self, resp: httpx.Response, after: int, request: httpx.Request) -> None:
        self.resp, self.after, self.request = resp, after, request

    def __iter__(self) -> Any:
        sent = 0
        for chunk in self.resp.iter_raw():
            if sent + len(chunk) > self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("connection reset mid-body", request=self.request)
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.resp.close()


def _client(broker: Broker, **kw: Any) -> Client:
    return Client(broker.url, broker.member, project_id=broker.project_id, **kw)


def test_submit_wait_output_charge(broker: Broker) -> None:
    with _client(broker) as c:
        job = c.submit(
            JobSpec(
                name="hello",
                script='echo "hello from $BROKER_JOB_ID ($GREETING)"\nsleep 1\necho oops >&2',
                environment={"GREETING": "hi there"},
                time_limit_minutes=5,
            )
        )
        assert job.state == "accepted" and job.cluster in broker.clusters
        assert job.hold_pfh > 0
        done = c.wait(job.id, timeout_s=180)  # by its events (SSE)
        assert done.state == "completed", done
        assert c.output(job.id) == f"hello from {job.id} (hi there)\n"
        assert c.output(job.id, "stderr") == "oops\n"
        assert done.charge_pfh is not None and done.charge_pfh > 0
        assert c.job(job.id).script.endswith("echo oops >&2")  # type: ignore[union-attr]


def test_stream_output_follows_a_running_job(broker: Broker) -> None:
    with _client(broker) as c:
        script = "for i in 1 2 3 4; do echo line $i; sleep 0.5; done"
        job = c.submit(JobSpec(name="stream", script=script, time_limit_minutes=5))
        chunks = list(c.stream_output(job.id, poll_s=0.3))
        assert "".join(chunks) == "".join(f"line {i}\n" for i in range(1, 5))
        assert c.job(job.id).state == "completed"


def test_a_lost_answer_to_submit_makes_one_job(broker: Broker) -> None:
    """The answer to the POST is lost after the broker accepted the job: the client
    sends it again with the same Idempotency-Key, and gets the same job back."""
    flaky = Flaky(lose=f"POST /api/v1/projects/{broker.project_id}/jobs")
    name = f"once-{uuid.uuid4().hex[:8]}"
    with _client(broker, transport=flaky, backoff=Backoff(first_s=0.1)) as c:
        job = c.submit(JobSpec(name=name, script="true", time_limit_minutes=2))
        posts = [p for m, p in flaky.requests if m == "POST"]
        assert len(posts) == 2  # the lost one, then the retry
        mine = [j for j in c.iter_jobs(project_id=broker.project_id) if j.name == name]
        assert [j.id for j in mine] == [job.id]
        c.wait(job.id, timeout_s=180)


def test_list_pages_and_polling_wait(broker: Broker) -> None:
    with _client(broker) as c:
        ids = {
            c.submit(JobSpec(name=f"page{i}", script="true", time_limit_minutes=2)).id
            for i in range(3)
        }
        for jid in ids:
            assert c.wait(jid, timeout_s=180, use_events=False).state == "completed"
        first = c.list_jobs(project_id=broker.project_id, limit=2)
        assert len(first.items) == 2 and first.next_cursor
        paged = [j.id for j in c.iter_jobs(project_id=broker.project_id, limit=2)]
        whole = [j.id for j in c.list_jobs(project_id=broker.project_id, limit=500).items]
        assert paged == whole and ids <= set(paged)
        done = c.list_jobs(project_id=broker.project_id, state="completed", limit=500)
        assert ids <= {j.id for j in done.items}


def test_cancel_a_running_job(broker: Broker) -> None:
    with _client(broker) as c:
        job = c.submit(JobSpec(name="long", script="sleep 300", time_limit_minutes=10))
        for _ in range(600):
            if c.job(job.id).state == "running":
                break
            time.sleep(0.2)
        assert c.job(job.id).state == "running"
        c.cancel(job.id)
        ended = c.wait(job.id, timeout_s=120)
        assert ended.state == "cancelled", ended
        assert ended.charge_pfh is not None and ended.charge_pfh < ended.hold_pfh
        assert c.cancel(job.id).state == "cancelled"  # idempotent


def test_upload_and_download_50_mb_resumed_by_range(broker: Broker, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    data = os.urandom(50 * MIB)
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    with _client(broker) as c:
        row = c.upload(src, "big/data.bin")
        assert row.size_bytes == 50 * MIB and row.sha256 == digest

        plain = c.download("big/data.bin", tmp_path / "plain.bin")
        assert hashlib.sha256(plain.read_bytes()).hexdigest() == digest

    # The connection breaks 20 MiB in: the retry asks for the rest only.
    flaky = Flaky(cut="GET /api/v1/projects/", cut_after=20 * MIB)
    with _client(broker, transport=flaky, backoff=Backoff(first_s=0.1)) as c:
        got = c.download("big/data.bin", tmp_path / "resumed.bin")
    assert flaky.ranges == [None, f"bytes={20 * MIB}-"]
    assert got.read_bytes() == data
    assert not (tmp_path / "resumed.bin.part").exists()

    # A later call resumes what an earlier process left in .part.
    part = tmp_path / "later.bin.part"
    part.write_bytes(data[: 7 * MIB])
    (tmp_path / "later.bin.part.etag").write_text(f'"{digest}"')
    seen = Flaky()
    with _client(broker, transport=seen) as c:
        later = c.download("big/data.bin", tmp_path / "later.bin")
    assert seen.ranges == [f"bytes={7 * MIB}-"] and later.read_bytes() == data


def test_errors_carry_the_brokers_error_and_detail(broker: Broker) -> None:
    with _client(broker) as c:
        with pytest.raises(NotFound) as nf:
            c.job(uuid.uuid4())
        assert nf.value.status_code == 404 and nf.value.error == "NotFound"

        bad = JobSpec(
            name="bad", script="true", time_limit_minutes=1, environment={"SLURM_CONF": "/x"}
        )
        with pytest.raises(InvalidInput) as inv:
            c.submit(bad)
        assert inv.value.status_code == 422 and "SLURM_CONF" in inv.value.detail

        with pytest.raises(NotFound):
            c.download("no/such/file", "/tmp/never-written")
        assert not Path("/tmp/never-written").exists()

    h = {"Authorization": f"Bearer {broker.operator}"}
    tiny = httpx.post(
        f"{broker.url}/projects",
        json={"enterprise_id": broker.enterprise_id, "name": "tiny", "allocation_pfh": 1e-9},
        headers=h,
    ).json()["id"]
    httpx.post(f"{broker.url}/projects/{tiny}/approve", headers=h)
    with _client(broker) as c:
        with pytest.raises(QuotaExceeded) as q:
            c.submit(JobSpec(name="big", script="true", time_limit_minutes=60), project_id=tiny)
        assert q.value.error == "QuotaExceeded" and "allocation" in q.value.detail

    with Client(broker.url, "not-a-token") as c, pytest.raises(Unauthorized) as un:
        c.me()
    assert un.value.status_code == 401


def test_async_client_submit_events_output(broker: Broker) -> None:
    async def run() -> tuple[list[str], str, float]:
        async with AsyncClient(broker.url, broker.member, project_id=broker.project_id) as c:
            job = await c.submit(
                JobSpec(name="async", script="echo async; sleep 1", time_limit_minutes=5)
            )
            states = [ev.state async for ev in c.events(job.id)]
            done = await c.wait(job.id, timeout_s=60)
            assert done.charge_pfh is not None
            return states, await c.output(job.id), done.charge_pfh

    states, out, charge = asyncio.run(run())
    assert states[0] == "accepted" and states[-1] == "completed"
    assert out == "async\n" and charge > 0


def test_async_client_files_and_streamed_output(broker: Broker, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)

    async def run() -> tuple[bytes, str, list[str]]:
        async with AsyncClient(broker.url, broker.member, project_id=broker.project_id) as c:
            row = await c.upload(data, "async/in.bin")
            assert row.sha256 == hashlib.sha256(data).hexdigest()
            (tmp_path / "got.bin.part").write_bytes(data[:MIB])  # resumed from 1 MiB
            (tmp_path / "got.bin.part.etag").write_text(f'"{row.sha256}"')
            got = await c.download("async/in.bin", tmp_path / "got.bin")
            listed = [f.path async for f in c.iter_files("async/")]
            spec = JobSpec(
                name="astream",
                script="for i in 1 2 3; do echo $i; sleep 0.4; done",
                time_limit_minutes=5,
            )
            job = await c.submit(spec)
            chunks = [chunk async for chunk in c.stream_output(job.id, poll_s=0.2)]
            assert listed == ["async/in.bin"]
            return got.read_bytes(), "".join(chunks), chunks

    got, text, _ = asyncio.run(run())
    assert got == data and text == "1\n2\n3\n"


def test_array_tasks_and_cancelling_one(broker: Broker) -> None:
    script = (
        'if [ "$BROKER_ARRAY_TASK_ID" = 1 ]; then sleep 300; fi\n'
        "sleep 1\necho task $SLURM_ARRAY_TASK_ID"
    )
    with _client(broker) as c:
        job = c.submit(JobSpec(name="sweep", array="0-2", script=script, time_limit_minutes=5))
        assert job.array == "0-2" and job.array_tasks == 3
        deadline = time.monotonic() + 120
        while not any(t.index == 1 and t.state == "running" for t in c.tasks(job.id)):
            assert time.monotonic() < deadline, c.tasks(job.id)
            time.sleep(0.3)
        assert c.cancel_task(job.id, 1).index == 1
        done = c.wait(job.id, timeout_s=180)
        states = {t.index: t.state for t in c.tasks(job.id)}
        assert states == {0: "completed", 1: "cancelled", 2: "completed"}, done
        assert c.output(job.id, task=2) == "task 2\n"


def test_balance_and_usage_hold_every_charge(broker: Broker) -> None:
    """Runs last in this module: every job above is charged to the enterprise."""
    with _client(broker) as c:
        jobs = list(c.iter_jobs())
        for j in jobs:
            c.wait(j.id, timeout_s=180)
        jobs = [c.job(j.id) for j in jobs]
        charged = sum(j.charge_pfh or 0 for j in jobs)
        bal = c.balance()
        assert charged > 0
        # Each figure is rounded for JSON: the sum matches to that rounding.
        assert bal.charged_pfh == pytest.approx(charged, rel=1e-4)
        assert bal.held_pfh == pytest.approx(0, abs=1e-12)
        assert bal.available_pfh == pytest.approx(bal.granted_pfh - charged, rel=1e-4)
        usage = c.usage()  # this month's statement, so far
        assert usage["charged_pfh"] == pytest.approx(bal.charged_pfh, rel=1e-4)
        billed = {j["job_id"] for p in usage["projects"] for j in p["jobs"]}
        assert {str(j.id) for j in jobs if j.charge_pfh} <= billed
