"""What the sync and async clients share: retries, back-off, paths, answers to types."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ._config import ClientConfig
from ._errors import APIError, IntegrityError, error_from_response

__all__ = [
    "RETRY_STATUSES",
    "Backoff",
    "Resume",
    "auth_headers",
    "check",
    "file_path",
    "new_idempotency_key",
    "retryable",
]

#: Answers worth another try of an idempotent request (the broker or a proxy is busy).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
CHUNK_BYTES = 1 << 20
USER_AGENT = "hpc-broker-client"


def new_idempotency_key() -> str:
    """A key for one submit: its retries send the same key, so the broker makes one job."""
    return f"client-{uuid.uuid4()}"


def auth_headers(cfg: ClientConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {cfg.token}", "User-Agent": USER_AGENT}


def file_path(project_id: str, path: str) -> str:
    rel = path.lstrip("/")
    if not rel:
        raise ValueError("a workspace path is needed")
    return f"/projects/{project_id}/files/{quote(rel, safe='/')}"


def check(resp: httpx.Response) -> httpx.Response:
    """``resp`` when it is 2xx, else its ``APIError`` raised (body read already)."""
    if resp.is_success:
        return resp
    raise error_from_response(resp)


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, APIError) and exc.status_code in RETRY_STATUSES


@dataclass
class Backoff:
    """Delays for retries and polls: ``first_s``, then times ``factor``, at most ``max_s``;
    a broker's ``Retry-After`` (capped at ``max_s`` times 3) wins when it is longer."""

    first_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0

    def delays(self) -> Iterator[float]:
        d = self.first_s
        while True:
            yield d
            d = min(self.max_s, d * self.factor)

    def after(self, exc: BaseException, planned_s: float) -> float:
        hint = getattr(exc, "retry_after_s", None)
        if hint is not None:
            return max(planned_s, min(float(hint), self.max_s * 3))
        return planned_s


@dataclass
class Resume:
    """A download in progress: ``<dest>.part`` and the version (ETag) it holds bytes of."""

    dest: Path

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")

    @property
    def tag_file(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part.etag")

    def offset(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def etag(self) -> str | None:
        try:
            return self.tag_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def headers(self) -> dict[str, str]:
        offset, tag = self.offset(), self.etag()
        if offset and tag:
            return {"Range": f"bytes={offset}-", "If-Range": tag}
        return {}

    def start(self, resp: httpx.Response) -> Any:
        """Open ``.part`` for this answer: appended to on 206, started anew on 200."""
        etag = resp.headers.get("etag", "")
        self.tag_file.write_text(etag)
        mode = "ab" if resp.status_code == 206 else "wb"
        return self.part.open(mode)

    def finish(self, expected_sha256: str | None) -> Path:
        if expected_sha256:
            digest = hashlib.sha256()
            with self.part.open("rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
                    digest.update(chunk)
            if digest.hexdigest() != expected_sha256:
                self.discard()
                raise IntegrityError(
                    f"{self.dest}: sha256 {digest.hexdigest()} is not the broker's"
                    f" {expected_sha256}; the partial download was removed"
                )
        self.part.replace(self.dest)
        self.tag_file.unlink(missing_ok=True)
        return self.dest

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.tag_file.unlink(missing_ok=True)


def expected_sha256(resp: httpx.Response) -> str | None:
    return resp.headers.get("x-checksum-sha256") or None


def output_params(stream: str, tail: int | None, task: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"stream": stream}
    if tail is not None:
        params["tail"] = tail
    if task is not None:
        params["task"] = task
    return params
