"""The ``pyslurm`` adapter: Slurm's C API through pyslurm, for Slurm 25.11 sites.

pyslurm is an optional extra, imported only when this adapter is built (it must be
compiled against the site's exact Slurm release: PyPI's 25.11.x refuses 22.05 with
"Slurm version mismatch"). No Slurm 25.11 runs on the project's machines, so this
adapter is tested against a fake module shaped like pyslurm 25.11's documented API:

* ``pyslurm.JobSubmitDescription(**fields).submit() -> int``
* ``pyslurm.Jobs.load()`` (a mapping of job id to ``pyslurm.Job``), ``pyslurm.Job(id).cancel()``
* ``pyslurm.db.Jobs.load(pyslurm.db.JobFilter(ids=[...]))`` for finished jobs
* ``pyslurm.Nodes.load()``, ``pyslurm.Node.load(name).modify(pyslurm.Node(state=, reason=))``
* ``pyslurm.RPCError`` with ``errno``.
* GPUs: ``JobSubmitDescription(gres_per_node={"gpu": n})`` (pyslurm's ``--gpus-per-node``;
  Slurm gets ``tres_per_node=gres:gpu:n``); a job's ``allocated_tres.gres`` maps
  ``gpu`` (and ``gpu:<type>`` where typed TRES are tracked) to objects with ``count``;
  a node's ``configured_gres`` is ``{"gpu:h200": 2}`` (all seen live on gamma).

Attribute names of ``Job``/``db.Job``/``Node`` are read defensively (first present
name wins) because they moved between pyslurm releases.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from .. import arrays
from ..base import ClusterInfo, JobInfo, JobSpec, NodeInfo, SchedulerAdapter
from ..errors import AdapterConfigError, SchedulerError, SchedulerUnavailable, SubmitRejected
from .common import JOB_ID, TRANSIENT_MARKERS, cluster_info, from_accounting, keyed_by_tag
from .parse import exit_code, exit_signal, expand_hostlist, gres_gpus, number, tres_gpus
from .script import build_environment, check_dependency, neutralise_directives, wrap_array_task
from .states import map_state

__all__ = ["PySlurmAdapter"]

log = logging.getLogger(__name__)

#: The slurm.conf each imported pyslurm module was loaded with (libslurm reads it once).
_LOADED_CONF: dict[str, str] = {}


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    seconds = number(value)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def _nodes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return expand_hostlist(value)
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value)
    return ()


def _reason(value: Any) -> str | None:
    return None if value in (None, "", "None") else str(value)


def _exit_signal(job: Any) -> int | None:
    """The signal that ended a job, or None.

    pyslurm 25.11 decodes the wait status: ``exit_code`` 3 and ``exit_code_signal`` 0
    for ``exit 3``; without ``exit_code_signal``, ``exit_code`` is the raw status (768).
    """
    if hasattr(job, "exit_code_signal"):
        return number(job.exit_code_signal) or None
    raw = number(_attr(job, "exit_code"))
    return ((raw & 0x7F) or None) if raw is not None else None


def _exit_code(job: Any) -> int | None:
    """A job's exit code; a signal gives 128 + its number, like the shell."""
    sig = _exit_signal(job)
    if sig:
        return 128 + sig
    raw = _attr(job, "exit_code")
    return number(raw) if hasattr(job, "exit_code_signal") else exit_code(raw)


def _values(collection: Any) -> list[Any]:
    # pyslurm's Jobs/Nodes/db.Jobs are MultiClusterMaps: not Mappings, but they have
    # values(), and iterating them yields the keys (job ids, node names).
    values = getattr(collection, "values", None)
    if isinstance(collection, Mapping) or callable(values):
        return list(values()) if callable(values) else []
    return list(collection or [])


