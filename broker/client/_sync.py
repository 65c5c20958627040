"""The blocking client (``Client``); ``_async.AsyncClient`` is the same, awaited."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import httpx
from httpx_sse import connect_sse

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

__all__ = ["Client"]

T = TypeVar("T")
Stream = Literal["stdout", "stderr"]
Source = str | Path | bytes | IO[bytes]


class Client:
    """The broker's API for a team member's token, blocking (``AsyncClient``: awaited).

    ``Client()`` reads its URL, token and default project from the environment or
    the config file (``load_config``); each may be passed instead. Idempotent
    requests (reads, cancel, and submit with its Idempotency-Key) are retried on
    connection errors, 429 and 502-504, ``retries`` times with back-off.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        project_id: str | None = None,
        config: ClientConfig | None = None,
        retries: int = 4,
        backoff: Backoff | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config or load_config(base_url, token, project_id)
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._http = httpx.Client(
            base_url=self.config.base_url,
            headers=auth_headers(self.config),
            timeout=httpx.Timeout(self.config.timeout_s, connect=10.0),
            transport=transport,
        )
        self._project: str | None = self.config.project_id

    # -- plumbing -------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _retrying(self, attempt: Callable[[], T], retry: bool = True) -> T:
        delays = self.backoff.delays()
        for n in range(self.retries + 1):
            try:
                return attempt()
            except Exception as exc:
                if not retry or not retryable(exc) or n == self.retries:
                    if isinstance(exc, httpx.TransportError):
                        raise TransportError(f"{type(exc).__name__}: {exc}") from exc
                    raise
                time.sleep(self.backoff.after(exc, next(delays)))
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, *, retry: bool = True, **kw: Any) -> httpx.Response:
        return self._retrying(lambda: check(self._http.request(method, path, **kw)), retry)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._request(method, path, **kw).json()

    def project_id(self, project_id: str | None = None) -> str:
        """``project_id``, else the configured one, else the token's only active project."""
        if project_id:
            return str(project_id)
        if self._project is None:
            active = [p for p in self.me().projects if p.status == "active"]
            if len(active) != 1:
                names = ", ".join(p.name for p in active) or "none"
                raise ConfigError(
                    f"no default project (active: {names}): pass project_id or set"
                    " HPC_BROKER_PROJECT"
                )
            self._project = str(active[0].id)
        return self._project

    # -- jobs -----------------------------------------------------------------

    def submit(
        self,
        spec: JobSpec,
        *,
        project_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit ``spec`` (202: accepted, routed and held). One key serves every retry
        of this call, so a lost answer never makes a second job."""
        key = idempotency_key or new_idempotency_key()
        path = f"/projects/{self.project_id(project_id)}/jobs"
        doc = self._json("POST", path, json=spec.body(), headers={"Idempotency-Key": key})
        return Job.model_validate(doc)

    def job(self, job_id: object) -> Job:
        return Job.model_validate(self._json("GET", f"/jobs/{job_id}"))

    def list_jobs(
        self,
        *,
        project_id: str | None = None,
        state: str | None = None,
        cluster: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """One page, newest first; the next with ``cursor=page.next_cursor``."""
        params = {"project_id": project_id, "state": state, "cluster": cluster, "limit": limit}
        params = {k: v for k, v in params.items() if v is not None}
        if cursor:
            params["cursor"] = cursor
        return JobPage.model_validate(self._json("GET", "/jobs", params=params))

    def iter_jobs(self, **filters: Any) -> Iterator[Job]:
        """Every job the filters select (``list_jobs``'s), page after page."""
        cursor = None
        while True:
            page = self.list_jobs(cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: object) -> Job:
        """Cancel (idempotent: a job already ended stays as it ended)."""
        return Job.model_validate(self._json("POST", f"/jobs/{job_id}/cancel"))

    def tasks(self, job_id: object) -> list[Task]:
        """An array job's tasks (every page): state, exit code, charge of each."""
        found: list[Task] = []
        cursor: str | None = None
        while True:
            params = {"cursor": cursor} if cursor else {}
            doc = self._json("GET", f"/jobs/{job_id}/tasks", params=params)
            found += [Task.model_validate(t) for t in doc["items"]]
            cursor = doc.get("next_cursor")
            if not cursor:
                return found

    def job_io(self, job_id: object) -> dict[str, Any]:
        """The job's inputs and outputs and what stage-in and stage-out did (``state``:
        ``collecting``, ``done``, ``failed``)."""
        doc: dict[str, Any] = self._json("GET", f"/jobs/{job_id}/io")
        return doc

    def cancel_task(self, job_id: object, index: int) -> Task:
        """Cancel one task of an array; the others go on."""
        return Task.model_validate(self._json("POST", f"/jobs/{job_id}/tasks/{index}/cancel"))

    def events(self, job_id: object, *, last_event_id: int | None = None) -> Iterator[JobEvent]:
        """The job's state changes as they happen (Server-Sent Events), from the first
        (or after ``last_event_id``); ends when the job has ended."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
        timeout = httpx.Timeout(self.config.timeout_s, read=60.0)
        with connect_sse(
            self._http, "GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout
        ) as source:
            check_stream(source.response)
            for sse in source.iter_sse():
                if sse.event == "state" and sse.data:
                    yield JobEvent.model_validate_json(sse.data)

    def wait(
        self,
        job_id: object,
        *,
        timeout_s: float | None = None,
        use_events: bool = True,
        poll: Backoff | None = None,
        collected: bool = False,
    ) -> Job:
        """The job once it has ended (``collected``: and its outputs are in the workspace,
        under ``jobs/<job id>/``). Follows its events (SSE); where the broker has no
        stream for it (429: too many open) or the stream breaks, polls with back-off.
        ``WaitTimeout`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        job = self._wait_ended(job_id, deadline, timeout_s, use_events, poll)
        if collected and job.outputs is not None:
            self._wait_collected(job, deadline)
        return job

    def _wait_collected(self, job: Job, deadline: float | None) -> None:
        """Until the job's stage-out is over (its outputs are in the workspace)."""
        while True:
            stage = (self.job_io(job.id)).get("stage_out") or {}
            if stage.get("state") in ("done", "failed"):
                return
            if not stage and job.started_at is None and job.submitted_at is None:
                return  # it never ran: nothing to collect
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"job {job.id}: outputs still being collected", job)
            time.sleep(0.5)

    def _wait_ended(
        self,
        job_id: object,
        deadline: float | None,
        timeout_s: float | None,
        use_events: bool,
        poll: Backoff | None,
    ) -> Job:
        job = self.job(job_id)
        if job.terminal:
            return job
        if use_events:
            job = self._wait_events(job, deadline)
            if job.terminal:
                return job
        delays = (poll or Backoff(first_s=0.5, factor=1.5, max_s=10.0)).delays()
        while not job.terminal:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"job {job.id} still {job.state} after {timeout_s} s", job)
            time.sleep(next(delays) if left is None else min(next(delays), left))
            job = self.job(job.id)
        return job

    def _wait_events(self, job: Job, deadline: float | None) -> Job:
        last: int | None = None
        while deadline is None or time.monotonic() < deadline:
            left = 60.0 if deadline is None else max(0.5, min(60.0, deadline - time.monotonic()))
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    f"/jobs/{job.id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self.config.timeout_s, read=left),
                ) as source:
                    check_stream(source.response)
                    for sse in source.iter_sse():
                        if sse.event != "state" or not sse.data:
                            continue
                        ev = JobEvent.model_validate_json(sse.data)
                        last = ev.event_id or last
                        if ev.state in TERMINAL_STATES:
                            return self.job(job.id)
            except httpx.ReadTimeout:
                continue  # no news in time: look at the deadline, then listen again
            except (httpx.TransportError, RateLimited):
                return job  # no stream to be had: the caller polls
            job = self.job(job.id)  # the stream ended (its time limit): ended, or listen on
            if job.terminal:
                return job
        return job

    # -- output ---------------------------------------------------------------

    def output(
        self,
        job_id: object,
        stream: Stream = "stdout",
        *,
        tail: int | None = None,
        task: int | None = None,
    ) -> str:
        """The job's stdout or stderr (its last MiB, or ``tail`` lines; ``task``: that
        array task's)."""
        params = output_params(stream, tail, task)
        return self._request("GET", f"/jobs/{job_id}/output", params=params).text

    def stream_output(
        self,
        job_id: object,
        stream: Stream = "stdout",
        *,
        task: int | None = None,
        poll_s: float = 1.0,
    ) -> Iterator[str]:
        """The output as it is written, until the job has ended and all of it was read
        (Range requests from where the last one stopped)."""
        offset = 0
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        params = output_params(stream, None, task)
        while True:
            ended = self.job(job_id).terminal
            while True:
                try:
                    resp = self._request(
                        "GET",
                        f"/jobs/{job_id}/output",
                        params=params,
                        headers={"Range": f"bytes={offset}-"},
                    )
                except RangeNotSatisfiable:
                    break  # nothing new yet
                if resp.status_code == 206:
                    offset += len(resp.content)
                    if resp.content:
                        yield decoder.decode(resp.content)
                    continue
                if offset == 0 and resp.content:  # no file to range over: the text it has
                    offset = len(resp.content)
                    yield decoder.decode(resp.content)
                break
            if ended:
                rest = decoder.decode(b"", final=True)
                if rest:
                    yield rest
                return
            time.sleep(poll_s)

    # -- workspace ------------------------------------------------------------

    def upload(self, source: Source, path: str, *, project_id: str | None = None) -> WorkspaceFile:
        """Store ``source`` (a file's path, bytes or a binary file) at workspace ``path``,
        streamed; the broker's sha256 of what it stored is checked against ours."""
        url = file_path(self.project_id(project_id), path)
        reopen = reopener(source)

        def attempt() -> WorkspaceFile:
            digest = hashlib.sha256()
            with reopen() as fh:
                resp = self._http.put(
                    url,
                    content=_chunks(fh, digest),
                    headers={"Content-Type": "application/octet-stream"},
                )
            row = WorkspaceFile.model_validate(check(resp).json())
            if row.sha256 != digest.hexdigest():
                raise IntegrityError(
                    f"{path}: the broker stored sha256 {row.sha256}, we sent {digest.hexdigest()}"
                )
            return row

        return self._retrying(attempt, retry=not hasattr(source, "read"))

    def download(self, path: str, dest: str | Path, *, project_id: str | None = None) -> Path:
        """Workspace ``path`` into file ``dest``, streamed, checked by its sha256. A
        broken transfer resumes where it stopped (``dest.part``, by Range and If-Range),
        in this call's retries or in a later call."""
        url = file_path(self.project_id(project_id), path)
        resume = Resume(Path(dest))

        def attempt() -> Path:
            for _ in range(2):
                with self._http.stream("GET", url, headers=resume.headers()) as resp:
                    if resp.status_code == 416 and resume.offset():
                        resume.discard()  # .part was of another version: start anew
                        continue
                    check_stream(resp)
                    with resume.start(resp) as out:
                        for chunk in resp.iter_bytes(CHUNK_BYTES):
                            out.write(chunk)
                    return resume.finish(expected_sha256(resp))
            raise AssertionError("unreachable: the second try sends no Range")

        return self._retrying(attempt)

    def read_file(self, path: str, *, project_id: str | None = None) -> bytes:
        """A (small) workspace file's bytes."""
        return self._request("GET", file_path(self.project_id(project_id), path)).content

    def list_files(
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
        pid = self.project_id(project_id)
        return WorkspaceListing.model_validate(
            self._json("GET", f"/projects/{pid}/files", params=params)
        )

    def iter_files(
        self, prefix: str = "", *, project_id: str | None = None
    ) -> Iterator[WorkspaceFile]:
        cursor = None
        while True:
            page = self.list_files(prefix, project_id=project_id, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def delete_file(self, path: str, *, project_id: str | None = None) -> None:
        self._request("DELETE", file_path(self.project_id(project_id), path))

    # -- who, balance, usage --------------------------------------------------

    def me(self) -> Me:
        return Me.model_validate(self._json("GET", "/me"))

    def _enterprise(self, enterprise_id: str | None) -> str:
        if enterprise_id:
            return str(enterprise_id)
        ent = self.me().enterprise
        if ent is None:
            raise ConfigError("this token belongs to no enterprise: pass enterprise_id")
        return str(ent.id)

    def balance(self, enterprise_id: str | None = None) -> Balance:
        """The enterprise's PFlop·h: granted, held, charged, available."""
        eid = self._enterprise(enterprise_id)
        return Balance.model_validate(self._json("GET", f"/enterprises/{eid}/balance"))

    def project_balance(self, project_id: str | None = None) -> ProjectBalance:
        pid = self.project_id(project_id)
        return ProjectBalance.model_validate(self._json("GET", f"/projects/{pid}/balance"))

    def usage(
        self, month: str | None = None, *, enterprise_id: str | None = None
    ) -> dict[str, Any]:
        """The month's statement (``YYYY-MM``; default: this month so far)."""
        eid = self._enterprise(enterprise_id)
        params = {"month": month} if month else {}
        doc: dict[str, Any] = self._json("GET", f"/enterprises/{eid}/usage", params=params)
        return doc


def check_stream(resp: httpx.Response) -> None:
    """A streamed answer's error, its body read first."""
    if not resp.is_success:
        resp.read()
        check(resp)


def reopener(source: Source) -> Callable[[], Any]:
    if isinstance(source, bytes):
        return lambda: io.BytesIO(source)
    if isinstance(source, str | Path):
        return lambda: Path(source).open("rb")
    return lambda: contextlib.nullcontext(source)


def _chunks(fh: IO[bytes], digest: Any) -> Iterable[bytes]:
    while chunk := fh.read(CHUNK_BYTES):
        digest.update(chunk)
        yield chunk
