"""Job arrays: Slurm's ``--array`` syntax, and one array's tasks seen as one job.

An array spec is Slurm's: comma-separated indices and ranges, a range with an optional
step, and an optional ``%N`` throttle (at most N tasks run at once)::

    "0-99"        100 tasks, 0 to 99
    "1,3,5-7"     1, 3, 5, 6, 7
    "0-15:4"      0, 4, 8, 12
    "0-99%3"      100 tasks, three at a time

``parse`` reads one (``ValueError`` saying what is wrong); ``aggregate`` turns the
records of an array's tasks into the ``JobInfo`` of the whole array, whose ``tasks``
hold one record per task (``array_task_id`` set).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .base import JobInfo, JobState

__all__ = ["ArraySpec", "aggregate", "merge", "parse", "task_job_id"]

#: Slurm's own default ``MaxArraySize`` is 1001 (indices 0..1000).
MAX_INDEX = 4_000_000
_RANGE = re.compile(r"^(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?$")


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """A parsed array spec: its indices (ascending, unique) and its throttle (or None)."""

    indices: tuple[int, ...]
    throttle: int | None

    @property
    def width(self) -> int:
        """How many tasks may run at once."""
        return min(len(self.indices), self.throttle or len(self.indices))

    def slurm(self) -> str:
        """The spec in Slurm's syntax, compacted (``0-9%3``)."""
        parts: list[str] = []
        run: list[int] = []
        for i in self.indices:
            if run and i != run[-1] + 1:
                parts.append(_span(run))
                run = []
            run.append(i)
        if run:
            parts.append(_span(run))
        text = ",".join(parts)
        return f"{text}%{self.throttle}" if self.throttle else text


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def parse(text: str, *, max_tasks: int | None = None) -> ArraySpec:
    """Read an array spec (see the module); ``ValueError`` says what is wrong.

    ``max_tasks`` bounds the number of tasks (checked while expanding, so a huge range
    is refused without being built).
    """
    body, pct, throttle_text = text.strip().partition("%")
    throttle: int | None = None
    if pct:
        if not throttle_text.isdecimal() or not 0 < int(throttle_text) <= MAX_INDEX:
            raise ValueError(f"throttle {throttle_text!r} after '%' must be a positive number")
        throttle = int(throttle_text)
    if not body:
        raise ValueError("names no task indices (e.g. '0-9', '1,3,5-7', '0-99%10')")
    indices: set[int] = set()
    for item in body.split(","):
        m = _RANGE.match(item.strip())
        if m is None:
            raise ValueError(f"{item!r} is not an index or a range (e.g. '7', '0-9', '0-15:4')")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3)) if m.group(3) is not None else 1
        if last < first:
            raise ValueError(f"range {item!r} ends before it starts")
        if step < 1:
            raise ValueError(f"range {item!r} has a step below 1")
        if last > MAX_INDEX:
            raise ValueError(f"index {last} is above {MAX_INDEX}")
        count = (last - first) // step + 1
        if max_tasks is not None and len(indices) + count > max_tasks:
            raise ValueError(f"has more than {max_tasks} tasks, the limit here")
        indices.update(range(first, last + 1, step))
    if max_tasks is not None and len(indices) > max_tasks:
        raise ValueError(f"has more than {max_tasks} tasks, the limit here")
    return ArraySpec(tuple(sorted(indices)), throttle)


def task_job_id(array_job_id: str, index: int) -> str:
    """The scheduler's name for one task: ``<array job id>_<index>`` (scancel, sacct)."""
    return f"{array_job_id}_{index}"


_LIVE = (JobState.RUNNING, JobState.SUSPENDED, JobState.PENDING, JobState.UNKNOWN)


def aggregate(
    job_id: str,
    tasks: Iterable[JobInfo],
    pending: Iterable[int] = (),
    *,
    base: JobInfo | None = None,
) -> JobInfo:
    """The whole array as one ``JobInfo``: ``tasks`` one record per task seen (each with
    ``array_task_id``), ``pending`` the indices still waiting as one record (Slurm keeps
    an array's unstarted tasks as a single pending job), ``base`` any record of the
    array (its tag, account, user, name, partition).

    The array is live while any task is (running if one runs); once every task seen
    has ended and none waits it has ended: ``COMPLETED`` when all completed, else the
    end of the first task (by index) that did not complete. Nodes are every task's,
    elapsed seconds the sum of the tasks', ``alloc_gpus`` the most any one task holds
    (each task's own is in ``tasks``).
    """
    seen = {t.array_task_id: t for t in tasks if t.array_task_id is not None}
    waiting = sorted(set(pending) - seen.keys())
    for index in waiting:
        seen[index] = JobInfo(
            job_id=task_job_id(job_id, index),
            state=JobState.PENDING,
            native_state="PENDING",
            reason=base.reason if base else None,
            array_task_id=index,
        )
    ordered = tuple(seen[i] for i in sorted(seen))
    states = [t.state for t in ordered]
    if any(s in _LIVE for s in states):
        state = next(s for s in _LIVE if s in states)
    elif states and all(s is JobState.COMPLETED for s in states):
        state = JobState.COMPLETED
    elif states:
        state = next(t.state for t in ordered if t.state is not JobState.COMPLETED)
    else:
        state = JobState.UNKNOWN
    nodes = tuple(dict.fromkeys(n for t in ordered for n in t.nodes))
    starts = [t.start_time for t in ordered if t.start_time]
    ends = [t.end_time for t in ordered if t.end_time]
    elapsed = [t.elapsed_s for t in ordered if t.elapsed_s is not None]
    failed = next(
        (t for t in ordered if t.state is not JobState.COMPLETED and t.state.terminal), None
    )
    template = base or (ordered[0] if ordered else None)
    fields = (
        {f.name: getattr(template, f.name) for f in dataclasses.fields(JobInfo)} if template else {}
    )
    fields.update(
        job_id=job_id,
        state=state,
        native_state="ARRAY:"
        + ",".join(sorted({t.native_state or t.state.value for t in ordered}))[:50],
        reason=None if state.terminal else (base.reason if base else None),
        exit_code=(failed.exit_code if failed else 0) if state.terminal else None,
        signal=failed.signal if failed and state.terminal else None,
        restart_count=0,
        runs=(),
        nodes=nodes,
        start_time=min(starts) if starts else None,
        end_time=max(ends) if state.terminal and ends else None,
        elapsed_s=sum(elapsed) if elapsed else None,
        array_task_id=None,
        tasks=ordered,
        alloc_gpus=max((t.alloc_gpus for t in ordered), default=0),
    )
    return JobInfo(**fields)


def merge(live: JobInfo, db: JobInfo | None) -> JobInfo:
    """An array as the controller (``live``) and accounting (``db``) each saw it: every
    task accounting knows (the controller forgets ended ones after ``MinJobAge``), the
    controller's record where it has one (accounting lags behind it)."""
    if db is None or not db.tasks:
        return live
    tasks = {t.array_task_id: t for t in db.tasks}
    tasks.update({t.array_task_id: t for t in live.tasks})
    return aggregate(live.job_id, tasks.values(), base=live)