class PySlurmAdapter(SchedulerAdapter):
    """Drive one cluster through pyslurm in this process.

    Options: ``slurm_cluster`` (``ClusterName`` if different), ``module`` (import name,
    ``pyslurm``; tests point it at a fake), ``slurm_conf`` (the ``slurm.conf`` libslurm
    reads when pyslurm is first imported: one Slurm per process; also used, with
    ``bin_dir``, by accounting sync through sacctmgr).

    Jobs run as the spec's user (``user_id``): libslurm lets only root or the cluster's
    ``SlurmUser`` submit for another user, so the broker runs as one of them.
    """

    kind = "pyslurm"
    supports_dependencies = True

    def __init__(
        self,
        cluster: str,
        *,
        slurm_cluster: str | None = None,
        module: str = "pyslurm",
        slurm_conf: str | None = None,
        bin_dir: str | None = None,
    ) -> None:
        super().__init__(cluster)
        self.slurm_cluster = slurm_cluster or cluster
        self.slurm_conf = slurm_conf
        self.bin_dir = bin_dir  # accounting's sacctmgr; pyslurm itself links libslurm
        loaded = _LOADED_CONF.get(module)
        if module in sys.modules and slurm_conf and loaded not in (None, slurm_conf):
            raise AdapterConfigError(
                f"{module} in this process already reads {loaded}, not {slurm_conf}: "
                "one pyslurm cluster per broker process",
                cluster=cluster,
            )
        saved = os.environ.get("SLURM_CONF")
        try:
            first = module not in sys.modules
            if slurm_conf and first:
                os.environ["SLURM_CONF"] = slurm_conf  # libslurm reads it on import
            self._ps: ModuleType = importlib.import_module(module)
            if slurm_conf and first:
                _LOADED_CONF[module] = slurm_conf
        except ImportError as exc:
            raise AdapterConfigError(
                f"the pyslurm adapter needs the {module!r} package built for this site's "
                f"Slurm (install the 'pyslurm' extra): {exc}",
                cluster=cluster,
            ) from exc
        finally:
            if saved is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = saved

    def _error(self, exc: BaseException, action: str) -> SchedulerError:
        message = f"{action}: {exc}"
        transient = any(marker in message.lower() for marker in TRANSIENT_MARKERS)
        cls = SchedulerUnavailable if transient else SchedulerError
        return cls(message, cluster=self.cluster, code=getattr(exc, "errno", None))

    def _rpc_errors(self) -> tuple[type[Exception], ...]:
        rpc = getattr(self._ps, "RPCError", None)
        if isinstance(rpc, type) and issubclass(rpc, Exception):
            return (rpc, OSError)
        return (OSError,)

    def _job_info(self, job: Any) -> JobInfo:
        state_text = str(_attr(job, "state", default=""))
        state = map_state(state_text.split("+") if "+" in state_text else state_text)
        start = _time(_attr(job, "start_time"))
        end = _time(_attr(job, "end_time")) if state.terminal else None
        elapsed = number(_attr(job, "elapsed_time", "run_time"))
        comment = str(_attr(job, "comment", default=""))
        return JobInfo(
            job_id=str(_attr(job, "id", "job_id")),
            state=state,
            native_state=state_text,
            reason=_reason(_attr(job, "state_reason")),
            exit_code=_exit_code(job) if state.terminal else None,
            signal=exit_signal(_attr(job, "exit_code")) if state.terminal else None,
            # pyslurm's collections are keyed by job id, so accounting's earlier runs of
            # a requeued job are not in reach: only their count (JobInfo.runs stays empty).
            restart_count=number(_attr(job, "restart_counter", "restart_cnt")) or 0,
            # Job.allocated_nodes (live), db.Job.nodelist (accounting): hostlists.
            nodes=_nodes(_attr(job, "nodes", "allocated_nodes", "nodelist")) if start else (),
            submit_time=_time(_attr(job, "submit_time")),
            start_time=start,
            end_time=end,
            elapsed_s=elapsed,
            tag=comment[len("broker:") :] if comment.startswith("broker:") else None,
            name=_attr(job, "name"),
            account=_attr(job, "account"),
            partition=_attr(job, "partition"),
            user=_attr(job, "user_name"),
            array_task_id=number(_attr(job, "array_task_id")) if _array_id(job) else None,
            alloc_gpus=_allocated_gpus(job) if start else 0,
        )

    def _mine(self, jobs: Iterable[Any]) -> dict[str, JobInfo]:
        """Jobs of this cluster by id; an array's records (one per task that started,
        one for the tasks still waiting) as one ``arrays.aggregate`` under the array's id."""
        out = {}
        tasks: dict[str, list[JobInfo]] = {}
        waiting: dict[str, tuple[JobInfo, tuple[int, ...]]] = {}
        for job in jobs:
            if _attr(job, "cluster", default=self.slurm_cluster) not in (self.slurm_cluster, ""):
                continue
            info = self._job_info(job)
            array_id = _array_id(job)
            if array_id is None:
                out[info.job_id] = info
            elif info.array_task_id is not None:
                task_id = arrays.task_job_id(array_id, info.array_task_id)
                tasks.setdefault(array_id, []).append(dataclasses.replace(info, job_id=task_id))
            else:
                text = str(_attr(job, "array_tasks_waiting", default="") or "")
                try:
                    pending = arrays.parse(text).indices if text else ()
                except ValueError:
                    pending = ()
                tasks.setdefault(array_id, [])
                waiting[array_id] = (dataclasses.replace(info, job_id=array_id), pending)
        for array_id, seen in tasks.items():
            base, pending = waiting.get(array_id, (seen[0] if seen else None, ()))
            out[array_id] = arrays.aggregate(array_id, seen, pending, base=base)
        return out

    def submit(self, spec: JobSpec) -> str:
        if spec.user is None:
            raise SubmitRejected("refusing to submit without a user", cluster=self.cluster)
        try:
            home = spec.job_dir or spec.working_dir or "/"
            env = build_environment(spec, home=home, user=spec.user)
            if spec.array:
                arrays.parse(spec.array)
            check_dependency(spec.dependency)
        except ValueError as exc:
            raise SubmitRejected(str(exc), cluster=self.cluster) from exc
        script, _ = neutralise_directives(spec.script)
        if spec.array:
            script = wrap_array_task(script, spec.job_dir)
        fields: dict[str, Any] = {
            "name": spec.name or "broker-job",
            "script": script,
            "user_id": spec.user,
            "time_limit": spec.time_limit_minutes,
            "nodes": spec.nodes,
            "environment": env,
            "account": spec.account,
            "partitions": spec.partition,
            "ntasks": spec.ntasks,
            "cpus_per_task": spec.cpus_per_task,
            "constraints": spec.constraints,
            "qos": spec.qos,
            "reservations": spec.reservation,
            "working_directory": spec.working_dir,
            "standard_output": spec.stdout_path,
            "standard_error": spec.stderr_path,
            "comment": f"broker:{spec.tag}" if spec.tag else None,
            "memory_per_node": f"{spec.memory_mb}M" if spec.memory_mb else None,
            "gres_per_node": {"gpu": spec.gpus_per_node} if spec.gpus_per_node else None,
            "required_nodes": list(spec.nodelist) or None,
            "resource_sharing": "exclusive" if spec.exclusive else None,
            "array": spec.array,
            "dependencies": spec.dependency,
        }
        desc = self._ps.JobSubmitDescription(**{k: v for k, v in fields.items() if v is not None})
        try:
            return str(desc.submit())
        except ValueError as exc:
            raise SubmitRejected(str(exc), cluster=self.cluster) from exc
        except self._rpc_errors() as exc:
            err = self._error(exc, "submit")
            if err.transient:
                raise err from exc
            raise SubmitRejected(err.message, cluster=self.cluster, code=err.code) from exc

    def status(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        wanted = {str(j) for j in job_ids if JOB_ID.match(str(j))}
        if not wanted:
            return {}
        try:
            live = self._mine(_values(self._ps.Jobs.load()))
            found = {j: live[j] for j in wanted if j in live}
            missing = wanted - found.keys()
            # Ended: settled from accounting (elapsed without time suspended, every run
            # of a requeued job, every task of an array: ``from_accounting``).
            ended = {j for j, info in found.items() if info.state.terminal}
            if missing or ended:
                db = self._ps.db
                flt = db.JobFilter(ids=sorted({int(j.split("_")[0]) for j in missing | ended}))
                done = self._mine(_values(db.Jobs.load(flt)))
                found.update({j: done[j] for j in missing if j in done})
                for j in ended:
                    found[j] = from_accounting(found[j], done.get(j))
        except self._rpc_errors() as exc:
            raise self._error(exc, "status") from exc
        return found

    def cancel(self, job_id: str) -> None:
        if not JOB_ID.match(str(job_id)):
            return
        head, _, index = str(job_id).partition("_")
        try:
            if index:
                self._cancel_task(head, int(index))
                return
            self._ps.Job(int(head)).cancel()
        except self._rpc_errors() as exc:
            text = str(exc).lower()
            if "invalid job id" in text or "already completing or completed" in text:
                return
            raise self._error(exc, "cancel") from exc

    def _cancel_task(self, array_id: str, index: int) -> None:
        """One task of an array: its own job once it started; one still waiting has no
        job of its own in pyslurm's reach, so ``scancel <array>_<index>`` (the cluster's
        ``slurm_conf``) cancels it."""
        for job in _values(self._ps.Jobs.load()):
            if _array_id(job) == array_id and number(_attr(job, "array_task_id")) == index:
                self._ps.Job(int(_attr(job, "id", "job_id"))).cancel()
                return
        from .cli import SlurmCliAdapter

        cli = SlurmCliAdapter(self.cluster, slurm_conf=self.slurm_conf, bin_dir=self.bin_dir)
        cli.cancel(arrays.task_job_id(array_id, index))

    def nodes(self) -> list[NodeInfo]:
        try:
            loaded = _values(self._ps.Nodes.load())
        except self._rpc_errors() as exc:
            raise self._error(exc, "nodes") from exc
        out = []
        for node in loaded:
            gres = _attr(node, "configured_gres", default={}) or {}
            gpus, gpu_type = _node_gpus(gres)
            out.append(
                NodeInfo(
                    name=str(_attr(node, "name")),
                    cpus=number(_attr(node, "total_cpus", "cpus")) or 0,
                    memory_mb=number(_attr(node, "real_memory", "memory")) or 0,
                    state=str(_attr(node, "state", default="unknown")).lower(),
                    gpus=gpus,
                    gpu_type=gpu_type,
                    partitions=tuple(_attr(node, "partitions", default=()) or ()),
                    features=tuple(
                        _attr(node, "available_features", "configured_features", default=()) or ()
                    ),
                    reason=_attr(node, "reason") or None,
                    alloc_cpus=number(_attr(node, "allocated_cpus", "alloc_cpus")) or 0,
                )
            )
        return out

    def ping(self) -> ClusterInfo:
        nodes = self.nodes()
        try:
            jobs = self._mine(_values(self._ps.Jobs.load()))
        except self._rpc_errors() as exc:
            raise self._error(exc, "ping") from exc
        version = str(getattr(self._ps, "__version__", "") or "")
        return cluster_info(self.cluster, version, nodes, jobs.values())

    def list_tagged(self, since: datetime) -> dict[str, JobInfo]:
        try:
            db = self._ps.db
            done = self._mine(_values(db.Jobs.load(db.JobFilter(start_time=since))))
            live = self._mine(_values(self._ps.Jobs.load()))
        except self._rpc_errors() as exc:
            raise self._error(exc, "list_tagged") from exc
        return keyed_by_tag({**done, **live}, since)

    def drain(self, node: str, reason: str) -> None:
        self._modify(node, state="DRAIN", reason=reason or "broker")

    def resume(self, node: str) -> None:
        self._modify(node, state="RESUME")

    def _modify(self, node: str, **changes: str) -> None:
        try:
            self._ps.Node.load(node).modify(self._ps.Node(**changes))
        except self._rpc_errors() as exc:
            raise self._error(exc, f"update node {node}") from exc


def _allocated_gpus(job: Any) -> int:
    """GPUs allocated to a pyslurm job (live ``Job`` or ``db.Job``), all nodes: its
    ``allocated_tres`` (a TrackableResources, None while pending; a TRES string too)."""
    tres = _attr(job, "allocated_tres")
    if isinstance(tres, str):
        pairs = (item.partition("=") for item in tres.split(","))
        return tres_gpus({k.strip(): v for k, sep, v in pairs if sep})
    gres = getattr(tres, "gres", None)
    if not isinstance(gres, Mapping):
        return 0
    return tres_gpus(
        {f"gres/{name}": number(getattr(item, "count", item)) for name, item in gres.items()}
    )


def _node_gpus(gres: Any) -> tuple[int, str | None]:
    """(GPUs, type) of a node's ``configured_gres`` (``{"gpu:h200": 2}``, or a gres string)."""
    if isinstance(gres, Mapping):  # a count, or {count, indexes} for gres with indexes
        counts = {k: v.get("count") if isinstance(v, Mapping) else v for k, v in gres.items()}
        return gres_gpus([f"{name}:{number(count) or 0}" for name, count in counts.items()])
    return gres_gpus(gres)


def _array_id(job: Any) -> str | None:
    """The array a pyslurm job record belongs to (``array_id``), or None."""
    found = number(_attr(job, "array_id", "array_job_id"))
    return str(found) if found else None
