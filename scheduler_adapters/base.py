"""The scheduler-adapter contract: what the broker may ask of any scheduler.

Adapters know nothing of tenants, quotas or the broker's database: a job arrives as a
``JobSpec`` naming a scheduler account and a POSIX user as plain strings, and leaves
as ``JobInfo`` records. The broker's UUID for a job travels as ``JobSpec.tag`` and comes
back in ``JobInfo.tag`` so that a crash between submit and commit can be repaired by
``list_tagged`` (reconciliation) instead of submitting twice.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "TAG_PREFIX",
    "ClusterInfo",
    "JobInfo",
    "JobSpec",
    "JobState",
    "NodeInfo",
    "PartitionInfo",
    "SchedulerAdapter",
]

#: Prefix marking a tag in a job's comment: adapters write ``broker:<tag>`` and
#: return ``<tag>`` in ``JobInfo.tag``; the broker's tag is the job's UUID.
TAG_PREFIX = "broker:"


class JobState(enum.StrEnum):
    """The broker-level life cycle of a scheduler job.

    Every scheduler state maps onto one of these; a state an adapter does not know
    maps to ``UNKNOWN`` (logged), never to an exception. ``terminal`` states never change.

    The job's own ends: ``COMPLETED``, ``FAILED`` (a non-zero exit code or a signal),
    ``OUT_OF_MEMORY`` (it used more memory than it asked for), ``TIMEOUT``, ``CANCELLED``.
    The center's: ``NODE_FAIL`` (a node of the job failed while it ran), ``BOOT_FAIL``
    (its nodes failed to boot), ``PREEMPTED`` (stopped for another job and not requeued).
    A job that the scheduler requeues is not terminal: it is ``PENDING`` again.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_FAIL = "node_fail"
    BOOT_FAIL = "boot_fail"
    PREEMPTED = "preempted"
    OUT_OF_MEMORY = "out_of_memory"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.BOOT_FAIL,
        JobState.PREEMPTED,
        JobState.OUT_OF_MEMORY,
    }
)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A batch job to run, PSI/J-shaped. Broker-owned fields: account, user, tag.

    ``constraints`` is Slurm's feature expression (``"avx512&ib"``); ``qos`` and
    ``reservation`` go to the scheduler as given (the broker allow-lists them).
    ``working_dir`` is where the job starts (``sbatch --chdir``); ``job_dir`` the job's
    own directory that holds it and the output files (``HOME`` where an adapter sets
    one; the tree the local adapter hands to the job's user), ``working_dir`` when
    unset. ``environment`` is the job's own variables: adapters refuse names that
    would steer the scheduler (``slurm.script.env_name_refusal``) and add
    ``BROKER_JOB_ID`` = ``broker_job_id`` when given.
    """

    name: str
    script: str
    time_limit_minutes: int
    nodes: int = 1
    ntasks: int | None = None
    cpus_per_task: int | None = None
    memory_mb: int | None = None
    gpus_per_node: int | None = None
    partition: str | None = None
    constraints: str | None = None
    qos: str | None = None
    reservation: str | None = None
    account: str | None = None
    user: str | None = None
    tag: str | None = None
    working_dir: str | None = None
    job_dir: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    nodelist: Sequence[str] = ()
    exclusive: bool = True
    environment: Mapping[str, str] = field(default_factory=dict)
    broker_job_id: str | None = None
    #: A job array in Slurm's syntax (``"0-9%3"``: ``arrays.parse``); None: one job.
    array: str | None = None
    #: Slurm's ``--dependency`` expression on this cluster's job ids
    #: (``"afterok:12:13,afterany:14"``); only for adapters that ``supports_dependencies``.
    dependency: str | None = None


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a scheduler says of one job, live or finished.

    ``native_state`` is the scheduler's own word(s) for the state (Slurm's base state and
    flags joined by ``+``: ``NODE_FAIL``, ``PENDING+REQUEUED``); ``reason`` the scheduler's
    reason, if it gives one (``NodeDown``, ``BeginTime``...). ``exit_code`` follows the
    shell: 128 + the signal's number when a signal ended the job, and ``signal`` then
    names that signal's number.

    A job the scheduler requeued (after a node failure, a preemption, ``scontrol
    requeue``) keeps its id and runs again: ``restart_count`` says how many times, and
    ``runs`` holds what accounting recorded of each earlier run, oldest first, as
    ``JobInfo`` records whose ``state`` says how that run ended (``NODE_FAIL``,
    ``PREEMPTED``, ``BOOT_FAIL`` for the center's failures, ``PENDING`` for a plain
    requeue) with their own nodes, times and elapsed seconds. The fields above describe
    the last run. ``runs`` is empty for a job that ran once, and where an adapter cannot
    read earlier runs (then ``restart_count`` may exceed ``len(runs)``).

    A job array is one record (``arrays.aggregate``): ``tasks`` holds one record per task
    (``array_task_id`` set, ``job_id`` the task's ``<array id>_<index>``), the fields
    above the whole array (live while any task is).
    """

    job_id: str
    state: JobState
    native_state: str = ""
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    restart_count: int = 0
    runs: tuple[JobInfo, ...] = ()
    nodes: tuple[str, ...] = ()
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    elapsed_s: int | None = None
    tag: str | None = None
    name: str | None = None
    account: str | None = None
    partition: str | None = None
    #: The POSIX user the job runs as (for the local adapter: the one its spec named).
    #: With ``account`` it tells a job the broker submitted from one that merely
    #: carries a copy of its tag: anyone may write ``--comment=broker:<uuid>``.
    user: str | None = None
    array_task_id: int | None = None
    tasks: tuple[JobInfo, ...] = ()
    #: GPUs allocated to the job, all its nodes together (Slurm's ``gres/gpu`` TRES);
    #: 0 for a job without GPUs, a pending job, or where the scheduler does not say. An
    #: array: the most any one of its tasks holds (each task's own is in ``tasks``).
    alloc_gpus: int = 0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One compute node as the scheduler sees it.

    ``gpus`` is the node's configured GPU count (Slurm's ``gres`` ``gpu``, all types
    together); ``gpu_type`` the type its gres names (``h200`` of ``gpu:h200:2``), None
    where untyped or no GPUs (several types: the types joined by ``,``).
    """

    name: str
    cpus: int
    memory_mb: int
    state: str
    gpus: int = 0
    gpu_type: str | None = None
    partitions: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    reason: str | None = None
    alloc_cpus: int = 0


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """A partition's live load, as far as the scheduler tells it."""

    name: str
    total_nodes: int
    idle_nodes: int
    pending_jobs: int = 0
    running_jobs: int = 0


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """Answer of ``ping``: the scheduler is up, its version and its load."""

    name: str
    version: str
    partitions: tuple[PartitionInfo, ...] = ()


