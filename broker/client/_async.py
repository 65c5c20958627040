"""The asyncio client (``AsyncClient``): ``_sync.Client``'s methods, awaited."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
from httpx_sse import aconnect_sse

from ._config import ClientConfig, load_config
from ._core import (
    CHUNK_BYTES,
    Backoff,
    Resume,
    auth_headers,
    check,
    expected_sha256,
    file_path,
    new_idempotency_key,
    output_params,
    retryable,
)
from ._errors import (
    ConfigError,
    IntegrityError,
    RangeNotSatisfiable,
    RateLimited,
    TransportError,
    WaitTimeout,
)
from ._models import (
    TERMINAL_STATES,
    Balance,
    Job,
    JobEvent,
    JobPage,
    JobSpec,
    Me,
    ProjectBalance,
    Task,
    WorkspaceFile,
    WorkspaceListing,
)
from ._sync import Source, Stream, reopener

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """``Client``'s API for asyncio (and trio through anyio): each method awaited,
    ``events``, ``iter_jobs``, ``iter_files`` and ``stream_output`` iterated with
    ``async for``. Same configuration, retries and errors."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        project_id: str | None = None,
        config: ClientConfig | None = None,
        retries: int = 4,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or load_config(base_url, token, project_id)
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url,
            headers=auth_headers(self.config),
            timeout=httpx.Timeout(self.config.timeout_s, connect=10.0),
            transport=transport,
        )
        self._project: str | None = self.config.project_id

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], retry: bool = True) -> T:
        delays = self.backoff.delays()
        for n in range(self.retries + 1):
            try:
                return await attempt()
            except Exception as exc:
                if not retry or not retryable(exc) or n == self.retries:
                    if isinstance(exc, httpx.TransportError):
                        raise TransportError(f"{type(exc).__name__}: {exc}") from exc
                    raise
                await anyio.sleep(self.backoff.after(exc, next(delays)))
        raise AssertionError("unreachable")

    async def _request(
        self, method: str, path: str, *, retry: bool = True, **kw: Any
    ) -> httpx.Response:
        async def attempt() -> httpx.Response:
            return check(await self._http.request(method, path, **kw))

        return await self._retrying(attempt, retry)

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self._request(method, path, **kw)).json()

    async def project_id(self, project_id: str | None = None) -> str:
        if project_id:
            return str(project_id)
        if self._project is None:
            active = [p for p in (await self.me()).projects if p.status == "active"]
            if len(active) != 1:
                names = ", ".join(p.name for p in active) or "none"
                raise ConfigError(
                    f"no default project (active: {names}): pass project_id or set"
                    " HPC_BROKER_PROJECT"
                )
            self._project = str(active[0].id)
        return self._project

    # -- jobs -----------------------------------------------------------------

    async def submit(
        self, spec: JobSpec, *, project_id: str | None = None, idempotency_key: str | None = None
    ) -> Job:
        key = idempotency_key or new_idempotency_key()
        path = f"/projects/{await self.project_id(project_id)}/jobs"
        doc = await self._json("POST", path, json=spec.body(), headers={"Idempotency-Key": key})
        return Job.model_validate(doc)

    async def job(self, job_id: object) -> Job:
        return Job.model_validate(await self._json("GET", f"/jobs/{job_id}"))

    async def list_jobs(
        self,
        *,
        project_id: str | None = None,
        state: str | None = None,
        cluster: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        params = {"project_id": project_id, "state": state, "cluster": cluster, "limit": limit}
        params = {k: v for k, v in params.items() if v is not None}
        if cursor:
            params["cursor"] = cursor
        return JobPage.model_validate(await self._json("GET", "/jobs", params=params))

    async def iter_jobs(self, **filters: Any) -> AsyncIterator[Job]:
        cursor = None
        while True:
            page = await self.list_jobs(cursor=cursor, **filters)
            for job in page.items:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: object) -> Job:
        return Job.model_validate(await self._json("POST", f"/jobs/{job_id}/cancel"))

    async def tasks(self, job_id: object) -> list[Task]:
        """An array job's tasks (every page): state, exit code, charge of each."""
        found: list[Task] = []
        cursor: str | None = None
        while True:
            params = {"cursor": cursor} if cursor else {}
            doc = await self._json("GET", f"/jobs/{job_id}/tasks", params=params)
            found += [Task.model_validate(t) for t in doc["items"]]
            cursor = doc.get("next_cursor")
            if not cursor:
                return found

    async def job_io(self, job_id: object) -> dict[str, Any]:
        """The job's inputs and outputs and what stage-in and stage-out did (``state``:
        ``collecting``, ``done``, ``failed``)."""
        doc: dict[str, Any] = await self._json("GET", f"/jobs/{job_id}/io")
        return doc

    async def cancel_task(self, job_id: object, index: int) -> Task:
        """Cancel one task of an array; the others go on."""
        return Task.model_validate(await self._json("POST", f"/jobs/{job_id}/tasks/{index}/cancel"))

    async def events(
        self, job_id: object, *, last_event_id: int | None = None
    ) -> AsyncIterator[JobEvent]:
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
        timeout = httpx.Timeout(self.config.timeout_s, read=60.0)
        async with aconnect_sse(
            self._http, "GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout
        ) as source:
            await acheck_stream(source.response)
            async for sse in source.aiter_sse():
                if sse.event == "state" and sse.data:
                    yield JobEvent.model_validate_json(sse.data)

    async def wait(
        self,
        job_id: object,
        *,
        timeout_s: float | None = None,
        use_events: bool = True,
        poll: Backoff | None = None,
        collected: bool = False,
    ) -> Job:
        deadline = None if timeout_s is None else anyio.current_time() + timeout_s
        job = await self._wait_ended(job_id, deadline, timeout_s, use_events, poll)
        if collected and job.outputs is not None:
            await self._wait_collected(job, deadline)
        return job

    async def _wait_collected(self, job: Job, deadline: float | None) -> None:
        """Until the job's stage-out is over (its outputs are in the workspace)."""
        while True:
            stage = (await self.job_io(job.id)).get("stage_out") or {}
            if stage.get("state") in ("done", "failed"):
                return
            if not stage and job.started_at is None and job.submitted_at is None:
                return  # it never ran: nothing to collect
            if deadline is not None and anyio.current_time() > deadline:
                raise WaitTimeout(f"job {job.id}: outputs still being collected", job)
            await anyio.sleep(0.5)

    async def _wait_ended(
        self,
        job_id: object,
        deadline: float | None,
        timeout_s: float | None,
        use_events: bool,
        poll: Backoff | None,
    ) -> Job:
        job = await self.job(job_id)
        if job.terminal:
            return job
        if use_events:
            job = await self._wait_events(job, deadline)
            if job.terminal:
                return job
        delays = (poll or Backoff(first_s=0.5, factor=1.5, max_s=10.0)).delays()
        while not job.terminal:
            left = None if deadline is None else deadline - anyio.current_time()
            if left is not None and left <= 0:
                raise WaitTimeout(f"job {job.id} still {job.state} after {timeout_s} s", job)
            await anyio.sleep(next(delays) if left is None else min(next(delays), left))
            job = await self.job(job.id)
        return job

    async def _wait_events(self, job: Job, deadline: float | None) -> Job:
        last: int | None = None
        while deadline is None or anyio.current_time() < deadline:
            left = (
                60.0 if deadline is None else max(0.5, min(60.0, deadline - anyio.current_time()))
            )
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    f"/jobs/{job.id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self.config.timeout_s, read=left),
                ) as source:
                    await acheck_stream(source.response)
                    async for sse in source.aiter_sse():
                        if sse.event != "state" or not sse.data:
                            continue
                        ev = JobEvent.model_validate_json(sse.data)
                        last = ev.event_id or last
                        if ev.state in TERMINAL_STATES:
                            return await self.job(job.id)
            except httpx.ReadTimeout:
                continue
            except (httpx.TransportError, RateLimited):
                return job
            job = await self.job(job.id)
            if job.terminal:
                return job
        return job

    # -- output ---------------------------------------------------------------

    async def output(
        self,
        job_id: object,
        stream: Stream = "stdout",
        *,
        tail: int | None = None,
        task: int | None = None,
    ) -> str:
        params = output_params(stream, tail, task)
        return (await self._request("GET", f"/jobs/{job_id}/output", params=params)).text

    async def stream_output(
        self,
        job_id: object,
        stream: Stream = "stdout",
        *,
        task: int | None = None,
        poll_s: float = 1.0,
    ) -> AsyncIterator[str]:
        offset = 0
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        params = output_params(stream, None, task)
        while True:
            ended = (await self.job(job_id)).terminal
            while True:
                try:
                    resp = await self._request(
                        "GET",
                        f"/jobs/{job_id}/output",
                        params=params,
                        headers={"Range": f"bytes={offset}-"},
                    )
                except RangeNotSatisfiable:
                    break
                if resp.status_code == 206:
                    offset += len(resp.content)
                    if resp.content:
                        yield decoder.decode(resp.content)
                    continue
                if offset == 0 and resp.content:
                    offset = len(resp.content)
                    yield decoder.decode(resp.content)
                break
            if ended:
                rest = decoder.decode(b"", final=True)
                if rest:
                    yield rest
                return
            await anyio.sleep(poll_s)

    # -- workspace ------------------------------------------------------------

    async def upload(
        self, source: Source, path: str, *, project_id: str | None = None
    ) -> WorkspaceFile:
        url = file_path(await self.project_id(project_id), path)
        reopen = reopener(source)

        async def attempt() -> WorkspaceFile:
            digest = hashlib.sha256()
            with reopen() as fh:
                resp = await self._http.put(
                    url,
                    content=_achunks(fh, digest),
                    headers={"Content-Type": "application/octet-stream"},
                )
            row = WorkspaceFile.model_validate(check(resp).json())
            if row.sha256 != digest.hexdigest():
                raise IntegrityError(
                    f"{path}: the broker stored sha256 {row.sha256}, we sent {digest.hexdigest()}"
                )
            return row

        return await self._retrying(attempt, retry=not hasattr(source, "read"))

    async def download(self, path: str, dest: str | Path, *, project_id: str | None = None) -> Path:
        url = file_path(await self.project_id(project_id), path)
        resume = Resume(Path(dest))

        async def attempt() -> Path:
            for _ in range(2):
                async with self._http.stream("GET", url, headers=resume.headers()) as resp:
                    if resp.status_code == 416 and resume.offset():
                        resume.discard()
                        continue
                    await acheck_stream(resp)
                    with resume.start(resp) as out:
                        async for chunk in resp.aiter_bytes(CHUNK_BYTES):
                            out.write(chunk)
                    return resume.finish(expected_sha256(resp))
            raise AssertionError("unreachable: the second try sends no Range")

        return await self._retrying(attempt)

    async def read_file(self, path: str, *, project_id: str | None = None) -> bytes:
        url = file_path(await self.project_id(project_id), path)
        return (await self._request("GET", url)).content

    async def list_files(
        self,
        prefix: str = "",
        *,
        project_id: str | None = None,
        limit: int = 1000,
        cursor: str | None = None,
    ) -> WorkspaceListing:
        params: dict[str, Any] = {"prefix": prefix, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        pid = await self.project_id(project_id)
        doc = await self._json("GET", f"/projects/{pid}/files", params=params)
        return WorkspaceListing.model_validate(doc)

    async def iter_files(
        self, prefix: str = "", *, project_id: str | None = None
    ) -> AsyncIterator[WorkspaceFile]:
        cursor = None
        while True:
            page = await self.list_files(prefix, project_id=project_id, cursor=cursor)
            for row in page.items:
                yield row
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def delete_file(self, path: str, *, project_id: str | None = None) -> None:
        await self._request("DELETE", file_path(await self.project_id(project_id), path))

    # -- who, balance, usage --------------------------------------------------

    async def me(self) -> Me:
        return Me.model_validate(await self._json("GET", "/me"))

    async def _enterprise(self, enterprise_id: str | None) -> str:
        if enterprise_id:
            return str(enterprise_id)
        ent = (await self.me()).enterprise
        if ent is None:
            raise ConfigError("this token belongs to no enterprise: pass enterprise_id")
        return str(ent.id)

    async def balance(self, enterprise_id: str | None = None) -> Balance:
        eid = await self._enterprise(enterprise_id)
        return Balance.model_validate(await self._json("GET", f"/enterprises/{eid}/balance"))

    async def project_balance(self, project_id: str | None = None) -> ProjectBalance:
        pid = await self.project_id(project_id)
        return ProjectBalance.model_validate(await self._json("GET", f"/projects/{pid}/balance"))

    async def usage(
        self, month: str | None = None, *, enterprise_id: str | None = None
    ) -> dict[str, Any]:
        eid = await self._enterprise(enterprise_id)
        params = {"month": month} if month else {}
        doc: dict[str, Any] = await self._json("GET", f"/enterprises/{eid}/usage", params=params)
        return doc


async def acheck_stream(resp: httpx.Response) -> None:
    if not resp.is_success:
        await resp.aread()
        check(resp)


async def _achunks(fh: Any, digest: Any) -> AsyncIterator[bytes]:
    # Local files: reads are short and the upload is bound by the network.
    while chunk := fh.read(CHUNK_BYTES):
        digest.update(chunk)
        yield chunk
