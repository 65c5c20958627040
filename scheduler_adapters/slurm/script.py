"""Turn a ``JobSpec`` into what ``sbatch`` runs: a neutralised script, options, environment.

The spec is what the broker holds, routes and bills, so resources, placement, priority
and identity come from the spec alone: the broker's values go on sbatch's command line,
and the user's script directives are an **allow-list**. A directive line that sets
anything beyond these harmless options is neutralised whole (rewritten as
``#BROKER-REMOVED ...``, keeping line numbers so the user's line numbers still hold):

* ``-J``/``--job-name``: the broker's ``--job-name`` on the command line wins anyway;
* ``--mail-type``, ``--mail-user``: notices about this job, sent by the site's MailProg;
* ``--signal``: a signal to this job before its time limit.

Everything else is refused, among them: resources (``-N``, ``-n``, ``-c``, ``--mem*``,
``-t``, ``--gres``, ``-G``, ``--exclusive``...), placement (``-p``, ``-w``, ``-x``, ``-C``,
``--reservation``...), priority and timing (``-q``, ``--nice``, ``--priority``, ``-b``,
``-d``, ``--deadline``, ``-H``...), identity and accounting (``-A``, ``--comment``,
``--uid``, ``--gid``, ``-M``, ``--wckey``...), the environment (``--export``,
``--get-user-env``: the spec's), files and directories (``-o``, ``-e``, ``-i``, ``-D``,
``--open-mode``: the broker's), ``--requeue`` (a rerun the spec did not ask for), job
arrays, ``--wait``, ``--wrap`` and anything sbatch adds later. Short as the list is, it
costs a user nothing the spec cannot say, and each neutralised line is reported back as
a warning (``NeutralisedDirective.warning``).

How sbatch 22.05 reads directives (its ``src/sbatch/opt.c`` and ``xlate.c``, each point
also checked against the dev clusters' sbatch 22.05.8):

* ``#SBATCH`` and the old ``#SLURM`` are directives only at column 0 and only up to the
  first line that is neither blank nor a comment (``  #SBATCH`` is a plain comment).
  Their words are argv for getopt_long, across lines (``-J`` at the end of one line
  takes the next line's first word), so unambiguous prefixes (``--nic=5`` is ``--nice``),
  bundles (``-vN2``) and ``--opt value`` all count. Here only exact long names are accepted:
  a prefix of an allowed name may also be a prefix of a refused one.
* Words split at C whitespace; quotes group and a backslash escapes, but an escaped
  space still splits (``-J a\\ --time=9`` sets the time) and an unquoted ``#`` ends
  the line. A line with a quote, a backslash or a character outside printable ASCII
  before its comment is neutralised rather than second-guessed.
* A directive line that mentions ``hetjob`` or ``packjob`` (any case, anywhere) may start
  a heterogeneous job's next component: it is always neutralised. A bare ``:`` is fatal
  to sbatch and is not an allowed word either.
* ``#PBS`` and ``#BSUB`` lines are translated by sbatch (``-l nodes=8``, ``-p 5``...)
  well past the first command, unless ``--ignore-pbs``: ``build_sbatch`` passes
  ``--ignore-pbs`` and every such line is neutralised wherever it is (a ``#PBS`` line a
  script writes out through a here-document is rewritten too).
* sbatch refuses scripts with NUL bytes or DOS line breaks, so lines split at ``\\n``.

slurmrestd and pyslurm pass the script through without reading directives (checked on
slurmrestd 22.05); the script is neutralised for them, and for the local adapter, all
the same, so one job behaves alike everywhere and its warnings are true on every kind.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from ..arrays import parse as parse_array
from ..base import TAG_PREFIX, JobSpec

__all__ = [
    "ALLOWED_LONG",
    "ALLOWED_SHORT",
    "RESERVED_ENV_PREFIXES",
    "NeutralisedDirective",
    "SbatchRequest",
    "build_environment",
    "build_sbatch",
    "check_dependency",
    "check_environment",
    "env_name_refusal",
    "neutralise_directives",
    "wrap_array_task",
]

#: Long options a script may set (each takes a value: ``--opt=v`` or ``--opt v``).
ALLOWED_LONG = frozenset({"job-name", "mail-type", "mail-user", "signal"})
#: Short options a script may set (each takes a value: ``-Jv`` or ``-J v``).
ALLOWED_SHORT = frozenset("J")
#: Lines sbatch reads as its own directives, up to the first command.
_SBATCH_MAGIC = ("#SBATCH", "#SLURM")
#: Lines sbatch translates from other schedulers, anywhere, unless ``--ignore-pbs``.
_WRAPPER_MAGIC = ("#PBS", "#BSUB")
_HET_SEPARATOR = re.compile("hetjob|packjob", re.IGNORECASE)
#: C's isspace() in the C locale: sbatch's word and command boundaries.
_C_SPACE = " \t\n\v\f\r"
_WORDS = re.compile(r"[^ \t\n\v\f\r]+")
_PLAIN = re.compile(r"[ -~\t]*")  # printable ASCII and tabs
_REMOVED = "#BROKER-REMOVED "
_FROM_SPEC = "resources, placement, priority and identity come from the job spec"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SET_IN_SCRIPT = "export it in the script if the job needs it"
#: Prefixes of the environment names a spec may not set, with why. The spec's variables
#: are the job's own: what steers the scheduler, its tools or its plugins stays Slurm's,
#: and a script can still ``export`` any of them for itself.
RESERVED_ENV_PREFIXES: tuple[tuple[str, str], ...] = (
    # SLURM_CONF, SLURM_ACCOUNT...; inside a job SLURM_JOB_ID and the rest are Slurm's.
    ("SLURM_", "Slurm's own variables steer its tools and describe the job"),
    # sbatch reads SBATCH_ACCOUNT, SBATCH_QOS, SBATCH_RESERVATION... as options.
    ("SBATCH_", "sbatch reads it as an option"),
    ("SALLOC_", "salloc reads it as an option"),
    ("SRUN_", "srun reads it as an option"),
    # Spank plugin options travel as these; plugins (some running as root) read them.
    ("SPANK_", "Slurm's plugins read it"),
    ("_SLURM", "Slurm's plugins read it"),
    # srun sets these for each task: the wiring between the launcher and MPI.
    ("PMI_", "srun sets it for each task (the process-management interface)"),
    ("PMIX_", "srun sets it for each task (the process-management interface)"),
    ("BROKER_", "the broker sets it (BROKER_JOB_ID, BROKER_SCHEDULER_JOB_ID)"),
    # The dynamic loader reads these in every program: the job's own are the job's
    # business, but not ones that would follow a submission into the scheduler's tools.
    ("LD_", "the dynamic loader reads it in every program"),
    # Which GPUs a job sees: Slurm sets them from its allocation, but leaves a job
    # without GPUs the value it brought, which would reach a shared node's GPUs.
    ("CUDA_VISIBLE_DEVICES", "the scheduler sets it from the job's GPUs (gpus_per_node)"),
    ("GPU_DEVICE_ORDINAL", "the scheduler sets it from the job's GPUs (gpus_per_node)"),
    ("ROCR_VISIBLE_DEVICES", "the scheduler sets it from the job's GPUs (gpus_per_node)"),
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_WARNING_TEXT_MAX = 200


@dataclass(frozen=True, slots=True)
class NeutralisedDirective:
    """One directive line of the user's script that the scheduler will not see.

    ``line`` counts from 1 in the script as the user wrote it (before any ``#!`` line
    was added); ``text`` is the line; ``reason`` says why it was neutralised.
    """

    line: int
    text: str
    reason: str

    @property
    def warning(self) -> str:
        """``line 3: '#SBATCH --nodes=64' neutralised: --nodes is not allowed ...``."""
        text = self.text
        if len(text) > _WARNING_TEXT_MAX:
            text = text[:_WARNING_TEXT_MAX] + "..."
        return f"line {self.line}: {text!r} neutralised: {self.reason}"


@dataclass(frozen=True, slots=True)
class SbatchRequest:
    """What to run: ``sbatch`` + ``options`` with ``script`` on its stdin.

    ``removed_directives`` lists the user's directive lines that were neutralised.
    """

    options: list[str]
    script: str
    removed_directives: list[NeutralisedDirective]


def _refused_word(words: list[str]) -> str | None:
    """Why getopt_long would set something off the allow-list from ``words``, or None."""
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and len(word) > 2:
            name, eq, _ = word[2:].partition("=")
            if name not in ALLOWED_LONG:
                return f"--{name} is not allowed in a script ({_FROM_SPEC})"
            takes_next = not eq
        elif word.startswith("-") and len(word) > 1 and word != "--":
            if word[1] not in ALLOWED_SHORT:
                return f"-{word[1]} is not allowed in a script ({_FROM_SPEC})"
            takes_next = len(word) == 2  # else the rest of the word is the value
        else:
            return f"{word!r} is not an option sbatch accepts in a script"
        if takes_next:
            if i + 1 == len(words):
                # sbatch would take the next directive line's first word as the value.
                return f"{word} has no value on its line"
            i += 1
        i += 1
    return None


def _sbatch_refusal(line: str, magic: str) -> str | None:
    """Why an ``#SBATCH``/``#SLURM`` line must be neutralised, or None to keep it."""
    if _HET_SEPARATOR.search(line):
        return "a heterogeneous-job separator: the job is the one component its spec describes"
    body = line[len(magic) :].split("#", 1)[0]  # an unquoted '#' ends sbatch's words
    if not _PLAIN.fullmatch(body) or any(c in body for c in "\"'\\"):
        return "quoted, escaped or non-ASCII words are not allowed in a directive"
    return _refused_word(_WORDS.findall(body))


