"""Serve an already opened file, whole or one ``Range`` of it (RFC 9110 §14).

Responses are built from a descriptor the service layer opened safely (``safefs``),
never from a path: a path would be opened again by the response, after the checks.
"""

from __future__ import annotations

import os
import re

from fastapi.responses import Response, StreamingResponse

from ..services import safefs

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    """The range lies beyond the file's end (416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for one satisfiable range; ``None``: serve it whole
    (no header, several ranges or one we do not understand, as RFC 9110 allows)."""
    if not header:
        return None
    m = _RANGE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise Unsatisfiable
    return start, end


def file_response(
    fd: int, st: os.stat_result, range_header: str | None, media_type: str, headers: dict[str, str]
) -> Response:
    """Stream ``fd`` (closed when done): 200 whole, 206 one range, 416 out of range."""
    size = st.st_size
    base = {"Accept-Ranges": "bytes", **headers}
    try:
        rng = byte_range(range_header, size)
    except Unsatisfiable:
        os.close(fd)
        return Response(status_code=416, headers={**base, "Content-Range": f"bytes */{size}"})
    if rng is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = rng, 206
        base["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = max(0, end - start + 1)
    base["Content-Length"] = str(length)
    return StreamingResponse(
        safefs.iter_range(fd, start, length),
        status_code=status,
        media_type=media_type,
        headers=base,
    )
