"""Helpers shared by the Slurm adapters: job ids, error classes, partition load, tags."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from .. import arrays
from ..base import ClusterInfo, JobInfo, JobState, NodeInfo, PartitionInfo
from ..errors import AdapterConfigError
from .parse import node_is_idle

__all__ = [
    "JOB_ID",
    "TRANSIENT_MARKERS",
    "cluster_info",
    "exit_code_from_text",
    "exit_signal_from_text",
    "is_transient",
    "keyed_by_tag",
    "older_than_2302",
    "with_earlier_runs",
]

log = logging.getLogger(__name__)

#: A job id the adapters accept: ``123`` or an array task ``123_4``.
JOB_ID = re.compile(r"^\d+(_\d+)?$")

#: Error texts (lower case) meaning the scheduler is down or busy: retry later.
TRANSIENT_MARKERS = (
    "unable to contact slurm controller",
    "slurm controller not responding",
    "socket timed out",
    "connection refused",
    "connection reset",
    "zero bytes were transmitted",
    "communication connection failure",
    "resource temporarily unavailable",
    "temporarily unable to accept job",
    "slurmdbd",
    "persistent connection",
    "protocol authentication error",
    "timed out",
    "try again",
)


def is_transient(message: str) -> bool:
    """Whether an error text says "retry later" rather than "this request is wrong"."""
    low = message.lower()
    return any(marker in low for marker in TRANSIENT_MARKERS)


def exit_code_from_text(text: str) -> int | None:
    """``sacct -o ExitCode`` text (``3:0``; ``0:15`` for a signal) as one exit code."""
    code, _, sig = text.strip().partition(":")
    if not code.isdigit():
        return None
    if sig.isdigit() and int(sig):
        return 128 + int(sig)
    return int(code)


def exit_signal_from_text(text: str) -> int | None:
    """The signal of ``sacct -o ExitCode`` text (``0:15``: 15), or ``None`` for none."""
    _, _, sig = text.strip().partition(":")
    return int(sig) if sig.isdigit() and int(sig) else None


def with_earlier_runs(final: JobInfo, accounted: JobInfo | None) -> JobInfo:
    """The controller's record of a requeued job that ended, with the earlier runs that
    accounting recorded (``accounted.runs``: every record but the last one)."""
    runs = accounted.runs if accounted is not None else ()
    if len(runs) < final.restart_count:
        log.warning(
            "job %s: restart count %d, but accounting shows %d earlier runs",
            final.job_id,
            final.restart_count,
            len(runs),
        )
    return dataclasses.replace(final, runs=runs)


def from_accounting(final: JobInfo, accounted: JobInfo | None) -> JobInfo:
    """A job the controller says has ended, as accounting recorded it: its nodes, GPUs
    and times, and the earlier runs of a requeued job; its elapsed time the lower of the
    two records' (``_elapsed``: both leave out time suspended); the controller's state,
    reason and exit code. An array's tasks are merged likewise. Without an ended record
    in accounting yet (slurmdbd lags), the controller's record as it is."""
    if accounted is not None and not _same_job(final, accounted):
        accounted = None  # another job that had this id before the ids were reset
    if final.tasks:
        return arrays.merge(final, accounted)
    if accounted is None or not accounted.state.terminal:
        if final.restart_count:
            earlier = len(accounted.runs) if accounted is not None else 0
            if earlier < final.restart_count and _just_ended(final):
                # Settled now, the runs accounting has not recorded yet would go
                # uncharged: followed as still running until it has them (or a while).
                log.info("job %s: waiting for accounting's record of its runs", final.job_id)
                return dataclasses.replace(final, state=JobState.RUNNING)
            return with_earlier_runs(final, accounted)
        log.info("job %s ended, not yet in accounting: settled from the controller", final.job_id)
        return final
    return dataclasses.replace(
        with_earlier_runs(final, accounted),
        elapsed_s=_elapsed(final, accounted),
        start_time=accounted.start_time or final.start_time,
        end_time=accounted.end_time or final.end_time,
        nodes=accounted.nodes or final.nodes,
        alloc_gpus=accounted.alloc_gpus or final.alloc_gpus,
    )


