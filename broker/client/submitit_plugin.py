"""submitit executor ``broker``: a pickled Python call runs as a broker job.

Registered as submitit's plugin (entry points ``executor`` and ``job_environment``
in the ``submitit`` group), so ``submitit.AutoExecutor(folder, cluster="broker")``
finds it, as does ``BrokerExecutor(folder)`` directly. The call, its arguments and
its result travel through the project's workspace: each pickle is uploaded to
``submitit/<batch>/<index>_submitted.pkl`` and staged into the job's directory, the
job's ``submitit_runner`` writes ``<index>_result.pkl`` beside it, stage-out
collects it to ``jobs/<job id>/submitit/<batch>/`` and ``job.result()`` downloads it.
``map_array`` (and ``executor.batch()``) submit one array job, a task per call.

Parameters (``update_parameters``, or ``broker_<name>`` through AutoExecutor):
the broker's spec fields ``time_limit_minutes``, ``nodes``, ``ntasks``,
``cpus_per_task``, ``memory_mb``, ``gpus_per_node``, ``cluster``, ``partition``,
``constraints``, ``environment``, ``qos``, ``reservation``, ``name``,
``project_id``, and ``array_parallelism`` (Slurm's ``%N``); AutoExecutor's generic
``timeout_min``, ``mem_gb``, ``tasks_per_node``, ``nodes``, ``cpus_per_task``,
``gpus_per_node`` and ``name`` are translated. ``python`` is the job's interpreter
(default ``$HPC_BROKER_JOB_PYTHON``, else ``python3`` on the job's ``PATH``; it needs
submitit, see ``submitit_runner``).
"""

from __future__ import annotations

import logging
import os
import time
import typing as tp
import uuid
from pathlib import Path

from submitit.core import core, utils

from ._config import load_config
from ._errors import BrokerError, NotFound
from ._models import TERMINAL_STATES
from ._models import JobSpec as BrokerSpec
from ._sync import Client
from .submitit_runner import NAME, BrokerJobEnvironment, BrokerJobPaths

__all__ = ["BrokerExecutor", "BrokerInfoWatcher", "BrokerJob", "BrokerJobEnvironment"]

R = tp.TypeVar("R", covariant=True)
log = logging.getLogger(__name__)

_SPEC_FIELDS = {
    "name",
    "time_limit_minutes",
    "nodes",
    "ntasks",
    "cpus_per_task",
    "memory_mb",
    "gpus_per_node",
    "cluster",
    "partition",
    "constraints",
    "environment",
    "qos",
    "reservation",
}
_STAGE_OUT_WAIT_S = 120.0


def _split(job_id: str) -> tuple[str, int | None]:
    """``<broker id>`` or ``<broker id>_<task index>``."""
    base, _, index = job_id.partition("_")
    return base, int(index) if index else None


class BrokerInfoWatcher(core.InfoWatcher):
    """Reads the state of every job this process follows, one request per broker job
    (an array's tasks in one ``GET /jobs/{id}/tasks``)."""

    def __init__(self, delay_s: int = 10) -> None:
        super().__init__(delay_s)
        self.clients: dict[str, Client] = {}

    def follow(self, job_id: str, client: Client) -> None:
        self.clients[_split(job_id)[0]] = client
        self.register_job(job_id)

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return self.get_info(job_id, mode=mode).get("State") or "UNKNOWN"

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).lower() in TERMINAL_STATES

    def update(self) -> None:
        self._num_calls += 1
        by_job: dict[str, list[str]] = {}
        for jid in self._registered - self._finished:
            by_job.setdefault(_split(jid)[0], []).append(jid)
        for base, ids in by_job.items():
            client = self.clients.get(base)
            if client is None:
                continue
            try:
                if any("_" in i for i in ids):
                    for task in client.tasks(base):
                        self._info_dict[f"{base}_{task.index}"] = {
                            "State": task.state.upper(),
                            "Reason": task.reason,
                            "ExitCode": str(task.exit_code),
                        }
                if base in ids:
                    job = client.job(base)
                    info = {"State": job.state.upper(), "Reason": job.reason}
                    self._info_dict[base] = {**info, "ExitCode": str(job.exit_code)}
            except BrokerError as exc:
                log.warning("broker job %s: state not read: %s", base, exc)
        self._last_status_check = time.time()
        for jid in self._registered - self._finished:
            if self.is_done(jid, mode="cache"):
                self._finished.add(jid)


