"""PSI/J executor ``hpc-broker``: PSI/J jobs run as broker jobs (quota, routing, billing).

``JobExecutor.get_instance("hpc-broker")`` finds it once the distribution is installed
with its ``clients`` extra (PSI/J reads the descriptor in ``psij-descriptors``). The URL
given to ``get_instance(..., url=...)`` is the broker's; the token and default project
come from the client's configuration (``HPC_BROKER_TOKEN``, ``HPC_BROKER_PROJECT``,
the config file).

The mapping, PSI/J → the broker's spec:

- ``executable`` and ``arguments`` → a bash script that ``exec``\\ s them, each word
  quoted (``shlex.quote``): an argument is one word, never shell syntax.
- ``environment`` → ``environment`` (values as strings); ``inherit_environment`` has
  no meaning here (the job runs on the cluster, not beside the caller).
- ``directory`` → ``working_directory`` (relative: inside the job's directory;
  absolute paths are refused: the broker owns where jobs run).
- ``stdin_path`` → the file is uploaded to the project's workspace and staged in.
- ``stdout_path`` / ``stderr_path`` → the job's output is fetched there once it ends,
  before the job is seen to end.
- ``ResourceSpecV1``: ``node_count`` → ``nodes``, process count → ``ntasks``,
  ``cpu_cores_per_process`` → ``cpus_per_task``, ``gpu_cores_per_process`` × processes
  per node → ``gpus_per_node``, ``memory`` (bytes) → ``memory_mb``.
- ``launcher``: none or ``single`` runs the executable once; ``srun``/``mpirun``
  start it once per process (the cluster's launcher).
- ``JobAttributes``: ``duration`` → ``time_limit_minutes`` (rounded up),
  ``queue_name`` → ``partition``, ``project_name`` → the broker project,
  ``reservation_id`` → ``reservation``; ``custom_attributes`` ``hpc_broker.cluster``,
  ``hpc_broker.qos``, ``hpc_broker.constraints`` (comma-separated), ``hpc_broker.array``.

States: accepted/pending → QUEUED, running/suspended → ACTIVE, completed → COMPLETED,
cancelled → CANCELED, every other end (failed, timeout, node_fail, rejected...) →
FAILED with the broker's reason as its message. One thread follows the jobs:
each by its events (SSE) while the token has streams to spare, else by polling.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from psij import (
    InvalidJobException,
    Job,
    JobExecutor,
    JobExecutorConfig,
    JobSpec,
    JobState,
    JobStatus,
    ResourceSpecV1,
    SubmitException,
)

from ._config import load_config
from ._errors import APIError, BrokerError
from ._models import Job as BrokerJob
from ._models import JobSpec as BrokerSpec
from ._sync import Client

__all__ = ["BrokerJobExecutor", "spec_from_psij", "state_of"]

log = logging.getLogger(__name__)

_STATES: dict[str, JobState] = {
    "accepted": JobState.QUEUED,
    "pending": JobState.QUEUED,
    "running": JobState.ACTIVE,
    "suspended": JobState.ACTIVE,
    "completed": JobState.COMPLETED,
    "cancelled": JobState.CANCELED,
    "failed": JobState.FAILED,
    "rejected": JobState.FAILED,
    "timeout": JobState.FAILED,
    "node_fail": JobState.FAILED,
    "boot_fail": JobState.FAILED,
    "preempted": JobState.FAILED,
    "out_of_memory": JobState.FAILED,
    "lost": JobState.FAILED,
}
_NAME = re.compile(r"[^A-Za-z0-9._+-]+")
_LAUNCHERS = {"srun": "srun", "mpirun": "mpirun"}
_ATTR = "hpc_broker."


def state_of(broker_state: str) -> JobState | None:
    """PSI/J's state for the broker's (None: ``unknown``, nothing to report)."""
    return _STATES.get(broker_state)


def _job_name(spec: JobSpec) -> str:
    raw = str(spec.name or spec.executable or "job")
    raw = Path(raw).name if "/" in raw else raw  # PSI/J names a job by its executable
    name = _NAME.sub("-", raw).strip("-.+") or "job"
    return name[:200] if name[0].isalnum() else f"j{name}"[:200]


def _script(spec: JobSpec, stdin_rel: str | None, workdir: str | None) -> str:
    if not spec.executable:
        raise InvalidJobException("the job has no executable")
    words = [str(spec.executable), *(str(a) for a in (spec.arguments or []))]
    launcher = spec.launcher or "single"
    if launcher not in ("single", *_LAUNCHERS):
        raise InvalidJobException(f"launcher {launcher!r}: hpc-broker knows single, srun, mpirun")
    prefix = f"{_LAUNCHERS[launcher]} " if launcher in _LAUNCHERS else ""
    line = "exec " + prefix + " ".join(shlex.quote(w) for w in words)
    if stdin_rel:
        # Staged into the job's directory; the job starts in workdir, below it.
        up = "../" * len(Path(workdir).parts) if workdir else ""
        line += " < " + shlex.quote(up + stdin_rel)
    return "#!/bin/bash\n" + line + "\n"


def _resources(spec: JobSpec) -> dict[str, Any]:
    res = spec.resources
    if res is None:
        return {}
    if not isinstance(res, ResourceSpecV1):
        raise InvalidJobException(f"resource spec version {res.version}: only V1 is known")
    out: dict[str, Any] = {"nodes": res.computed_node_count}
    procs = res.computed_process_count
    if procs > 1 or res.process_count is not None:
        out["ntasks"] = procs
    if res.cpu_cores_per_process:
        out["cpus_per_task"] = res.cpu_cores_per_process
    if res.gpu_cores_per_process:
        per_node = res.computed_processes_per_node
        out["gpus_per_node"] = res.gpu_cores_per_process * per_node
    if res.memory:
        out["memory_mb"] = max(1, math.ceil(res.memory / 2**20))
    return out


def spec_from_psij(spec: JobSpec, stdin_rel: str | None = None) -> BrokerSpec:
    """The broker's spec for a PSI/J ``JobSpec`` (see the module's doc for the mapping)."""
    attrs = spec.attributes
    fields: dict[str, Any] = {"name": _job_name(spec)}
    if spec.directory is not None:
        d = Path(spec.directory)
        if d.is_absolute():
            raise InvalidJobException(
                f"directory {d}: hpc-broker jobs run in their own directory; give a relative one"
            )
        if str(d) not in ("", "."):
            fields["working_directory"] = str(d)
    fields["script"] = _script(spec, stdin_rel, fields.get("working_directory"))
    fields.update(_resources(spec))
    if spec.environment:
        fields["environment"] = {str(k): str(v) for k, v in spec.environment.items()}
    duration = attrs.duration.total_seconds() if attrs.duration else 600
    fields["time_limit_minutes"] = max(1, math.ceil(duration / 60))
    if attrs.queue_name:
        fields["partition"] = attrs.queue_name
    if attrs.reservation_id:
        fields["reservation"] = attrs.reservation_id
    custom = attrs.custom_attributes or {}
    for key in ("cluster", "qos", "array"):
        if custom.get(_ATTR + key):
            fields[key] = str(custom[_ATTR + key])
    if custom.get(_ATTR + "constraints"):
        fields["constraints"] = [c.strip() for c in str(custom[_ATTR + "constraints"]).split(",")]
    if stdin_rel:
        fields["inputs"] = [stdin_rel]
    return BrokerSpec(**fields)


class _Followed:
    """A job the executor follows: the PSI/J job and what it already reported."""

    def __init__(self, job: Job, broker_id: str) -> None:
        self.job = job
        self.broker_id = broker_id
        self.streaming = False


class BrokerJobExecutor(JobExecutor):
    """Runs PSI/J jobs on the broker (``url``: the broker's; None: the client's config)."""

    def __init__(self, url: str | None = None, config: JobExecutorConfig | None = None) -> None:
        super().__init__(url=url, config=config or JobExecutorConfig())
        self.client = Client(config=load_config(base_url=url))
        self.poll_s = 1.0
        #: At most this many jobs followed by SSE at once (the broker limits streams per
        #: token, 4 by default); the others are polled.
        self.max_streams = 2
        self._jobs: dict[str, _Followed] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- PSI/J's interface ----------------------------------------------------

    def submit(self, job: Job) -> None:
        spec = self._check_job(job)
        try:
            stdin_rel = self._stage_stdin(job, spec)
            broker_spec = spec_from_psij(spec, stdin_rel)
            project = (spec.attributes.project_name or None) if spec.attributes else None
            submitted = self.client.submit(
                broker_spec, project_id=project, idempotency_key=f"psij-{job.id}"
            )
        except InvalidJobException:
            raise
        except APIError as exc:
            transient = exc.status_code in (429, 502, 503, 504)
            raise SubmitException(
                f"{exc.error}: {exc.detail}", exception=exc, transient=transient
            ) from exc
        except BrokerError as exc:
            raise SubmitException(str(exc), exception=exc, transient=True) from exc
        job._native_id = str(submitted.id)
        self._follow(job, submitted)

    def cancel(self, job: Job) -> None:
        if job.native_id is None:
            self._set_job_status(job, JobStatus(JobState.CANCELED, time=time.time()))
            return
        self._report(job, self.client.cancel(job.native_id))

    def list(self) -> list[str]:
        """The ids of the caller's jobs that have not ended."""
        return [str(j.id) for j in self.client.iter_jobs() if not j.terminal]

    def attach(self, job: Job, native_id: str) -> None:
        if job.status.state != JobState.NEW:
            raise InvalidJobException("Job must be in the NEW state")
        job.executor = self
        job._native_id = native_id
        self._follow(job, self.client.job(native_id))

    def close(self) -> None:
        """Stop following jobs and close the connections (PSI/J has no such call: an
        executor lives as long as its process; tests and long-lived hosts call it)."""
        with self._lock:
            self._jobs.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=10)
        self.client.close()

    # -- following ------------------------------------------------------------

    def _stage_stdin(self, job: Job, spec: JobSpec) -> str | None:
        if spec.stdin_path is None:
            return None
        rel = f"psij/{job.id}/stdin"
        self.client.upload(Path(spec.stdin_path), rel, project_id=spec.attributes.project_name)
        return rel

    def _follow(self, job: Job, seen: BrokerJob) -> None:
        followed = _Followed(job, str(seen.id))
        with self._lock:
            self._jobs[followed.broker_id] = followed
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._poll_loop, name="hpc-broker-psij", daemon=True
                )
                self._thread.start()
            streams = sum(1 for f in self._jobs.values() if f.streaming)
            if streams < self.max_streams and not seen.terminal:
                followed.streaming = True
                threading.Thread(
                    target=self._stream, args=(followed,), name="hpc-broker-psij-sse", daemon=True
                ).start()
        self._report(job, seen)

    def _stream(self, followed: _Followed) -> None:
        try:
            for ev in self.client.events(followed.broker_id):
                if ev.state in ("accepted", "pending", "running", "suspended"):
                    self._report(followed.job, BrokerJob.model_validate(ev.job))
                else:
                    break  # an end: read the whole job (its charge, exit code), below
            self._report(followed.job, self.client.job(followed.broker_id))
        except Exception as exc:  # the stream is a convenience: polling is the fallback
            log.debug("job %s: no event stream (%s): polled instead", followed.broker_id, exc)
        finally:
            followed.streaming = False
            self._wake.set()

    def _poll_loop(self) -> None:
        while True:
            with self._lock:
                polled = [f for f in self._jobs.values() if not f.streaming]
                if not self._jobs:
                    self._thread = None
                    return
            for f in polled:
                try:
                    self._report(f.job, self.client.job(f.broker_id))
                except BrokerError as exc:
                    log.warning("job %s: status not read: %s", f.broker_id, exc)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _report(self, job: Job, seen: BrokerJob) -> None:
        state = state_of(seen.state) or (JobState.FAILED if seen.terminal else None)
        if state is None:
            return
        meta: dict[str, object] = {
            "nativeId": str(seen.id),
            "cluster": seen.cluster,
            "charge_pfh": seen.charge_pfh,
        }
        if state.final:
            with self._lock:
                if self._jobs.pop(str(seen.id), None) is None and job.status.state.final:
                    return  # reported already (by the stream and the poller both)
            self._fetch_output(job, seen)
            message = seen.reason or None if state != JobState.COMPLETED else None
            status = JobStatus(
                state, time=time.time(), exit_code=seen.exit_code, message=message, metadata=meta
            )
        else:
            status = JobStatus(state, time=time.time(), metadata=meta)
        self._set_job_status(job, status)

    def _fetch_output(self, job: Job, seen: BrokerJob) -> None:
        spec = job.spec
        if spec is None:
            return
        for stream, where in (("stdout", spec.stdout_path), ("stderr", spec.stderr_path)):
            if where is None:
                continue
            try:
                Path(where).write_text(self.client.output(seen.id, stream))  # type: ignore[arg-type]
            except (BrokerError, OSError) as exc:
                log.warning("job %s: %s not fetched to %s: %s", seen.id, stream, where, exc)


def register() -> None:
    """Make ``hpc-broker`` known to PSI/J in this process, where its descriptor is not on
    ``sys.path`` (an editable install); a wheel install needs no call."""
    from psij.descriptor import Descriptor

    from .psij_descriptors.hpc_broker import __PSI_J_EXECUTORS__ as descriptors

    if "hpc-broker" in JobExecutor.get_executor_names():
        return
    root = Path(__file__).resolve().parents[2]  # the directory holding broker/
    for desc in descriptors:
        assert isinstance(desc, Descriptor)
        JobExecutor.register_executor(desc, str(root))