def _elapsed(final: JobInfo, accounted: JobInfo) -> int | None:
    """The run's time used, without time suspended, as the lower of accounting's and
    the controller's. Both leave the time suspended out, and accounting can miss it: CI
    saw slurmdbd's elapsed of a job suspended as soon as it ran equal end - start (11 s
    for ``sleep 10`` suspended 6 s; the controller's 4). A job is not charged for time
    it was stopped that either of them saw."""
    known = [e for e in (accounted.elapsed_s, final.elapsed_s) if e is not None]
    return min(known) if known else None


#: How long a requeued job that ended waits for accounting (slurmdbd lags the
#: controller by seconds) before it is settled from what accounting has.
ACCOUNTING_WAIT_S = 60.0


def _just_ended(info: JobInfo) -> bool:
    if info.end_time is None:
        return False
    return (datetime.now(UTC) - info.end_time).total_seconds() < ACCOUNTING_WAIT_S


def _same_job(final: JobInfo, accounted: JobInfo) -> bool:
    """Whether an accounting record is of the controller's job, not of one that had its id
    before the ids were reset: by tag where both carry one (sites without
    ``AccountingStoreFlags=job_comment`` keep none), else by submit time."""
    if final.tag is not None and accounted.tag is not None:
        return final.tag == accounted.tag
    if final.submit_time is not None and accounted.submit_time is not None:
        return abs((final.submit_time - accounted.submit_time).total_seconds()) <= 2
    return True


def check_slurm_conf(path: str | None, cluster: str) -> None:
    """``AdapterConfigError`` if a configured ``slurm.conf`` does not exist: the tools
    would otherwise look for a configuration server in DNS, about a minute per call
    with no answer, before failing."""
    if path and not os.path.isfile(path):
        raise AdapterConfigError(f"slurm_conf {path} does not exist", cluster=cluster)


def older_than_2302(release: str) -> bool:
    """Whether a Slurm release string (``22.05.8``) predates 23.02."""
    parts = re.findall(r"\d+", release)
    if len(parts) < 2:
        return False
    return (int(parts[0]), int(parts[1])) < (23, 2)


def cluster_info(
    name: str, version: str, nodes: Iterable[NodeInfo], jobs: Iterable[JobInfo]
) -> ClusterInfo:
    """A ``ClusterInfo`` with per-partition node totals, idle nodes and job counts."""
    totals: dict[str, list[int]] = {}
    for node in nodes:
        for part in node.partitions:
            counts = totals.setdefault(part, [0, 0, 0, 0])
            counts[0] += 1
            counts[1] += node_is_idle(node)
    for job in jobs:
        for part in (job.partition or "").split(","):
            if part in totals:
                totals[part][2] += job.state is JobState.PENDING
                totals[part][3] += job.state is JobState.RUNNING
    partitions = tuple(
        PartitionInfo(part, total_nodes=c[0], idle_nodes=c[1], pending_jobs=c[2], running_jobs=c[3])
        for part, c in sorted(totals.items())
    )
    return ClusterInfo(name=name, version=version, partitions=partitions)


def keyed_by_tag(jobs: dict[str, JobInfo], since: datetime) -> dict[str, JobInfo]:
    """Tagged jobs submitted at or after ``since``, keyed by tag.

    Two jobs with one tag mean a job was submitted twice: the first (lowest id) is
    the one the broker adopts; the duplicate is logged for an operator.
    """
    out: dict[str, JobInfo] = {}
    for job_id in sorted(jobs, key=lambda j: (len(j), j)):
        info = jobs[job_id]
        if info.tag is None or (info.submit_time is not None and info.submit_time < since):
            continue
        if info.tag in out:
            log.warning(
                "tag %s is on jobs %s and %s: keeping the first",
                info.tag,
                out[info.tag].job_id,
                job_id,
            )
            continue
        out[info.tag] = info
    return out