def neutralise_directives(script: str) -> tuple[str, list[NeutralisedDirective]]:
    """The script as the scheduler gets it, and the directive lines neutralised in it.

    Keeps ``#SBATCH``/``#SLURM`` lines made only of allowed options (see the module),
    rewrites every other one before the first command, and every ``#PBS``/``#BSUB``
    line, as ``#BROKER-REMOVED ...``. A script without a ``#!`` line gets
    ``#!/bin/bash`` (sbatch refuses it otherwise); line numbers in the result's
    ``NeutralisedDirective`` records are those of ``script`` as given.
    """
    added = not script.startswith("#!")
    lines = ("#!/bin/bash\n" + script if added else script).split("\n")
    removed: list[NeutralisedDirective] = []
    in_header = True
    for i in range(1, len(lines)):
        line = lines[i]
        reason: str | None = None
        if line.startswith(_WRAPPER_MAGIC):
            magic = next(m for m in _WRAPPER_MAGIC if line.startswith(m))
            reason = f"{magic} directives are not honoured ({_FROM_SPEC})"
        elif in_header and line.startswith(_SBATCH_MAGIC):
            magic = next(m for m in _SBATCH_MAGIC if line.startswith(m))
            reason = _sbatch_refusal(line, magic)
        elif in_header:
            rest = line.lstrip(_C_SPACE)
            in_header = not rest or rest.startswith("#")  # sbatch stops at the first command
        if reason is not None:
            removed.append(NeutralisedDirective(i if added else i + 1, line, reason))
            lines[i] = _REMOVED + line[1:]
    return "\n".join(lines), removed


