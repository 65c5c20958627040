"""The checks of a submission that need no database, made before any lock (``intake``'s
first step): the script's size and bytes, the Idempotency-Key's length, the environment,
the working directory, the array's syntax, the callback URL's name lookup (up to
seconds), the request's hash and the script's neutralised directives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import scheduler_adapters as sa_

from ..errors import InvalidInput
from ..schemas.jobs import JobCreate
from . import brokering, job_spec, webhooks

#: Warnings stored per job; a script with more neutralised lines gets a last one saying so.
MAX_WARNINGS = 50


@dataclass(frozen=True, slots=True)
class Prepared:
    """What ``prepare`` found: the parsed parts, or the refusal to give in its turn."""

    digest: str
    script: str
    warnings: list[str]
    environment: dict[str, str] | None = None
    working_directory: str | None = None
    array: sa_.ArraySpec | None = None
    error: InvalidInput | None = None


def request_hash(req: JobCreate) -> str:
    # Unset optional fields do not count: a field added to the spec later leaves the
    # hash of older requests, and so their Idempotency-Key replays, unchanged.
    body = req.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(_CANONICAL.encode(body).encode()).hexdigest()


#: ``json.dumps(body, sort_keys=True, separators=(",", ":"))``'s encoder, made once
#: (``json.dumps`` makes one per call when given options): the same text, so the same
#: hashes as the Idempotency-Keys already stored.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def with_shebang(script: str) -> str:
    return script if script.startswith("#!") else "#!/bin/bash\n" + script


def directive_warnings(script: str) -> list[str]:
    """One sentence per directive line of ``script`` that the scheduler will not see.

    The adapters neutralise the same lines when they submit (resources, placement,
    priority and identity come from the spec, which is what is held and billed).
    """
    _, removed = sa_.neutralise_directives(script)
    warnings = [d.warning for d in removed[:MAX_WARNINGS]]
    if len(removed) > MAX_WARNINGS:
        warnings.append(f"... and {len(removed) - MAX_WARNINGS} more neutralised lines")
    return warnings


def prepare(
    req: JobCreate,
    idempotency_key: str | None,
    *,
    max_script_bytes: int,
    allow_networks: Sequence[webhooks.Network] | None = None,
) -> Prepared:
    """The checks that need no database (the callback URL's lookup included)."""
    digest = request_hash(req)
    try:
        if len(req.script.encode()) > max_script_bytes:
            raise InvalidInput("script", f"is larger than {max_script_bytes} bytes")
        if "\x00" in req.script:
            raise InvalidInput("script", "must not contain NUL bytes")
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
            raise InvalidInput("Idempotency-Key", "must be 1 to 200 characters")
        environment = job_spec.check_environment(req.environment)
        working_directory = job_spec.check_working_directory(
            req.working_directory, req.inputs or ()
        )
        array = brokering.array_of(req)  # 422 naming `array`; partitions' limits in routing
        if req.callback_url is not None:
            webhooks.check_url(req.callback_url, "callback_url", allow=allow_networks)
    except InvalidInput as exc:
        return Prepared(digest, req.script, [], error=exc)
    return Prepared(
        digest,
        with_shebang(req.script),
        directive_warnings(req.script),
        environment,
        working_directory,
        array,
    )
