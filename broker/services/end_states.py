"""The reason a job shows: why it ended, in words, with the scheduler's own where it has one.

Every terminal job has a non-empty reason (``GET /jobs/{id}``, webhooks, the dashboard):

* ``completed``: ``exit code 0``;
* ``failed``: ``exit code 3`` or ``killed by signal 9 (SIGKILL)``;
* ``out_of_memory``: ``out of memory: used more than the 4096 MB per node it asked for``;
* ``timeout``: ``time limit of 30 minutes reached`` (or the job's deadline);
* ``cancelled``: ``cancelled by the user``, else ``cancelled by the scheduler or an
  administrator``;
* ``node_fail``, ``boot_fail``, ``preempted``: what the center's failure was, and
  whether it was charged (``BROKER_CHARGE_CENTER_FAILURES``).

The scheduler's reason (Slurm's ``state_reason``/``reason``: ``NodeDown``,
``JobLaunchFailure``...) follows in parentheses where it adds to the words; a requeued
job says how many times it was requeued. Live jobs show the scheduler's reason as it is
(``Priority``, ``AssocGrpBillingMinutes``...).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

import scheduler_adapters as sa_

from ..models import Job, JobStatus, JobTask
from .billing import CENTER_FAILURES

#: Slurm reasons that say nothing the words do not already say.
_SAID = frozenset({"", "None", "NonZeroExitCode", "TimeLimit", "OutOfMemory"})


def _scheduler_says(info: sa_.JobInfo) -> str:
    reason = (info.reason or "").strip()
    return "" if reason in _SAID else f" ({reason})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _exit(info: sa_.JobInfo) -> str:
    if info.signal:
        return f"killed by signal {info.signal} ({_signal_name(info.signal)})"
    if info.exit_code is not None:
        return f"exit code {info.exit_code}"
    return "failed (the scheduler gave no exit code)"


def _times(n: int) -> str:
    return f"{n} time{'s' if n > 1 else ''}"


def _requeues(info: sa_.JobInfo) -> str:
    return f"; requeued {_times(info.restart_count)}" if info.restart_count else ""


def end_reason(
    job: Job,
    state: JobStatus,
    info: sa_.JobInfo,
    *,
    center_failures_charged: bool,
    by_user: bool | None = None,
) -> str:
    """Why ``job`` (or one task of it) ended in ``state`` (terminal), from what the
    scheduler said (``info``).

    A center's failure says that it was not charged unless ``center_failures_charged``.
    ``by_user``: whether the user asked for the cancel (default: the job's own flag); a
    cancel the broker made for the job says why (``job.cancel_reason``).
    """
    if by_user is None:
        by_user = job.cancel_requested
    says = _scheduler_says(info)
    if state is JobStatus.COMPLETED:
        text = f"exit code {info.exit_code if info.exit_code is not None else 0}"
    elif state is JobStatus.FAILED:
        text = _exit(info) + says
    elif state is JobStatus.OUT_OF_MEMORY:
        asked = f" the {job.memory_mb} MB per node it asked for" if job.memory_mb else " its limit"
        text = f"out of memory: used more than{asked}{says}"
    elif state is JobStatus.TIMEOUT:
        if "DEADLINE" in info.native_state.upper():
            text = f"deadline reached before the job could finish{says}"
        else:
            text = f"time limit of {job.time_limit_minutes} minutes reached{says}"
    elif state is JobStatus.CANCELLED:
        if job.cancel_reason:
            text = job.cancel_reason
        elif by_user:
            text = "cancelled by the user"
        else:
            text = f"cancelled by the scheduler or an administrator{says}"
    elif state is JobStatus.NODE_FAIL:
        where = f" on {', '.join(info.nodes)}" if info.nodes else ""
        text = f"node failure{where} while the job ran{says}"
    elif state is JobStatus.BOOT_FAIL:
        text = f"the job's nodes failed to boot{says}"
    elif state is JobStatus.PREEMPTED:
        text = f"preempted by the scheduler for another job, not requeued{says}"
    else:
        text = f"{state.value}{says}"
    if state in CENTER_FAILURES and not center_failures_charged:
        text += "; not charged: the center's failure"
    return (text + _requeues(info))[:1000]


def live_reason(info: sa_.JobInfo) -> str:
    """The reason of a job still live: the scheduler's, said so for a requeued one."""
    if info.state is sa_.JobState.UNKNOWN:
        return f"unknown scheduler state {info.native_state!r}"
    reason = info.reason or ""
    if info.restart_count and info.state is sa_.JobState.PENDING:
        waiting = f": {reason}" if reason else ""
        return f"requeued ({_times(info.restart_count)}), waiting to run again{waiting}"[:1000]
    if info.restart_count and not reason:
        return f"requeued ({_times(info.restart_count)})"
    return reason[:1000]


def array_reason(tasks: Sequence[JobTask]) -> str:
    """An array's reason: its tasks counted by state (``10 tasks: 9 completed, 1
    cancelled``), then the first unsuccessful task's own reason."""
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    text = f"{len(tasks)} tasks: " + ", ".join(f"{n} {state}" for state, n in counts.items())
    bad = next((t for t in tasks if t.state.terminal and t.state is not JobStatus.COMPLETED), None)
    if bad is not None and bad.reason:
        text += f"; task {bad.index}: {bad.reason}"
    return text[:1000]
