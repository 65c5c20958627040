"""The local adapter: runs batch scripts as local processes (the embedded default).

Each job gets a directory ``<root_dir>/jobs/<id>/`` with its metadata and script; a
detached runner process (``_local_runner``) executes it and writes ``state.json``, so
jobs survive a broker restart and ``status`` only reads files. Nodes are virtual
names (``node_names``) that all map to this host.

Who a job runs as (never root): run as root, the adapter runs each job as the spec's
POSIX user where that user exists here, else as ``fallback_user`` (default ``nobody``;
``""`` refuses such jobs instead), and gives it the job's working directory. Run as any
other user, it cannot switch users: every job runs as that user (a single-user trial
setup; ``identity()`` says so, and the broker logs and reports it).

Resources are recorded and handed to the job as Slurm would (``SLURM_*`` variables), not
enforced: CPUs and memory are this host's, shared by every job. GPUs likewise: a job
asking ``gpus_per_node`` = N gets ``CUDA_VISIBLE_DEVICES=0,...,N-1`` (this host's first N
devices: real ones on a GPU workstation, none elsewhere, where only the CUDA simulator
runs such a job), ``SLURM_GPUS_ON_NODE`` and ``SLURM_JOB_GPUS``, and ``JobInfo.alloc_gpus``
= N x nodes. The ``gpus_per_node`` option states how many each node has (its nodes then
list them, typed by ``gpu_type``) and refuses a job asking more; unset, GPU requests are
not checked, as CPUs and memory are not, and nodes list no GPUs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import arrays
from .base import ClusterInfo, JobInfo, JobSpec, JobState, NodeInfo, PartitionInfo, SchedulerAdapter
from .errors import AdapterConfigError, SubmitRejected
from .slurm.script import check_environment, neutralise_directives

log = logging.getLogger(__name__)

_STATES = {
    "queued": JobState.PENDING,
    "running": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
    "timeout": JobState.TIMEOUT,
    # The runner died with its job still recorded as running (the host restarted, or
    # someone killed it): the job's end is unknown, and the fault is the machine's, not
    # the job's, as when a Slurm node fails under a job.
    "lost": JobState.NODE_FAIL,
}


class LocalAdapter(SchedulerAdapter):
    """Runs each job as a child process tree on this machine."""

    kind = "local"

    def __init__(
        self,
        cluster: str,
        *,
        root_dir: str,
        node_names: Sequence[str] = ("local1",),
        cpus_per_node: int | None = None,
        memory_mb_per_node: int = 4096,
        partition: str = "default",
        fallback_user: str = "nobody",
        run_as_user: bool | None = None,
        gpus_per_node: int | None = None,
        gpu_type: str | None = None,
    ) -> None:
        super().__init__(cluster)
        if not node_names:
            raise AdapterConfigError("node_names must not be empty", cluster=cluster)
        if gpus_per_node is not None and (isinstance(gpus_per_node, bool) or gpus_per_node < 0):
            raise AdapterConfigError("gpus_per_node must be 0 or more", cluster=cluster)
        self.gpus_per_node = gpus_per_node
        self.gpu_type = gpu_type if gpus_per_node else None
        if run_as_user is not None:
            log.warning(
                "cluster %s: the local adapter's run_as_user option is obsolete: run as"
                " root it always runs jobs as their POSIX user (else fallback_user)",
                cluster,
            )
        self.root = Path(root_dir)
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.node_names = tuple(node_names)
        self.cpus_per_node = cpus_per_node or os.cpu_count() or 1
        self.memory_mb_per_node = memory_mb_per_node
        self.partition = partition
        # Run as root: the user for jobs whose POSIX user does not exist here ("": none).
        self.fallback_user = fallback_user
        self.per_user = os.geteuid() == 0
        if self.per_user and fallback_user:
            self._fallback = _account(fallback_user)
            if self._fallback is None or self._fallback.uid == 0:
                raise AdapterConfigError(
                    f"fallback_user {fallback_user!r} must be an existing user other than root",
                    cluster=cluster,
                )
        else:
            self._fallback = None
        log.info("cluster %s: local jobs run as %s", cluster, self.identity())

    # -- who jobs run as ------------------------------------------------------------
    def identity(self) -> str:
        """Who this adapter's jobs run as, in words (for start-up logs and /readyz)."""
        if not self.per_user:
            me = _name_of(os.geteuid())
            return f"{me}, the broker's own user, for every job (single-user trial mode)"
        if self._fallback is None:
            return "each job's POSIX user (jobs whose user does not exist here are refused)"
        return f"each job's POSIX user, or {self._fallback.name} where it does not exist here"

    def _run_as(self, user: str | None) -> _Account | None:
        """The account a job runs as: None (no switch) unless we are root."""
        if not self.per_user:
            return None
        found = _account(user) if user else None
        if found is not None and found.uid != 0:
            return found
        if self._fallback is None:
            raise SubmitRejected(
                f"no POSIX user {user!r} on this host, and no fallback_user", cluster=self.cluster
            )
        return self._fallback

    def _hand_over(self, job_dir: Path, work: Path, who: _Account | None) -> None:
        """The script the job's user's alone to read and run; its directory its own.

        The adapter's records (``job_dir``: meta, state, script) stay root's, 0700: a
        job must not rewrite its own accounting. The script is executable (the runner
        executes it, so that the kernel honours its ``#!`` line as slurmd does) and
        handed over by descriptor, never by path. The job's directory (``work``: the
        spec's ``job_dir``, which holds its working directory) still owned by root (the
        broker could not give it to a user that does not exist here) goes to the
        account the job runs as, with what was staged into it; no link is followed, and
        the adapter's own directory is never handed over.
        """
        os.chmod(job_dir, 0o700)
        script = job_dir / "script.sh"
        os.chmod(script, 0o500)
        if who is None:
            return
        os.chown(script, who.uid, who.gid)
        st = os.lstat(work)
        if st.st_uid == who.uid or st.st_uid != 0:
            return
        mine = os.stat(self.root)
        for top, dirs, files, fd in os.fwalk(work, follow_symlinks=False):
            if top == str(work):
                os.chown(fd, who.uid, who.gid)
            dirs[:] = [
                d for d in dirs if not _same(os.stat(d, dir_fd=fd, follow_symlinks=False), mine)
            ]
            for name in (*dirs, *files):
                os.chown(name, who.uid, who.gid, dir_fd=fd, follow_symlinks=False)

    # -- drained nodes (kept in a file, like the scheduler's own state) ------------
    def _drained(self) -> dict[str, str]:
        return _read_json(self.root / "drained.json") or {}

    def drain(self, node: str, reason: str) -> None:
        if node not in self.node_names:
            raise SubmitRejected(f"unknown node {node!r}", cluster=self.cluster)
        with (self.root / "counter").open("a+") as fh:  # the same lock as job ids
            fcntl.flock(fh, fcntl.LOCK_EX)
            drained = {**self._drained(), node: reason}
            (self.root / "drained.json").write_text(json.dumps(drained))

    def resume(self, node: str) -> None:
        with (self.root / "counter").open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            drained = self._drained()
            drained.pop(node, None)
            (self.root / "drained.json").write_text(json.dumps(drained))

    # -- submit -------------------------------------------------------------------
    def _next_id(self) -> str:
        with (self.root / "counter").open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            current = int(fh.read().strip() or 0) + 1
            fh.seek(0)
            fh.truncate()
            fh.write(str(current))
            return str(current)

    def submit(self, spec: JobSpec) -> str:
        if spec.nodes > len(self.node_names):
            raise SubmitRejected(
                f"requested {spec.nodes} nodes, the local cluster has {len(self.node_names)}",
                cluster=self.cluster,
            )
        if spec.partition not in (None, self.partition):
            raise SubmitRejected(f"invalid partition {spec.partition!r}", cluster=self.cluster)
        gpus = spec.gpus_per_node or 0
        if gpus < 0 or (self.gpus_per_node is not None and gpus > self.gpus_per_node):
            raise SubmitRejected(
                f"gpus_per_node: requested {gpus}, the local cluster's nodes have"
                f" {self.gpus_per_node or 0}",
                cluster=self.cluster,
            )
        who = self._run_as(spec.user)
        try:
            variables = check_environment(spec.environment)
            array = arrays.parse(spec.array) if spec.array else None
        except ValueError as exc:
            raise SubmitRejected(str(exc), cluster=self.cluster) from exc
        if spec.dependency:
            raise SubmitRejected(
                "the local adapter has no dependencies: the broker holds such jobs",
                cluster=self.cluster,
            )
        job_id = self._next_id()
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir(mode=0o700)
        home = Path(spec.job_dir or spec.working_dir or job_dir / "work")
        home.mkdir(parents=True, exist_ok=True)
        work = Path(spec.working_dir) if spec.working_dir else home
        work.mkdir(parents=True, exist_ok=True)
        stdout = spec.stdout_path or str(job_dir / "stdout")
        drained = self._drained()
        usable = [n for n in self.node_names if n not in drained]
        nodes = list(spec.nodelist) or usable[: spec.nodes]
        if len(nodes) < spec.nodes:
            raise SubmitRejected(
                f"requested {spec.nodes} nodes, {len(usable)} are in service", cluster=self.cluster
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            **variables,
            **({"BROKER_JOB_ID": spec.broker_job_id} if spec.broker_job_id else {}),
            "BROKER_SCHEDULER_JOB_ID": job_id,
            "SLURM_JOB_ID": job_id,
            "SLURM_JOB_NUM_NODES": str(len(nodes)),
            "SLURM_JOB_NODELIST": ",".join(nodes),
            "SLURM_CPUS_ON_NODE": str(self.cpus_per_node),
        }
        if who is not None:
            env["USER"] = env["LOGNAME"] = who.name
        if spec.cpus_per_task:
            env["SLURM_CPUS_PER_TASK"] = str(spec.cpus_per_task)
        if gpus:  # this host's first devices, as Slurm numbers a node's GPUs
            devices = ",".join(str(i) for i in range(gpus))
            env["CUDA_VISIBLE_DEVICES"] = env["SLURM_JOB_GPUS"] = devices
            env["SLURM_GPUS_ON_NODE"] = env["SLURM_GPUS_PER_NODE"] = str(gpus)
        if array is not None:  # as Slurm sets them; the runner adds each task's index
            env["SLURM_ARRAY_JOB_ID"] = job_id
            env["SLURM_ARRAY_TASK_COUNT"] = str(len(array.indices))
            env["SLURM_ARRAY_TASK_MIN"] = str(array.indices[0])
            env["SLURM_ARRAY_TASK_MAX"] = str(array.indices[-1])
        meta = {
            "job_id": job_id,
            "name": spec.name,
            "tag": spec.tag,
            "account": spec.account,
            "user": spec.user,  # as the spec named it (JobInfo.user)
            "run_as": None if who is None else who.as_json(),  # who runs it (root: never)
            "partition": spec.partition or self.partition,
            "nodes": nodes,
            "gpus_per_node": gpus,
            "time_limit_minutes": spec.time_limit_minutes,
            "job_dir": str(home),
            "working_dir": str(work),
            "stdout_path": stdout,
            "stderr_path": spec.stderr_path or stdout,
            "environment": env,
            "submit_time": datetime.now(UTC).isoformat(),
            "array": None
            if array is None
            else {"indices": list(array.indices), "throttle": array.throttle},
        }
        # Directives mean nothing here; neutralised as on Slurm so the job's warnings hold.
        (job_dir / "script.sh").write_text(neutralise_directives(spec.script)[0])
        (job_dir / "meta.json").write_text(json.dumps(meta))
        self._hand_over(job_dir, home, who)
        with (job_dir / "runner.log").open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", "scheduler_adapters._local_runner", str(job_dir)],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                close_fds=True,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        return job_id

    # -- follow -------------------------------------------------------------------
    def _info(self, job_id: str) -> JobInfo | None:
        job_dir = self.jobs_dir / job_id
        try:
            meta = json.loads((job_dir / "meta.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        state = _read_json(job_dir / "state.json") or {"state": "queued"}
        native = state.get("state", "queued")
        if native == "running" and not _alive(state.get("runner_pid")):
            # The runner may have written the job's end just before it exited: read again.
            state = _read_json(job_dir / "state.json") or state
            native = state.get("state", "queued")
            if native == "running":
                native, state["reason"] = "lost", "the job's runner process was lost"
        start = _ts(state.get("start_time"))
        end = _ts(state.get("end_time"))
        elapsed = None
        if start is not None:
            elapsed = int(((end or datetime.now(UTC)) - start).total_seconds())
        if meta.get("array"):
            return self._array_info(job_id, meta, state, native)
        return JobInfo(
            job_id=job_id,
            state=_STATES.get(native, JobState.UNKNOWN),
            native_state=native,
            reason=state.get("reason"),
            exit_code=state.get("exit_code"),
            nodes=tuple(meta["nodes"]),
            submit_time=_ts(meta["submit_time"]),
            start_time=start,
            end_time=end,
            elapsed_s=elapsed,
            tag=meta.get("tag"),
            name=meta.get("name"),
            account=meta.get("account"),
            partition=meta.get("partition"),
            user=meta.get("user"),
            alloc_gpus=int(meta.get("gpus_per_node") or 0) * len(meta["nodes"]) if start else 0,
        )

    def _array_info(
        self, job_id: str, meta: dict[str, Any], state: dict[str, Any], native: str
    ) -> JobInfo:
        """The array's tasks from the runner's state: a task not started is pending, or
        lost with the runner (as are the running ones: the machine's failure)."""
        lost = native == "lost"
        tasks = []
        started = state.get("tasks") or {}
        for index in meta["array"]["indices"]:
            task = started.get(str(index))
            if task is None:
                word = "lost" if lost else "cancelled" if native == "cancelled" else "queued"
                task = {"state": word}
            word = task.get("state", "queued")
            if lost and word == "running":
                word = "lost"
            start, end = _ts(task.get("start_time")), _ts(task.get("end_time"))
            if lost and end is None:
                end = datetime.now(UTC)
            elapsed = None
            if start is not None:
                elapsed = int(((end or datetime.now(UTC)) - start).total_seconds())
            tasks.append(
                JobInfo(
                    job_id=arrays.task_job_id(job_id, index),
                    state=_STATES.get(word, JobState.UNKNOWN),
                    native_state=word,
                    reason=task.get("reason") or (state.get("reason") if lost else None),
                    exit_code=task.get("exit_code"),
                    nodes=tuple(meta["nodes"]) if start else (),
                    start_time=start,
                    end_time=end,
                    elapsed_s=elapsed,
                    array_task_id=index,
                    alloc_gpus=int(meta.get("gpus_per_node") or 0) * len(meta["nodes"])
                    if start
                    else 0,
                )
            )
        base = JobInfo(
            job_id=job_id,
            state=JobState.PENDING,
            submit_time=_ts(meta["submit_time"]),
            tag=meta.get("tag"),
            name=meta.get("name"),
            account=meta.get("account"),
            partition=meta.get("partition"),
            user=meta.get("user"),
        )
        return arrays.aggregate(job_id, tasks, base=base)

    def status(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        out: dict[str, JobInfo] = {}
        for job_id in job_ids:
            if job_id.isdigit() and (info := self._info(job_id)) is not None:
                out[job_id] = info
        return out

    def cancel(self, job_id: str) -> None:
        head, _, index = job_id.partition("_")
        job_dir = self.jobs_dir / head
        if not head.isdigit() or (index and not index.isdigit()) or not job_dir.is_dir():
            return
        (job_dir / (f"cancel_{int(index)}" if index else "cancel")).touch()
        if index:
            return  # the array's runner looks for it on its next turn (0.2 s)
        state = _read_json(job_dir / "state.json") or {}
        pid = state.get("runner_pid")
        if state.get("state") == "running" and isinstance(pid, int) and _alive(pid):
            os.kill(pid, signal.SIGTERM)

    def _all(self) -> list[JobInfo]:
        ids = [p.name for p in self.jobs_dir.iterdir() if p.name.isdigit()]
        return [i for i in (self._info(j) for j in ids) if i is not None]

    def list_tagged(self, since: datetime) -> dict[str, JobInfo]:
        return {
            i.tag: i
            for i in self._all()
            if i.tag and i.submit_time is not None and i.submit_time >= since
        }

    def _busy_nodes(self) -> set[str]:
        busy: set[str] = set()
        for job_dir in self.jobs_dir.iterdir():
            state = _read_json(job_dir / "state.json") or {}
            if state.get("state") == "running" and _alive(state.get("runner_pid")):
                meta = _read_json(job_dir / "meta.json") or {}
                busy.update(meta.get("nodes", []))
        return busy

    def ping(self) -> ClusterInfo:
        busy = self._busy_nodes()
        idle = sum(1 for n in self.node_names if n not in busy)
        part = PartitionInfo(self.partition, len(self.node_names), idle, 0, len(busy))
        return ClusterInfo(name=self.cluster, version="local", partitions=(part,))

    def nodes(self) -> list[NodeInfo]:
        busy, drained = self._busy_nodes(), self._drained()
        return [
            NodeInfo(
                name=n,
                cpus=self.cpus_per_node,
                memory_mb=self.memory_mb_per_node,
                state="drain" if n in drained else "allocated" if n in busy else "idle",
                gpus=self.gpus_per_node or 0,
                gpu_type=self.gpu_type,
                partitions=(self.partition,),
                reason=drained.get(n),
            )
            for n in self.node_names
        ]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it has finished for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@dataclass(frozen=True)
class _Account:
    """A POSIX account a job runs as: the runner switches to all of it (groups too)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "gid": self.gid, "groups": list(self.groups)}


def _account(name: str) -> _Account | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return _Account(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(name, pw.pw_gid)))


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