def env_name_refusal(name: str) -> str | None:
    """Why a job spec may not set environment variable ``name``, or None if it may.

    A name is letters, digits and ``_``, not starting with a digit; names that would
    steer the scheduler, its tools or plugins are refused (``RESERVED_ENV_PREFIXES``).
    ``PATH``, ``HOME`` and the like are the job's to set.
    """
    if not _ENV_NAME.match(name):
        return "is not a variable name (letters, digits and '_', not starting with a digit)"
    for prefix, why in RESERVED_ENV_PREFIXES:
        if name.startswith(prefix):
            return f"names starting with {prefix} are reserved: {why}; {_SET_IN_SCRIPT}"
    return None


def check_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The spec's variables, checked; ``ValueError`` naming ``environment.<NAME>``."""
    for name, value in environment.items():
        why = env_name_refusal(name)
        if why is None and "\0" in value:
            why = "contains a NUL byte"
        if why is not None:
            raise ValueError(f"environment.{name}: {why}")
    return dict(environment)


def build_environment(
    spec: JobSpec,
    *,
    home: str = "/",
    user: str | None = None,
    slurm_conf: str | None = None,
) -> dict[str, str]:
    """The job's whole environment (slurm-cli hands it to sbatch as ``--export-file``,
    slurmrestd and pyslurm in the submission itself).

    Nothing of the broker's own environment leaks in: ``PATH``, ``HOME``, ``LANG``, the
    user's names, the spec's variables (``check_environment``: ``ValueError`` for a
    refused one), ``BROKER_JOB_ID`` when the spec carries the broker's id, and
    ``SLURM_CONF``. The scheduler's id is known only once the job exists: inside a
    Slurm job it is ``SLURM_JOB_ID``.
    """
    env = {"PATH": DEFAULT_PATH, "HOME": home, "LANG": "C.UTF-8"}
    if user:
        env["USER"] = env["LOGNAME"] = user
    env.update(check_environment(spec.environment))
    if spec.broker_job_id:
        env["BROKER_JOB_ID"] = spec.broker_job_id
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def _opt(name: str, value: object) -> str:
    text = str(value)
    if "\n" in text or "\0" in text:
        raise ValueError(f"{name}: line breaks are not allowed")
    return f"--{name}={text}"


