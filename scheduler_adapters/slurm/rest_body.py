"""The body of ``POST /slurm/<version>/job/submit`` for a ``JobSpec``, per API version.

* v0.0.38 (22.05): ``{"script": ..., "job": {...}}``; the job's keys are sbatch's long
  option names (slurmrestd feeds them to ``slurm_process_option_data``): ``nodes`` is
  ``[min, max]``, ``environment`` an object, ``exclusive: "exclusive"`` (``"true"`` is
  refused: "Invalid exclusive specification"), ``nodelist`` works though the spec does
  not list it while ``required_nodes`` is a "Disabled key" (all checked live).
* v0.0.39 (23.02): as v0.0.38 but ``environment`` is a ``["K=V"]`` list.
* v0.0.40+ (23.11–25.x): the script moves into ``job.script``; counts that may be unset
  are ``{set, infinite, number}``; ``required_nodes`` a list; GPUs go in
  ``tres_per_node`` (``gres/gpu:N``, checked live on 25.11). A whole node is
  ``exclusive: ["true"]`` in v0.0.40 and ``shared: ["none"]`` from v0.0.41 on, where
  ``exclusive`` is deprecated (v0.0.41) or gone (v0.0.42+: slurmrestd 25.11 ignores it,
  and the job shared its node: seen live, cpu=1 and one of the node's two GPUs).

slurmrestd does not read ``#SBATCH``, ``#PBS`` or ``#BSUB`` lines (checked live on 22.05:
``--nice``, ``--begin``, ``hetjob`` and ``#PBS -p`` in the script changed nothing), so a
user's script cannot override the spec here; its directives are still neutralised like
sbatch's, for the same job to behave alike on both adapters.
"""

from __future__ import annotations

from typing import Any

from ..arrays import parse as parse_array
from ..base import TAG_PREFIX, JobSpec
from .script import build_environment, check_dependency, neutralise_directives, wrap_array_task

__all__ = ["job_description"]


def _num(value: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": value}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))


def job_description(spec: JobSpec, version: str) -> dict[str, Any]:
    """The submit body for ``spec`` in API ``version``; ``ValueError`` for a bad spec."""
    if spec.time_limit_minutes < 1:
        raise ValueError("time_limit_minutes: must be at least 1")
    if spec.nodes < 1:
        raise ValueError("nodes: must be at least 1")
    new = _version_tuple(version) >= (0, 0, 40)
    env = build_environment(spec, home=spec.job_dir or spec.working_dir or "/", user=spec.user)
    if spec.array:
        parse_array(spec.array)  # ValueError: not an array spec
    check_dependency(spec.dependency)
    script, _ = neutralise_directives(spec.script)
    if spec.array:
        script = wrap_array_task(script, spec.job_dir)
    job: dict[str, Any] = {
        "name": spec.name or "broker-job",
        "time_limit": _num(spec.time_limit_minutes) if new else spec.time_limit_minutes,
        "current_working_directory": spec.working_dir or "/tmp",  # noqa: S108 - Slurm default
        "environment": (env if version == "v0.0.38" else [f"{k}={v}" for k, v in env.items()]),
    }
    if new:
        job["nodes"] = str(spec.nodes)
        job["script"] = script
    else:
        job["nodes"] = [spec.nodes, spec.nodes]
    optional: dict[str, Any] = {
        "account": spec.account,
        "partition": spec.partition,
        "comment": f"{TAG_PREFIX}{spec.tag}" if spec.tag else None,
        "tasks": spec.ntasks,
        "cpus_per_task": spec.cpus_per_task,
        "constraints": spec.constraints,
        "qos": spec.qos,
        "reservation": spec.reservation,
        "standard_output": spec.stdout_path,
        "standard_error": spec.stderr_path,
        "array": spec.array,
        "dependency": spec.dependency,
    }
    if spec.memory_mb:
        optional["memory_per_node"] = _num(spec.memory_mb) if new else spec.memory_mb
    if spec.gpus_per_node:
        optional["tres_per_node" if new else "gpus_per_node"] = (
            f"gres/gpu:{spec.gpus_per_node}" if new else str(spec.gpus_per_node)
        )
    if spec.nodelist:
        optional["required_nodes" if new else "nodelist"] = (
            list(spec.nodelist) if new else ",".join(spec.nodelist)
        )
    if spec.exclusive and not new:
        optional["exclusive"] = "exclusive"
    elif spec.exclusive:
        whole = _version_tuple(version) >= (0, 0, 41)
        optional["shared" if whole else "exclusive"] = ["none"] if whole else ["true"]
    job.update({k: v for k, v in optional.items() if v is not None})
    return {"job": job} if new else {"script": script, "job": job}
