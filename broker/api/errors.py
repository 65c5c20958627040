"""One error shape for every failure: ``{"error": Name, "detail": message}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors
from ..schemas.common import NUL_ERROR, ErrorRead

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[errors.BrokerError], int]] = [
    (errors.NotFound, 404),
    (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403),
    (errors.InvalidInput, 422),
    (errors.IdempotencyMismatch, 422),
    (errors.Conflict, 409),
    (errors.RateLimited, 429),
    (errors.Unavailable, 503),
]

_HTTP_NAMES = {
    400: "BadRequest",
    401: "Unauthenticated",
    403: "PermissionDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "RateLimited",
}


#: Documented on every API operation, so the OpenAPI document describes the one error shape
#: (FastAPI's own 422 schema, a list under ``detail``, is not what the API sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "model": ErrorRead,
        "description": text,
        # Explicit, for routes whose success is not JSON (job output is text/plain).
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorRead"}}},
    }
    for code, text in [
        (400, "Malformed request"),
        (401, "Missing, unknown or revoked token"),
        (403, "The token's role does not allow this"),
        (404, "Not found, or not visible to the caller"),
        (409, "Conflicts with current state (quota, capacity, status)"),
        (413, "Request body too large"),
        (422, "A field breaks a rule: the detail names it"),
        (429, "Too many requests for this token (see Retry-After)"),
        (503, "The database or a scheduler is unavailable (see Retry-After)"),
    ]
}


def error_response(
    status: int, name: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": name, "detail": detail}, status_code=status, headers=headers)


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def _json_error(err: Any, doc: Any) -> str:
    """Where a malformed body broke, as an editor counts: line and column (1-based)."""
    loc = tuple(err.get("loc", ()))
    pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    reason = str((err.get("ctx") or {}).get("error", "not JSON"))
    if pos is None or not isinstance(doc, str | bytes):
        return f"body: malformed JSON: {reason}"
    text = doc if isinstance(doc, str) else doc.decode("utf-8", "replace")
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"body: malformed JSON at line {line}, column {column}: {reason}"


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.BrokerError)
    async def _broker(_: Request, exc: errors.BrokerError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, errors.RateLimited):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(status, type(exc).__name__, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = []
        for err in exc.errors()[:5]:
            if err.get("type") == "json_invalid":
                msgs.append(_json_error(err, getattr(exc, "body", None)))
                continue
            where = _loc(tuple(err.get("loc", ())))
            if err.get("type") == NUL_ERROR:  # located by the body's validator
                where = str((err.get("ctx") or {}).get("where", where))
            # A rule of ours (a ValueError in a validator) reads as the rule alone.
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            msgs.append(f"{where}: {msg}")
        return error_response(422, "ValidationError", "; ".join(msgs) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, name, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error: %s", exc.orig)
        return error_response(
            409, "Conflict", "the request conflicts with a concurrent change; retry"
        )

    @app.exception_handler(DBAPIError)
    async def _db(_: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error: %s", exc.orig)
        return error_response(
            503, "Unavailable", "the database is unavailable; retry shortly", {"Retry-After": "5"}
        )