def build_sbatch(spec: JobSpec) -> SbatchRequest:
    """Options for ``sbatch`` (after the program name) and the neutralised script.

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
        "--ignore-pbs",  # #PBS/#BSUB lines are neutralised anyway; belt and braces
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
        "qos": spec.qos,
        "reservation": spec.reservation,
        "chdir": spec.working_dir,
        "output": spec.stdout_path,
        "error": spec.stderr_path,
        "nodelist": ",".join(spec.nodelist) or None,
        "array": spec.array,
        "dependency": spec.dependency,
    }
    opts += [_opt(name, value) for name, value in optional.items() if value is not None]
    if spec.exclusive:
        opts.append("--exclusive")
    if spec.array:
        parse_array(spec.array)  # ValueError: not an array spec
    if spec.dependency and not _DEPENDENCY.fullmatch(spec.dependency):
        raise ValueError(
            f"dependency: {spec.dependency!r} is not afterok/afterany/afternotok:<ids>"
        )
    script, removed = neutralise_directives(spec.script)
    if spec.array:
        script = wrap_array_task(script, spec.job_dir)
    return SbatchRequest(options=opts, script=script, removed_directives=removed)


_DEPENDENCY = re.compile(
    r"(?:afterok|afterany|afternotok)(?::\d{1,12})+(?:,(?:afterok|afterany|afternotok)(?::\d{1,12})+)*"
)


def check_dependency(dependency: str | None) -> None:
    """``ValueError`` unless ``dependency`` is None or Slurm's ``afterok:12:13,afterany:14``
    (the conditions the broker uses, on numeric job ids)."""
    if dependency is not None and not _DEPENDENCY.fullmatch(dependency):
        raise ValueError(f"dependency: {dependency!r} is not afterok/afterany/afternotok:<ids>")


def wrap_array_task(script: str, job_dir: str | None) -> str:
    """A batch script that runs ``script`` (neutralised) as one task of an array, with
    ``BROKER_ARRAY_TASK_ID`` set as ``SLURM_ARRAY_TASK_ID`` is.

    Slurm sets a task's index only when it runs, so the variable cannot travel with the
    submission. The wrapper is a bash script: the directive lines ``script`` kept (its
    header's allowed ``#SBATCH`` lines), the export, then ``script`` itself written to a
    private file (in the job's directory, else ``$TMPDIR``) and executed, so its own
    ``#!`` line chooses its interpreter as it would unwrapped; its exit status is the
    task's.
    """
    lines = script.split("\n")
    kept = [ln for ln in lines[1:] if ln.startswith(_SBATCH_MAGIC)]
    body = script if script.endswith("\n") else script + "\n"
    mark = "BROKER_SCRIPT_" + hashlib.sha256(body.encode()).hexdigest()[:16]
    while mark in body:
        mark += "_"
    where = shlex.quote(job_dir) if job_dir else '"${TMPDIR:-/tmp}"'
    return "\n".join(
        [
            "#!/bin/bash",
            *kept,
            'export BROKER_ARRAY_TASK_ID="${SLURM_ARRAY_TASK_ID:-}"',
            f'__broker_task="$(mktemp {where}/.broker-task-XXXXXXXX)" || exit 1',
            f"cat > \"$__broker_task\" <<'{mark}'",
            body + mark,
            'chmod 0700 "$__broker_task"',
            '"$__broker_task" "$@"',
            "__broker_rc=$?",
            'rm -f "$__broker_task"',
            "exit $__broker_rc",
            "",
        ]
    )
