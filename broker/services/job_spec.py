"""A job spec's own settings beyond resources: its environment and working directory.

Both reach the scheduler as data, never through a shell: the variables as the
environment of the job (sbatch's, with ``--export=ALL``; slurmrestd's and pyslurm's
``environment``; the local runner's ``env``), the directory as ``--chdir`` /
``current_working_directory`` / the runner's ``cwd``. Names that would steer the
scheduler, its tools or its plugins are refused here with a 422 naming
``environment.<NAME>`` (the adapters refuse them too: ``scheduler_adapters.
env_name_refusal`` is the one rule). ``qos`` and ``reservation`` are checked by routing,
against the allow-lists of the partitions it considers (``brokering.misfit``).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import scheduler_adapters as sa_

from ..errors import InvalidInput

MAX_ENV_VARIABLES = 100
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_BYTES = 32 * 1024
#: All names and values together: the environment travels on every submit and read.
MAX_ENV_BYTES = 64 * 1024

_PATH_CHARS = frozenset(string.ascii_letters + string.digits + "._-+=,@/")
#: The job's output files, in its directory's root whatever its working directory.
_OUTPUT_FILES = frozenset({"stdout.txt", "stderr.txt"})


def check_environment(environment: Mapping[str, str] | None) -> dict[str, str]:
    """The spec's variables if every name and size is allowed (else ``InvalidInput``)."""
    if not environment:
        return {}
    if len(environment) > MAX_ENV_VARIABLES:
        raise InvalidInput("environment", f"at most {MAX_ENV_VARIABLES} variables")
    total = 0
    for name, value in environment.items():
        field = f"environment.{name[:MAX_ENV_NAME_CHARS]}"
        if len(name) > MAX_ENV_NAME_CHARS:
            raise InvalidInput(field, f"names are at most {MAX_ENV_NAME_CHARS} characters")
        why = sa_.env_name_refusal(name)
        if why is not None:
            raise InvalidInput(field, why)
        size = len(value.encode())
        if size > MAX_ENV_VALUE_BYTES:
            raise InvalidInput(field, f"values are at most {MAX_ENV_VALUE_BYTES} bytes")
        if "\x00" in value:
            raise InvalidInput(field, "must not contain NUL bytes")
        total += len(name) + size
    if total > MAX_ENV_BYTES:
        raise InvalidInput("environment", f"names and values exceed {MAX_ENV_BYTES} bytes")
    return dict(environment)


def check_working_directory(value: str | None, inputs: Sequence[str] = ()) -> str | None:
    """A plain relative path inside the job's directory (``InvalidInput`` otherwise).

    No absolute path, no ``.``/``..``/empty component, a short set of characters, not
    one of the job's output files, and no input file in its place (inputs are staged
    at their own paths under the job's directory).
    """
    if value is None:
        return None
    field = "working_directory"
    if value.startswith("/"):
        raise InvalidInput(field, "must be relative to the job's directory")
    parts = value.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(field, "must not contain '.', '..' or empty components")
    if not set(value) <= _PATH_CHARS:
        raise InvalidInput(field, "may use letters, digits, '._-+=,@' and '/' between names")
    path = "/".join(parts)
    if parts[0] in _OUTPUT_FILES:
        raise InvalidInput(field, f"{parts[0]} is the job's output file")
    for i, p in enumerate(inputs):
        if p == path or path.startswith(p + "/"):
            raise InvalidInput(field, f"inputs[{i}] {p!r} is staged as a file there")
    return path
