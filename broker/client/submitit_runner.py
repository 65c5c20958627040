"""The job side of the submitit plugin: run one pickled call, pickle its outcome beside it.

This file's text is the job's script (after a ``#!`` line naming the job's Python), so
it imports submitit and the standard library only: the job's Python needs submitit
(and its cloudpickle) of the caller's versions and Python's minor version, as
submitit's own Slurm executor does, and nothing of this distribution.

In the job's directory, ``$SUBMITIT_FOLDER`` (``submitit/<batch>``) holds
``<index>_submitted.pkl`` for each task, staged in from the project's workspace; the
task writes ``<index>_result.pkl`` there, which stage-out collects under
``jobs/<job id>/``. ``index`` is the array task's (``BROKER_ARRAY_TASK_ID``), else 0.
Pickles are named by index, not job id: the broker's id exists only after they were
staged.
"""

from __future__ import annotations

import os
import sys
import typing as tp
from pathlib import Path

from submitit.core import job_environment, plugins, submission, utils

NAME = "broker"


class BrokerJobPaths(utils.JobPaths):
    """submitit's paths, with the pickles named by the task's index."""

    def __init__(
        self,
        folder: str | Path,
        job_id: str | None = None,
        task_id: int | None = None,
        index: int = 0,
    ) -> None:
        super().__init__(folder, job_id=job_id, task_id=task_id)
        self.index = index

    @property
    def submitted_pickle(self) -> Path:
        return self.folder / f"{self.index}_submitted.pkl"

    @property
    def result_pickle(self) -> Path:
        return self.folder / f"{self.index}_result.pkl"

    @property
    def stdout(self) -> Path:
        return self.folder / f"{self.index}_log.out"

    @property
    def stderr(self) -> Path:
        return self.folder / f"{self.index}_log.err"


class BrokerJobEnvironment(job_environment.JobEnvironment):
    """Inside a broker job: ``job_id`` is the broker's (``<id>_<index>`` for a task)."""

    _env: tp.ClassVar[dict[str, str]] = {
        "job_id": "BROKER_JOB_ID",
        "array_job_id": "BROKER_JOB_ID",
        "array_task_id": "BROKER_ARRAY_TASK_ID",
        "num_tasks": "SLURM_NTASKS",
        "num_nodes": "SLURM_JOB_NUM_NODES",
        "node": "SLURM_NODEID",
        "global_rank": "SLURM_PROCID",
        "local_rank": "SLURM_LOCALID",
    }

    @classmethod
    def name(cls) -> str:
        return NAME

    @property
    def array_job_id(self) -> str | None:
        return os.environ.get("BROKER_JOB_ID") if self.array_task_id is not None else None

    @property
    def paths(self) -> BrokerJobPaths:
        index = int(os.environ.get("BROKER_ARRAY_TASK_ID") or 0)
        folder = os.environ["SUBMITIT_FOLDER"]
        return BrokerJobPaths(folder, job_id=self.job_id, task_id=self.global_rank, index=index)

    def _requeue(self, countdown: int) -> None:
        # The broker requeues nothing on a job's request: a timed-out call is not resumed.
        pass


def main() -> None:
    folder = Path(os.environ.get("SUBMITIT_FOLDER") or sys.argv[1]).absolute()
    os.environ["SUBMITIT_FOLDER"] = str(folder)
    os.environ["SUBMITIT_EXECUTOR"] = NAME
    # Where this distribution is not installed, no entry point names this environment:
    # add it to submitit's (cached) table, so the job's own submitit.JobEnvironment()
    # calls find it too.
    envs = plugins.get_job_environments()
    if NAME not in envs and isinstance(envs, dict):
        envs[NAME] = BrokerJobEnvironment()
    submission.process_job(folder)


if __name__ == "__main__":
    main()
