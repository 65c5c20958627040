"""A stand-in for pyslurm 25.11, shaped like its documented API (no Slurm 25.11 here).

``PySlurmAdapter(cluster, module="tests.scheduler_adapters.fake_pyslurm")`` drives it.
State lives in module globals; ``reset()`` clears it.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

JOBS: dict[int, SimpleNamespace] = {}
NODES: dict[str, SimpleNamespace] = {}
SUBMITTED: list[dict[str, Any]] = []
__version__ = "25.11.0"


class RPCError(Exception):
    def __init__(self, msg: str, errno: int = 0) -> None:
        super().__init__(msg)
        self.errno = errno


def reset() -> None:
    JOBS.clear()
    SUBMITTED.clear()
    NODES.clear()
    for name in ("n1", "n2"):
        NODES[name] = SimpleNamespace(
            name=name,
            total_cpus=8,
            real_memory=16000,
            state="IDLE",
            partitions=["main"],
            available_features=["x86"],
            reason=None,
            allocated_cpus=0,
            configured_gres={"gpu": 1} if name == "n1" else {"gpu:h200": 2},
        )


class JobSubmitDescription:
    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def submit(self) -> int:
        if self.fields.get("account") == "bad":
            raise RPCError("Invalid account or account/partition combination specified", 2045)
        job_id = len(JOBS) + 100
        SUBMITTED.append(self.fields)
        now = int(time.time())
        failed = "exit 3" in self.fields["script"]
        # pyslurm's allocated_tres: a TrackableResources whose gres maps "gpu" to a GPU
        # (count, type), None for a job that holds nothing; the job runs on two nodes.
        gpus = (self.fields.get("gres_per_node") or {}).get("gpu") or 0
        tres = SimpleNamespace(gres={"gpu": SimpleNamespace(count=2 * gpus, type=None)})
        JOBS[job_id] = SimpleNamespace(
            id=job_id,
            name=self.fields["name"],
            account=self.fields.get("account"),
            user_name=self.fields.get("user_id"),  # pyslurm takes a name there, reports both
            partition="main",
            cluster="omega",
            comment=self.fields.get("comment") or "",
            state="FAILED" if failed else "COMPLETED",
            state_reason="None",
            exit_code=768 if failed else 0,
            nodes="n[1-2]",
            submit_time=now,
            start_time=now,
            end_time=now + 2,
            run_time=2,
            allocated_tres=tres if gpus else None,
        )
        return job_id


class Jobs(dict[int, SimpleNamespace]):
    @staticmethod
    def load() -> Jobs:
        return Jobs({k: v for k, v in JOBS.items() if k % 2 == 0})  # odd ids "left" ctld


class Job:
    def __init__(self, job_id: int) -> None:
        self.job_id = job_id

    def cancel(self) -> None:
        job = JOBS.get(self.job_id)
        if job is None:
            raise RPCError("Invalid job id specified", 2017)
        if job.state in ("COMPLETED", "FAILED", "CANCELLED"):
            raise RPCError("Job/step already completing or completed", 2021)
        job.state = "CANCELLED"


class Node:
    def __init__(self, name: str | None = None, **changes: Any) -> None:
        self.name = name
        self.changes = changes

    @staticmethod
    def load(name: str) -> Node:
        if name not in NODES:
            raise RPCError(f"Node {name} does not exist", 2000)
        return Node(name)

    def modify(self, changes: Node) -> None:
        node = NODES[str(self.name)]
        node.state = "IDLE" if changes.changes["state"] == "RESUME" else "IDLE+DRAIN"
        node.reason = changes.changes.get("reason")


class Nodes(dict[str, SimpleNamespace]):
    @staticmethod
    def load() -> Nodes:
        return Nodes(NODES)


class _JobFilter:
    def __init__(self, ids: list[int] | None = None, start_time: Any = None) -> None:
        self.ids = ids


class _DbJobs(dict[int, SimpleNamespace]):
    @staticmethod
    def load(db_filter: _JobFilter) -> _DbJobs:
        ids = db_filter.ids
        return _DbJobs({k: v for k, v in JOBS.items() if ids is None or k in ids})


db = SimpleNamespace(JobFilter=_JobFilter, Jobs=_DbJobs)
reset()
