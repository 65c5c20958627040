"""The client's exceptions: every failure it raises, and the broker's ``{error, detail}``.

::

    BrokerError                    anything this client raises
    ├── ConfigError                no URL or token, or a config file others can read
    ├── TransportError             the broker could not be reached (connect, read, TLS)
    ├── WaitTimeout                wait() gave up before the job ended (.job: last seen)
    ├── IntegrityError             a download's bytes do not match the broker's sha256
    └── APIError                   the broker answered 4xx/5xx: .status_code .error .detail
        ├── BadRequest             400
        ├── Unauthorized           401 (unknown, revoked or expired token)
        ├── Forbidden              403 (the token's role does not allow it)
        ├── NotFound               404 (or not visible to this token)
        ├── Conflict               409
        │   └── QuotaExceeded      409 with error "QuotaExceeded"
        ├── PayloadTooLarge        413 (the project's storage quota, say)
        ├── RangeNotSatisfiable    416
        ├── InvalidInput           422 (the detail names the field)
        ├── RateLimited            429 (.retry_after_s)
        └── ServerError            5xx (.retry_after_s on 503)
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "APIError",
    "BadRequest",
    "BrokerError",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RangeNotSatisfiable",
    "RateLimited",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "WaitTimeout",
    "error_from_response",
]


class BrokerError(Exception):
    """Anything this client raises."""


class ConfigError(BrokerError):
    """No broker URL or token could be found, or the configuration is unsafe."""


class TransportError(BrokerError):
    """The broker could not be reached, or the connection broke mid-answer."""


class IntegrityError(BrokerError):
    """Downloaded bytes whose sha256 is not the one the broker announced."""


class WaitTimeout(BrokerError):
    """``wait`` ran out of time; ``job`` is the job as last seen."""

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job


class APIError(BrokerError):
    """The broker's answer ``{"error": NAME, "detail": MESSAGE}`` with its HTTP status."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        *,
        method: str = "",
        url: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {error}: {detail}")
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.method = method
        self.url = url
        self.retry_after_s = retry_after_s


class BadRequest(APIError):
    pass


class Unauthorized(APIError):
    pass


class Forbidden(APIError):
    pass


class NotFound(APIError):
    pass


class Conflict(APIError):
    pass


class QuotaExceeded(Conflict):
    """The enterprise's (or project's) available PFlop·h cannot cover the job's hold."""


class PayloadTooLarge(APIError):
    pass


class RangeNotSatisfiable(APIError):
    pass


class InvalidInput(APIError):
    pass


class RateLimited(APIError):
    pass


class ServerError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    416: RangeNotSatisfiable,
    422: InvalidInput,
    429: RateLimited,
}


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def error_from_response(resp: httpx.Response, body: bytes | None = None) -> APIError:
    """The exception for a 4xx/5xx answer, from its ``{error, detail}`` body (or its text)."""
    raw = resp.content if body is None else body
    error, detail = "", ""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        error = str(doc.get("error", ""))
        detail = str(doc.get("detail", ""))
    if not error:
        error = resp.reason_phrase or "HTTPError"
        detail = detail or raw.decode("utf-8", "replace")[:2000]
    status = resp.status_code
    cls: type[APIError]
    if status == 409 and error == "QuotaExceeded":
        cls = QuotaExceeded
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, APIError)
    return cls(
        status,
        error,
        detail,
        method=resp.request.method,
        url=str(resp.request.url),
        retry_after_s=_retry_after(resp),
    )
