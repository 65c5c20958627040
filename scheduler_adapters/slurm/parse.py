"""One parser for Slurm's JSON of every version: squeue, sacct, sinfo and slurmrestd.

Shapes handled (see tests/fixtures/slurm/ for recorded examples):

* 22.05 (OpenAPI v0.0.38, dbv0.0.38): plain ints (``time_limit: 5``, ``null`` for
  unset), squeue ``job_state: "COMPLETED"``, sacct ``state: {current: "FAILED"}``,
  squeue ``exit_code`` as the raw wait status (768 for ``exit 3``), sacct ``exit_code``
  as ``{status: "SUCCESS", return_code: 0}``, ``meta.Slurm.release``.
* 23.02+ / 24.x / 25.x (data_parser v0.0.39–v0.0.44): numbers as
  ``{set, infinite, number}``, states as lists (``["COMPLETED", "COMPLETING"]``),
  ``exit_code: {status: ["EXITED"], return_code: {set, number}, signal: {id, name}}``,
  ``meta.slurm.release``, node states as lists.
* GPUs (every version, recorded on the dev clusters' partition ``gpu``): a job's
  allocated ones in the controller's ``tres_alloc_str`` (``...,gres/gpu=2``) and in
  accounting's ``tres.allocated`` (``{type: "gres", name: "gpu", count: 2}``); a node's
  configured ones in ``gres`` (``gpu:h200:2``, ``gpu:2(S:0-1)``). A site that also
  tracks typed TRES (``gres/gpu:h200``) lists the same GPUs twice: the untyped total
  wins (``tres_gpus``).

Everything returns the adapter contract's types; nothing here raises on an unexpected
field: a missing value becomes ``None`` and an unknown state ``JobState.UNKNOWN``.

Accounting (sacct ``--duplicates``, slurmrestd's slurmdb, which lists every record)
keeps one record per run of a requeued job, all under its id: ``parse_jobs`` returns the
last run, with the earlier ones in ``JobInfo.runs``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import hostlist  # type: ignore[import-untyped]

from ..arrays import aggregate, task_job_id
from ..arrays import parse as parse_array
from ..base import TAG_PREFIX, JobInfo, JobState, NodeInfo
from .states import map_state, run_state

__all__ = [
    "envelope_errors",
    "exit_code",
    "exit_signal",
    "expand_hostlist",
    "gres_gpus",
    "node_is_idle",
    "number",
    "parse_job",
    "parse_jobs",
    "parse_node",
    "parse_nodes",
    "plugin_version",
    "release",
    "timestamp",
    "tres_gpus",
    "with_runs",
]

log = logging.getLogger(__name__)
Json = Mapping[str, Any]


def number(value: Any) -> int | None:
    """A Slurm number: plain int/float, ``None``, or ``{set, infinite, number}``.

    Unset and infinite both give ``None`` (callers read ``None`` as "no value/no limit").
    """
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite", False):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        return int(value)  # isdigit() would let "¹" through, which int() refuses
    return None


def timestamp(value: Any) -> datetime | None:
    """An epoch-seconds Slurm time as an aware UTC datetime.

    0, unset, negative and out-of-range values (garbage from a confused daemon) give
    ``None``: a time the broker cannot trust is no time at all.
    """
    seconds = number(value)
    if not seconds or seconds < 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return [str(v) for v in value]
    return []


def exit_signal(value: Any) -> int | None:
    """The signal that ended a job (``exit_code``'s input), or ``None`` if none did."""
    if isinstance(value, Mapping):
        status = [s.upper() for s in _words(value.get("status"))]
        signal = value.get("signal")
        sig = (
            number(signal.get("id", signal.get("signal_id")))
            if isinstance(signal, Mapping)
            else None
        )
        return sig if ("SIGNALED" in status or "CORE_DUMPED" in status) and sig else None
    raw = number(value)
    return (raw & 0x7F) or None if raw is not None else None  # WIFSIGNALED


def exit_code(value: Any) -> int | None:
    """A job's exit code; a signal gives 128 + signal number (the shell's convention).

    22.05's squeue reports the raw ``wait()`` status (768 is ``exit 3``, 15 is SIGTERM);
    later versions and sacct report ``{status, return_code, signal}``.
    """
    sig = exit_signal(value)
    if sig:
        return 128 + sig
    if isinstance(value, Mapping):
        return number(value.get("return_code"))
    raw = number(value)
    return None if raw is None else (raw >> 8) & 0xFF


def expand_hostlist(spec: str | None) -> tuple[str, ...]:
    """Expand a Slurm hostlist (``cn[01-03,7],gpu1``) into node names, in order.

    python-hostlist does the expansion (nested ranges, padding, several bracket groups)
    and bounds it: a list naming more than its limit of hosts is refused, not expanded
    into memory. A list it cannot read gives no names (logged), never an exception.
    """
    if not spec or spec in ("None assigned", "(null)"):
        return ()
    try:
        return tuple(hostlist.expand_hostlist(spec, allow_duplicates=True))
    except hostlist.BadHostlist as exc:
        log.warning("unreadable node list %r: %s", spec[:200], exc)
        return ()


def release(doc: Json) -> str:
    """Slurm's release (``22.05.8``) from a JSON envelope's ``meta``; ``""`` if absent."""
    meta = doc.get("meta") or {}
    slurm = meta.get("slurm") or meta.get("Slurm") or {}
    rel = slurm.get("release")
    if rel:
        return str(rel)
    ver = slurm.get("version") or {}
    return ".".join(str(ver[k]) for k in ("major", "minor", "micro") if k in ver)


def plugin_version(doc: Json) -> str:
    """The OpenAPI plugin or data parser (``v0.0.38``, ``dbv0.0.38``, ``v0.0.40``...)."""
    plugin = (doc.get("meta") or {}).get("plugin") or {}
    text = str(plugin.get("data_parser") or plugin.get("type") or "")
    return text.rsplit("/", 1)[-1]


def envelope_errors(doc: Json) -> list[tuple[int | None, str]]:
    """The ``errors[]`` of a Slurm JSON reply as (error number, message) pairs."""
    out: list[tuple[int | None, str]] = []
    for err in doc.get("errors") or []:
        if not isinstance(err, Mapping):
            out.append((None, str(err)))
            continue
        code = number(err.get("error_number", err.get("error_code")))
        parts = [str(err[k]) for k in ("error", "description") if err.get(k)]
        message = ": ".join(dict.fromkeys(parts)) or "unknown slurm error"
        out.append((code, message))
    return out


def _mapping(value: Any) -> Json:
    return value if isinstance(value, Mapping) else {}


def _tag(comment: Any) -> str | None:
    if isinstance(comment, Mapping):  # sacct: {administrator, job, system}
        comment = comment.get("job")
    if isinstance(comment, str) and comment.startswith(TAG_PREFIX):
        return comment[len(TAG_PREFIX) :].strip() or None
    return None


def _user(job: Json) -> str | None:
    """squeue/slurmrestd ``user_name``; sacct/slurmdb ``user`` (or its association's)."""
    for value in (
        job.get("user_name"),
        job.get("user"),
        _mapping(job.get("association")).get("user"),
    ):
        if isinstance(value, str) and value:
            return value
    return None


def _account(job: Json) -> str | None:
    value = job.get("account") or _mapping(job.get("association")).get("account")
    return value if isinstance(value, str) and value else None


def _reason(value: Any) -> str | None:
    text = str(value) if value not in (None, "") else ""
    return None if text in ("", "None") else text


def parse_job(job: Json) -> JobInfo:
    """One job from squeue/slurmrestd ``jobs[]`` (controller) or sacct/slurmdb ``jobs[]``."""
    return _parse_job(job, run=False)


def _run_time(job: Json, start: datetime, end: datetime | None, state: JobState) -> int:
    """A controller record's run time as Slurm reckons it (``job_info.c``; pyslurm's
    ``Job.run_time`` likewise), without the time suspended: ``suspend_time`` is when the
    job was last suspended or resumed and ``pre_sus_time`` what it ran before then. Its
    end - start alone counts the time suspended. (Accounting's records carry
    ``time.elapsed``, which leaves it out, and do not come here.)"""
    before = number(job.get("pre_sus_time")) or 0
    if state is JobState.SUSPENDED:
        return max(0, before)
    stop = end if end is not None else datetime.now(UTC)
    since = timestamp(job.get("suspend_time"))
    if since is None or since < start:  # never suspended (or not in this run)
        return max(0, int((stop - start).total_seconds()))
    return max(0, int((stop - since).total_seconds()) + before)


def _parse_job(job: Json, *, run: bool) -> JobInfo:
    """``run``: the record is an earlier run of a requeued job, which has ended whatever
    its flags say: its state is ``run_state``'s and its end time is kept."""
    is_db = isinstance(job.get("state"), Mapping) or isinstance(job.get("time"), Mapping)
    if is_db:
        state_obj = _mapping(job.get("state"))
        words = _words(state_obj.get("current"))
        reason = _reason(state_obj.get("reason"))
        t = _mapping(job.get("time"))
        submit, start, end = (timestamp(t.get(k)) for k in ("submission", "start", "end"))
        elapsed = number(t.get("elapsed"))
    else:
        words = _words(job.get("job_state"))
        reason = _reason(job.get("state_reason"))
        submit, start, end = (
            timestamp(job.get(k)) for k in ("submit_time", "start_time", "end_time")
        )
        elapsed = None
    state = run_state(words) if run else map_state(words)
    if not state.terminal and not run:
        end = None  # for live jobs squeue's end_time is the expected end, not a fact
    if state is JobState.PENDING and not is_db and not run:
        # ...and a pending job's start_time the expected start (a requeued one's too).
        start = None
    if elapsed is None and start is not None:
        elapsed = _run_time(job, start, end, state)
    if not is_db and start is None:
        elapsed = None
    raw_exit = job.get("exit_code")
    return JobInfo(
        job_id=str(number(job.get("job_id")) or job.get("job_id")),
        state=state,
        native_state="+".join(words),
        reason=reason,
        exit_code=exit_code(raw_exit) if state.terminal or run else None,
        signal=exit_signal(raw_exit) if state.terminal or run else None,
        restart_count=number(job.get("restart_cnt")) or 0,
        nodes=expand_hostlist(str(job.get("nodes") or "")) if start else (),
        submit_time=submit,
        start_time=start,
        end_time=end,
        elapsed_s=elapsed,
        tag=_tag(job.get("comment")),
        name=job.get("name") or None,
        account=_account(job),
        partition=job.get("partition") or None,
        user=_user(job),
        array_task_id=_array(job)[1],
        alloc_gpus=_job_gpus(job, is_db) if start else 0,
    )


def tres_gpus(tres: Mapping[str, Any]) -> int:
    """GPUs in a TRES mapping (``{"gres/gpu": 2}``, ``{"gres/gpu:h200": 2}``): the untyped
    ``gres/gpu`` total where there is one, else the sum of the typed ones."""
    typed = 0
    for key, value in tres.items():
        name = str(key).lower()
        if name == "gres/gpu":
            return number(value) or 0
        if name.startswith("gres/gpu:"):
            typed += number(value) or 0
    return typed


def _tres_text(text: str) -> dict[str, str]:
    """``cpu=2,mem=512M,gres/gpu=2`` as a mapping (values as text)."""
    pairs = (item.partition("=") for item in text.split(","))
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _job_gpus(job: Json, is_db: bool) -> int:
    """GPUs allocated to a job, all nodes: accounting's ``tres.allocated`` list, or the
    controller's ``tres_alloc_str`` (empty while pending)."""
    if is_db:
        items = _mapping(job.get("tres")).get("allocated")
        if not isinstance(items, list):
            return 0
        return tres_gpus(
            {
                f"{item.get('type')}/{item.get('name')}": item.get("count")
                for item in items
                if isinstance(item, Mapping) and item.get("type") == "gres" and item.get("name")
            }
        )
    text = job.get("tres_alloc_str")
    return tres_gpus(_tres_text(text)) if isinstance(text, str) else 0


def _array(job: Json) -> tuple[str | None, int | None, str]:
    """(array job id, task index, pending tasks' spec) of a record; (None, None, "") for
    a plain job. squeue/slurmrestd: ``array_job_id``, ``array_task_id``,
    ``array_task_string``; sacct/slurmdb: ``array: {job_id, task_id, task}``. Slurm keeps
    an array's tasks that have not started as one record (no index, a spec such as
    ``2-9%3``); each task that started is a record of its own, with its own job id."""
    arr = job.get("array")
    if isinstance(arr, Mapping):
        array_id, index, pending = (
            number(arr.get("job_id")),
            number(arr.get("task_id")),
            arr.get("task"),
        )
    else:
        array_id = number(job.get("array_job_id"))
        index = number(job.get("array_task_id"))
        pending = job.get("array_task_string")
    if not array_id:
        return None, None, ""
    return str(array_id), index, pending if isinstance(pending, str) else ""


def _pending_indices(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return parse_array(text).indices
    except ValueError:
        log.warning("unreadable array task list %r", text[:200])
        return ()


def parse_jobs(doc: Json, cluster: str | None = None) -> dict[str, JobInfo]:
    """All jobs of an envelope keyed by job id; ``cluster`` drops other clusters' jobs.

    slurmdbd serves every cluster it accounts for, so sacct/slurmdb answers may mix them.
    Several accounting records under one id are the runs of a requeued job (see
    ``with_runs``).
    """
    records: dict[str, list[tuple[Json, JobInfo]]] = {}
    tasks: dict[str, dict[int, list[tuple[Json, JobInfo]]]] = {}
    waiting: dict[str, list[tuple[JobInfo, str]]] = {}
    for job in doc.get("jobs") or []:
        if cluster and job.get("cluster") not in (None, "", cluster):
            continue
        info = parse_job(job)
        array_id, index, remainder = _array(job)
        if array_id is None:
            records.setdefault(info.job_id, []).append((job, info))
        elif index is not None:
            task = dataclasses.replace(info, job_id=task_job_id(array_id, index))
            tasks.setdefault(array_id, {}).setdefault(index, []).append((job, task))
        else:
            tasks.setdefault(array_id, {})
            waiting.setdefault(array_id, []).append(
                (dataclasses.replace(info, job_id=array_id), remainder)
            )
    out = {job_id: with_runs(recs) for job_id, recs in records.items()}
    for array_id, by_index in tasks.items():
        seen = [with_runs(recs) for recs in by_index.values()]
        rest = waiting.get(array_id, [])
        pending = [i for _, text in rest for i in _pending_indices(text)]
        base = rest[0][0] if rest else (seen[0] if seen else None)
        out[array_id] = aggregate(array_id, seen, pending, base=base)
    return out


def _submitted(record: tuple[Json, JobInfo]) -> tuple[datetime, datetime]:
    _, info = record
    never = datetime.min.replace(tzinfo=UTC)
    return (info.submit_time or never, info.start_time or never)


def with_runs(records: list[tuple[Json, JobInfo]]) -> JobInfo:
    """One job from its records (raw JSON, parsed), one per run: the last run, with the
    earlier ones as ``runs`` (oldest first, each with ``run_state``'s end state).

    Slurm resubmits a requeued job under its id with a new submit time, so the latest
    submitted record is the last run. A record carrying another tag than the last run's
    belongs to another job that had the same id before the ids were reset: ignored.
    """
    if len(records) == 1:
        return records[0][1]
    ordered = sorted(records, key=_submitted)
    last = ordered[-1][1]
    runs = []
    for raw, info in ordered[:-1]:
        if info.tag != last.tag:
            log.info("job %s: ignoring a record of another job with the same id", last.job_id)
            continue
        runs.append(_parse_job(raw, run=True))
    return dataclasses.replace(
        last, runs=tuple(runs), restart_count=max(last.restart_count, len(runs))
    )


#: Commas between gres items, not those inside a socket list (``gpu:2(S:0,1)``).
_GRES_SPLIT = re.compile(r",(?![^(]*\))")


def gres_gpus(gres: Any) -> tuple[int, str | None]:
    """(GPUs, type) of a node's configured gres: ``gpu:h200:2`` is (2, "h200"),
    ``gpu:2(S:0-1)`` (2, None), ``gpu`` (1, None: a count defaults to 1); several types
    add up, their names joined by ``,``. Other gres (``shard``, ``mps``) are not GPUs."""
    items = _GRES_SPLIT.split(gres) if isinstance(gres, str) else _words(gres)
    total, types = 0, []
    for item in items:
        fields = item.split("(")[0].strip().removeprefix("gres:").split(":")
        if fields[0] != "gpu":
            continue
        count_text = fields[-1] if len(fields) > 1 and fields[-1].isdecimal() else "1"
        kind = fields[1] if len(fields) > 1 and not fields[1].isdecimal() else None
        total += int(count_text)
        if kind and kind not in types:
            types.append(kind)
    return total, ",".join(types) or None


def parse_node(node: Json) -> NodeInfo:
    """One node from ``sinfo --json`` (22.05), ``scontrol show nodes --json`` or REST."""
    state = node.get("state")
    words = [w.lower() for w in _words(state)]
    words += [f.lower() for f in _words(node.get("state_flags")) if f.lower() not in words]
    features = node.get("features")
    feature_list = features.split(",") if isinstance(features, str) else _words(features)
    gpus, gpu_type = gres_gpus(node.get("gres") or "")
    return NodeInfo(
        name=str(node.get("name", "")),
        cpus=number(node.get("cpus")) or 0,
        memory_mb=number(node.get("real_memory")) or 0,
        state="+".join(words) or "unknown",
        gpus=gpus,
        gpu_type=gpu_type,
        partitions=tuple(_words(node.get("partitions"))),
        features=tuple(f for f in feature_list if f),
        reason=_reason(node.get("reason")),
        alloc_cpus=number(node.get("alloc_cpus")) or 0,
    )


def parse_nodes(doc: Json) -> list[NodeInfo]:
    """Every node of an envelope with a ``nodes[]`` list."""
    return [parse_node(n) for n in doc.get("nodes") or []]


def node_is_idle(node: NodeInfo) -> bool:
    """Whether a node can start a job now: idle and not drained, down or reserved."""
    words = set(node.state.split("+"))
    blocked = {
        "drain",
        "draining",
        "drained",
        "down",
        "fail",
        "not_responding",
        "maint",
        "reserved",
        "powered_down",
        "powering_down",
        "future",
        "planned",
    }
    return "idle" in words and not words & blocked
