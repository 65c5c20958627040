"""Turn a ``JobSpec`` into what ``sbatch`` runs: a sanitised script, options, environment.

Broker-owned directives (account, comment, uid, gid, cluster, array) are decided by
the broker, never by the user's script:

* the broker's own values go on the command line, which sbatch applies after the
  script's ``#SBATCH`` lines, so they win;
* ``#SBATCH`` lines that name a broker-owned option are neutralised anyway (rewritten as
  ``#BROKER-REMOVED ...``, keeping line numbers) because some have no command-line value
  to be overridden by (``--array``, ``--clusters``, ``--uid`` when the broker sets none).

sbatch reads ``#SBATCH`` lines only up to the first command, accepts unambiguous
prefixes of long options (``--acc=x`` is ``--account=x``) and bundled short options
(``-vAfoo``); the matching below is deliberately at least as broad.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from ..base import TAG_PREFIX, JobSpec

__all__ = [
    "BROKER_OWNED_LONG",
    "BROKER_OWNED_SHORT",
    "SbatchRequest",
    "build_environment",
    "build_sbatch",
    "sanitize_script",
]

#: Long options that only the broker may set.
BROKER_OWNED_LONG = ("account", "comment", "uid", "gid", "clusters", "cluster", "array")
#: Their short forms: -A account, -M clusters, -a array.
BROKER_OWNED_SHORT = frozenset("AMa")
#: sbatch short options that take an argument (the rest of a bundle is that argument).
_SHORT_WITH_ARG = frozenset("aABcCdDeFGiJkLmMnNopqStUwx")
_MAGIC = "#SBATCH"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Environment names a spec may not set: they would steer sbatch or the Slurm client.
_RESERVED_ENV_PREFIXES = ("SBATCH_", "SLURM_CONF", "SALLOC_", "SRUN_")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class SbatchRequest:
    """What to run: ``sbatch`` + ``options`` with ``script`` on its stdin.

    ``removed_directives`` lists the user's ``#SBATCH`` lines that were neutralised.
    """

    options: list[str]
    script: str
    removed_directives: list[str]


def _owned_token(token: str) -> bool:
    if token.startswith("--"):
        name = token[2:].split("=", 1)[0]
        return bool(name) and any(opt.startswith(name) for opt in BROKER_OWNED_LONG)
    if token.startswith("-") and len(token) > 1:
        for ch in token[1:]:
            if ch in BROKER_OWNED_SHORT:
                return True
            if ch in _SHORT_WITH_ARG:
                return False  # the rest of the bundle is this option's argument
    return False


def _directive_is_owned(line: str) -> bool:
    body = line[len(_MAGIC) :]
    try:
        tokens = shlex.split(body, comments=True)
    except ValueError:  # unbalanced quotes: judge the raw words
        tokens = body.split()
    return any(_owned_token(t) for t in tokens)


def sanitize_script(script: str) -> tuple[str, list[str]]:
    """Return the script with broker-owned ``#SBATCH`` lines neutralised, and those lines.

    A script without a ``#!`` line gets ``#!/bin/bash`` (sbatch refuses it otherwise).
    """
    text = script if script.startswith("#!") else "#!/bin/bash\n" + script
    lines = text.split("\n")
    removed: list[str] = []
    for i, line in enumerate(lines):
        if i == 0:
            continue
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break  # sbatch stops reading directives at the first command
        if line.startswith(_MAGIC) and _directive_is_owned(line):
            removed.append(line)
            lines[i] = "#BROKER-REMOVED " + line[1:]
    return "\n".join(lines), removed


def build_environment(
    spec: JobSpec,
    *,
    home: str = "/",
    user: str | None = None,
    slurm_conf: str | None = None,
) -> dict[str, str]:
    """The whole environment sbatch runs in; with ``--export=ALL`` it becomes the job's.

    Nothing of the broker's own environment leaks in. Raises ``ValueError`` for a
    variable name that is malformed or would steer Slurm (``SBATCH_*``, ``SLURM_CONF``).
    """
    env = {"PATH": DEFAULT_PATH, "HOME": home, "LANG": "C.UTF-8"}
    if user:
        env["USER"] = env["LOGNAME"] = user
    for name, value in spec.environment.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"environment: invalid variable name {name!r}")
        if name.startswith(_RESERVED_ENV_PREFIXES):
            raise ValueError(f"environment: {name} is reserved for the scheduler")
        if "\0" in value:
            raise ValueError(f"environment: {name} contains a NUL byte")
        env[name] = value
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def _opt(name: str, value: object) -> str:
    text = str(value)
    if "\n" in text or "\0" in text:
        raise ValueError(f"{name}: line breaks are not allowed")
    return f"--{name}={text}"


def build_sbatch(spec: JobSpec) -> SbatchRequest:
    """Options for ``sbatch`` (after the program name) and the sanitised script.

    Raises ``ValueError`` for a spec sbatch cannot express safely (the caller turns it
    into ``SubmitRejected``).
    """
    if spec.time_limit_minutes < 1:
        raise ValueError("time_limit_minutes: must be at least 1")
    if spec.nodes < 1:
        raise ValueError("nodes: must be at least 1")
    opts = [
        "--parsable",
        "--export=ALL",
        _opt("job-name", spec.name or "broker-job"),
        _opt("nodes", spec.nodes),
        _opt("time", spec.time_limit_minutes),
    ]
    if spec.tag:
        opts.append(_opt("comment", f"{TAG_PREFIX}{spec.tag}"))
    optional: Mapping[str, object | None] = {
        "account": spec.account,
        "partition": spec.partition,
        "ntasks": spec.ntasks,
        "cpus-per-task": spec.cpus_per_task,
        "mem": f"{spec.memory_mb}M" if spec.memory_mb else None,
        "gpus-per-node": spec.gpus_per_node or None,
        "constraint": spec.constraints,
        "chdir": spec.working_dir,
        "output": spec.stdout_path,
        "error": spec.stderr_path,
        "nodelist": ",".join(spec.nodelist) or None,
    }
    opts += [_opt(name, value) for name, value in optional.items() if value is not None]
    if spec.exclusive:
        opts.append("--exclusive")
    script, removed = sanitize_script(spec.script)
    return SbatchRequest(options=opts, script=script, removed_directives=removed)