class BrokerJob(core.Job[R]):
    """A call running as a broker job (``job_id``: the broker's id, ``<id>_<index>`` for
    an array's task)."""

    watcher = BrokerInfoWatcher()
    client: Client
    workspace_dir: str  # submitit/<batch> in the project's workspace
    project_id: str

    @property
    def paths(self) -> utils.JobPaths:
        index = _split(self.job_id)[1] or 0
        return BrokerJobPaths(self._paths.folder, job_id=self.job_id, task_id=0, index=index)

    @property
    def broker_id(self) -> str:
        return _split(self.job_id)[0]

    @property
    def index(self) -> int | None:
        return _split(self.job_id)[1]

    def _fetch_result(self) -> bool:
        """Download the result pickle once the job's stage-out is over (False: none)."""
        dest = self.paths.result_pickle
        if dest.exists():
            return True
        rel = f"jobs/{self.broker_id}/{self.workspace_dir}/{self.index or 0}_result.pkl"
        deadline = time.monotonic() + _STAGE_OUT_WAIT_S
        while True:
            try:
                self.client.download(rel, dest, project_id=self.project_id)
                return True
            except NotFound:
                stage = (self.client.job_io(self.broker_id).get("stage_out") or {}).get("state")
                if stage in ("done", "failed") or time.monotonic() > deadline:
                    return False
                time.sleep(1.0)

    def done(self, force_check: bool = False) -> bool:
        if self.paths.result_pickle.exists():
            return True
        if self.watcher.is_done(self.job_id, mode="force" if force_check else "standard"):
            self._fetch_result()
            return True
        return False

    def _get_outcome_and_result(self) -> tuple[str, tp.Any]:
        if not self._fetch_result():
            info = self.watcher.get_info(self.job_id, mode="force")
            err = self.stderr() or ""
            raise utils.UncompletedJobError(
                f"Job {self.job_id} ended {info.get('State', 'UNKNOWN').lower()}"
                f" ({info.get('Reason', '')}) without a result. Its stderr ends:\n{err[-4000:]}"
            )
        outcome: tuple[str, tp.Any] = utils.pickle_load(self.paths.result_pickle)
        return outcome

    def _log(self, stream: tp.Literal["stdout", "stderr"]) -> str | None:
        try:
            text = self.client.output(self.broker_id, stream, task=self.index)
        except BrokerError:
            return None
        path = self.paths.stdout if stream == "stdout" else self.paths.stderr
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return text

    def stdout(self) -> str | None:
        return self._log("stdout")

    def stderr(self) -> str | None:
        return self._log("stderr")

    def cancel(self, check: bool = True) -> None:
        try:
            if self.index is None:
                self.client.cancel(self.broker_id)
            else:
                self.client.cancel_task(self.broker_id, self.index)
        except BrokerError:
            if check:
                raise


class BrokerExecutor(core.Executor):
    """submitit's executor for the broker (see the module's doc)."""

    job_class = BrokerJob

    def __init__(
        self,
        folder: str | Path,
        *,
        client: Client | None = None,
        url: str | None = None,
        python: str | None = None,
        project_id: str | None = None,
    ) -> None:
        super().__init__(folder)
        self.client = client or Client(config=load_config(base_url=url))
        self.python = python or os.environ.get("HPC_BROKER_JOB_PYTHON") or "/usr/bin/env python3"
        self.parameters = {"time_limit_minutes": 5}
        if project_id:
            self.parameters["project_id"] = project_id

    @classmethod
    def name(cls) -> str:
        return NAME

    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return _SPEC_FIELDS | {"project_id", "array_parallelism"}

    def _convert_parameters(self, params: dict[str, tp.Any]) -> dict[str, tp.Any]:
        out = {k: v for k, v in params.items() if k in _SPEC_FIELDS}
        if "timeout_min" in params:
            out["time_limit_minutes"] = int(params["timeout_min"])
        if "mem_gb" in params:
            out["memory_mb"] = int(float(params["mem_gb"]) * 1024)
        if "tasks_per_node" in params:
            out["ntasks"] = int(params["tasks_per_node"]) * int(params.get("nodes", 1))
        return out

    def _internal_update_parameters(self, **kwargs: tp.Any) -> None:
        unknown = set(kwargs) - self._valid_parameters()
        if unknown:
            raise ValueError(
                f"unknown parameters {sorted(unknown)}: {sorted(self._valid_parameters())}"
            )
        self.parameters.update(kwargs)

    @classmethod
    def affinity(cls) -> int:
        return 0  # only when asked for by name: AutoExecutor never picks it by itself

    def _script(self) -> str:
        runner = Path(__file__).with_name("submitit_runner.py").read_text()
        return f"#!{self.python}\n{runner}"

    def _internal_process_submissions(
        self, delayed_submissions: list[utils.DelayedSubmission]
    ) -> list[core.Job[tp.Any]]:
        params = dict(self.parameters)
        project = self.client.project_id(params.pop("project_id", None))
        parallel = params.pop("array_parallelism", None)
        batch = uuid.uuid4().hex[:16]
        rel = f"submitit/{batch}"
        local = self.folder / batch
        local.mkdir(parents=True, exist_ok=True)
        inputs = []
        for index, delayed in enumerate(delayed_submissions):
            delayed.set_timeout(params["time_limit_minutes"], 0)
            pickle_path = local / f"{index}_submitted.pkl"
            delayed.dump(pickle_path)
            self.client.upload(pickle_path, f"{rel}/{index}_submitted.pkl", project_id=project)
            inputs.append(f"{rel}/{index}_submitted.pkl")
        n = len(delayed_submissions)
        fn = getattr(delayed_submissions[0].function, "__name__", "call")
        fields = {"name": f"submitit-{fn}"[:200], **params}
        spec = BrokerSpec(
            script=self._script(),
            inputs=inputs,
            outputs=[f"{rel}/*_result.pkl"],
            environment={
                **(params.get("environment") or {}),
                "SUBMITIT_FOLDER": rel,
                "PYTHONUNBUFFERED": "1",
            },
            array=(f"0-{n - 1}" + (f"%{parallel}" if parallel else "")) if n > 1 else None,
            **{k: v for k, v in fields.items() if k != "environment"},
        )
        submitted = self.client.submit(spec, project_id=project)
        ids = [str(submitted.id)] if n == 1 else [f"{submitted.id}_{i}" for i in range(n)]
        jobs: list[core.Job[tp.Any]] = []
        for jid in ids:
            job: BrokerJob[tp.Any] = BrokerJob(folder=local, job_id=jid)
            job.client, job.workspace_dir, job.project_id = self.client, rel, project
            BrokerJob.watcher.follow(jid, self.client)
            jobs.append(job)
        return jobs