class SchedulerAdapter(abc.ABC):
    """Talks to one cluster's scheduler.

    Every method may raise ``SchedulerError``; ``SchedulerUnavailable`` means retry later.
    ``status`` answers for many jobs in one scheduler call and covers finished jobs
    (from accounting where the controller forgot them); ids it cannot find are absent
    from the result. ``cancel`` is idempotent: cancelling a finished or unknown job is
    not an error. ``cancel`` of ``<array id>_<index>`` cancels one task of an array.
    An adapter that ``supports_dependencies`` honours ``JobSpec.dependency``; for the
    others the broker holds a dependent job until its parents have ended.
    """

    kind: str = "abstract"
    supports_dependencies: bool = False

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        #: Called with a request's name (``squeue``, ``sacct``, ``GET jobs``...) each time
        #: the adapter sends one to the scheduler: the broker counts them per controller.
        self.on_request: Callable[[str], None] | None = None

    def _count(self, request: str) -> None:
        if self.on_request is not None:
            self.on_request(request)

    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Submit a batch job; return the scheduler's job id."""

    @abc.abstractmethod
    def status(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """Return what the scheduler knows of these jobs, keyed by job id."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Cancel a job; a no-op when it already ended or is unknown."""

    @abc.abstractmethod
    def ping(self) -> ClusterInfo:
        """Check the scheduler answers; raise ``SchedulerUnavailable`` if not."""

    @abc.abstractmethod
    def nodes(self) -> list[NodeInfo]:
        """List the cluster's nodes."""

    @abc.abstractmethod
    def list_tagged(self, since: datetime) -> dict[str, JobInfo]:
        """Jobs submitted since ``since`` whose comment carries a broker tag, keyed by tag."""

    def drain(self, node: str, reason: str) -> None:
        """Take a node out of scheduling with a reason (admin action)."""
        from .errors import SchedulerError

        raise SchedulerError(f"{self.kind} adapter cannot drain nodes", cluster=self.cluster)

    def resume(self, node: str) -> None:
        """Return a drained node to service."""
        from .errors import SchedulerError

        raise SchedulerError(f"{self.kind} adapter cannot resume nodes", cluster=self.cluster)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or child processes."""
