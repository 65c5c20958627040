"""The ``slurm-cli`` adapter: sbatch, squeue, sacct, scancel, sinfo and scontrol.

Commands run as argv lists, never through a shell, with a clean environment (``PATH``,
``HOME``, ``SLURM_CONF`` and the spec's variables: nothing of the broker's own). When
the broker runs as root, ``sbatch`` runs as the job's POSIX user (``JobSpec.user``) so
the job is that user's; queries and ``scancel`` run as the broker.

One poll costs one ``squeue --json`` (from 23.02 with ``--jobs``: the broker's jobs
only; 22.05 ignores ``-j`` with ``--json`` and always returns all of them, so ids are
filtered here too) plus, only for ids
the controller has forgotten (after ``MinJobAge``) or that have ended, one
``sacct --json --duplicates -j ids``: an ended job is settled from accounting, whose
elapsed time leaves out time suspended, and with ``--duplicates`` sacct lists every run
of a requeued job (one record each), which ``JobInfo.runs`` carries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import arrays
from ..base import ClusterInfo, JobInfo, JobSpec, NodeInfo, SchedulerAdapter
from ..errors import AdapterConfigError, SchedulerError, SchedulerUnavailable, SubmitRejected
from .common import (
    JOB_ID,
    check_slurm_conf,
    cluster_info,
    exit_code_from_text,
    exit_signal_from_text,
    from_accounting,
    is_transient,
    keyed_by_tag,
    older_than_2302,
)
from .parse import parse_jobs, parse_nodes, plugin_version
from .runas import HelperFailed, Identity, UserRunner, identity_of
from .script import DEFAULT_PATH, build_environment, build_sbatch

if TYPE_CHECKING:
    from .accounting import SlurmAccounting

__all__ = ["SlurmCliAdapter"]

log = logging.getLogger(__name__)

#: scancel messages that mean "nothing left to cancel" (cancel is idempotent).
_ALREADY_DONE = ("invalid job id", "already completing or completed", "job has finished")
#: dbd plugins whose JSON reports exit code 0 for ``exit 3`` (seen on Debian 22.05.8,
#: fixtures 22.05/sacct.json vs sacct_exitcode.txt; plain ``sacct -o ExitCode`` is right).
_BAD_EXIT_CODE_PLUGINS = ("dbv0.0.36", "dbv0.0.37", "dbv0.0.38")


@contextlib.contextmanager
def _export_file(env: Mapping[str, str]) -> Iterator[int]:
    """A file descriptor holding ``env`` as sbatch's ``--export-file`` reads it
    (``NAME=value`` entries separated by NUL bytes; values may span lines), in memory."""
    fd = os.memfd_create("broker-job-environment", os.MFD_CLOEXEC)
    try:
        data = memoryview(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))
        while data:
            data = data[os.write(fd, data) :]
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


class SlurmCliAdapter(SchedulerAdapter):
    """Drive one cluster through Slurm's command-line tools.

    Options (the ``[clusters.options]`` table of the clusters file):

    * ``slurm_conf``: path of the cluster's ``slurm.conf`` (``SLURM_CONF``); unset uses
      the tools' default.
    * ``bin_dir``: folder holding sbatch & co.; unset searches ``PATH``.
    * ``slurm_cluster``: the cluster's ``ClusterName`` when it differs from the broker's
      name for it (sacct answers for every cluster of the slurmdbd).
    * ``timeout_s``: limit for one command; past it the scheduler is "unavailable".
    * ``allow_root_jobs``: submit a spec without ``user`` as root (tests only).
    """

    kind = "slurm-cli"
    supports_dependencies = True

    def __init__(
        self,
        cluster: str,
        *,
        slurm_conf: str | None = None,
        bin_dir: str | None = None,
        slurm_cluster: str | None = None,
        timeout_s: float = 30.0,
        allow_root_jobs: bool = False,
    ) -> None:
        super().__init__(cluster)
        self.slurm_conf = slurm_conf
        self.bin_dir = bin_dir
        self.slurm_cluster = slurm_cluster or cluster
        self.timeout_s = timeout_s
        self.allow_root_jobs = allow_root_jobs
        self._release: str | None = None
        self._runner: UserRunner | None = None
        self._runner_lock = threading.Lock()

    # ------------------------------------------------------------------ running tools
    def _bin(self, tool: str) -> str:
        if self.bin_dir:
            return os.path.join(self.bin_dir, tool)
        found = shutil.which(tool) or shutil.which(tool, path=DEFAULT_PATH)
        if not found:
            raise AdapterConfigError(f"{tool} not found on PATH", cluster=self.cluster)
        return found

    def _run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        stdin: str | None = None,
        identity: Identity | None = None,
        cwd: str | None = None,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.CompletedProcess[str]:
        # Every tool runs in this fixed environment, whoever runs it (a job's own goes by
        # --export-file: ``submit``). TZ=UTC: times the tools read or print (sacct -S)
        # mean UTC, whatever the zone of this process or of the host (the JSON times are
        # epoch seconds either way).
        base = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "TZ": "UTC"}
        if self.slurm_conf:
            base["SLURM_CONF"] = self.slurm_conf
        argv: list[str] = [self._bin(tool), *args]
        self._count(tool)
        check_slurm_conf(self.slurm_conf, self.cluster)
        try:
            if identity is not None:
                # As the job's user, through that user's helper (``runas``).
                return self._user_runner(base).run(
                    identity,
                    argv,
                    env=base,
                    cwd=cwd or "/",
                    stdin=stdin,
                    timeout=self.timeout_s,
                    pass_fds=pass_fds,
                )
            return subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=base,
                cwd=cwd or "/",
                check=False,
                pass_fds=pass_fds,
            )
        except HelperFailed as exc:
            if exc.transient:
                raise SchedulerUnavailable(f"{tool}: {exc}", cluster=self.cluster) from exc
            raise AdapterConfigError(f"{tool}: {exc}", cluster=self.cluster) from exc
        except subprocess.TimeoutExpired as exc:
            raise SchedulerUnavailable(
                f"{tool} timed out after {self.timeout_s} s", cluster=self.cluster
            ) from exc
        except OSError as exc:
            if cwd is not None and exc.filename == cwd:  # the job's working directory
                what = "does not exist" if isinstance(exc, FileNotFoundError) else exc.strerror
                raise SubmitRejected(
                    f"cannot run {tool} in {cwd}: {what}", cluster=self.cluster
                ) from exc
            raise AdapterConfigError(f"cannot run {tool}: {exc}", cluster=self.cluster) from exc

    def _user_runner(self, env: Mapping[str, str]) -> UserRunner:
        with self._runner_lock:
            if self._runner is None:
                self._runner = UserRunner(env=env)
            return self._runner

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()

    def _failure(self, tool: str, proc: subprocess.CompletedProcess[str]) -> SchedulerError:
        message = _clean(proc.stderr) or _clean(proc.stdout) or f"{tool} exited {proc.returncode}"
        if is_transient(message):
            return SchedulerUnavailable(message, cluster=self.cluster)
        if "configuration source" in message.lower() or "slurm.conf" in message.lower():
            return AdapterConfigError(message, cluster=self.cluster)
        return SchedulerError(message, cluster=self.cluster)

    def _json(self, tool: str, args: Sequence[str]) -> dict[str, Any]:
        proc = self._run(tool, args)
        if proc.returncode != 0:
            raise self._failure(tool, proc)
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise SchedulerUnavailable(
                f"{tool} printed no JSON: {exc}", cluster=self.cluster
            ) from exc
        if not isinstance(doc, dict):
            raise SchedulerError(f"{tool} printed unexpected JSON", cluster=self.cluster)
        errors = doc.get("errors") or []
        if tool != "sacct" and errors:
            # 22.05's squeue/sinfo --json exit 0 with an empty list and `errors` when the
            # controller does not answer: that is an outage, not an empty cluster.
            what = "; ".join(
                str(e.get("description") or e.get("error") or e) if isinstance(e, dict) else str(e)
                for e in errors
            )
            raise SchedulerUnavailable(f"{tool}: {what}", cluster=self.cluster)
        if not self._release:
            from .parse import release

            self._release = release(doc) or None
        return doc

    def _identity(self, user: str | None) -> Identity | None:
        is_root = os.geteuid() == 0
        if user is None:
            if is_root and not self.allow_root_jobs:
                raise SubmitRejected(
                    "refusing to run a job as root: the spec names no user", cluster=self.cluster
                )
            return None
        identity = identity_of(user)
        if identity is None:
            raise SubmitRejected(f"no POSIX user {user!r} on the submit host", cluster=self.cluster)
        if identity.uid == os.geteuid():
            return None
        if not is_root:
            raise AdapterConfigError(
                f"cannot submit as {user!r}: the broker is not root", cluster=self.cluster
            )
        return identity

    # ------------------------------------------------------------------ contract
    def submit(self, spec: JobSpec) -> str:
        identity = self._identity(spec.user)
        home = identity.home if identity else os.environ.get("HOME", "/")
        try:
            request = build_sbatch(spec)
            job_env = build_environment(spec, home=home, user=spec.user, slurm_conf=self.slurm_conf)
        except ValueError as exc:
            raise SubmitRejected(str(exc), cluster=self.cluster) from exc
        if request.removed_directives:
            log.info(
                "job %s: neutralised script directives %s",
                spec.tag,
                [d.warning for d in request.removed_directives],
            )
        # The job's environment reaches the job through --export-file, never sbatch's
        # own: sbatch (and the helper that starts it, root until it drops its ids) run
        # in the fixed environment of every tool, so nothing a tenant sets (loader,
        # locale or gconv paths, SBATCH_*) can steer them. The job gets exactly the
        # file's variables (and Slurm's own).
        with _export_file(job_env) as fd:
            proc = self._run(
                "sbatch",
                [*request.options, f"--export-file={fd}"],
                stdin=request.script,
                identity=identity,
                cwd=spec.working_dir or (identity.home if identity else None),
                pass_fds=(fd,),
            )
        if proc.returncode != 0:
            failure = self._failure("sbatch", proc)
            if failure.transient or isinstance(failure, AdapterConfigError):
                raise failure
            raise SubmitRejected(failure.message, cluster=self.cluster)
        job_id = proc.stdout.strip().split(";", 1)[0]
        if not JOB_ID.match(job_id):
            raise SchedulerError(f"sbatch printed no job id: {proc.stdout!r}", cluster=self.cluster)
        return job_id

    def status(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        if self._runner is not None:
            self._runner.sweep()
        wanted = {str(j) for j in job_ids if JOB_ID.match(str(j))}
        if not wanted:
            return {}
        live = self._live(sorted(wanted, key=_id_order))
        found = {j: live[j] for j in wanted if j in live}
        missing = sorted(wanted - found.keys(), key=_id_order)
        # Ended: settled from accounting (elapsed without time suspended, every run of a
        # requeued job, every task of an array: ``from_accounting``).
        ended = sorted((j for j, i in found.items() if i.state.terminal), key=_id_order)
        if missing or ended:
            ids = ",".join(missing + ended)
            doc = self._json("sacct", ["--json", "--allusers", "--duplicates", "-j", ids])
            done = parse_jobs(doc, self.slurm_cluster)
            if plugin_version(doc) in _BAD_EXIT_CODE_PLUGINS:
                done = self._fix_exit_codes(done)
            found.update({j: done[j] for j in missing if j in done})
            for j in ended:
                found[j] = from_accounting(found[j], done.get(j))
        return found

    def _live(self, wanted: list[str]) -> dict[str, JobInfo]:
        """The controller's jobs, ``wanted`` among them. From 23.02, ``squeue --json``
        honours ``--jobs``: only the broker's jobs are printed and parsed, not the whole
        cluster's (22.05 ignores it and prints every job, so it is not passed there,
        nor before the release is known). When the controller knows none of them,
        23.02+ squeue fails with "Invalid job id specified": none is live."""
        args = ["--json"]
        if self._release and not older_than_2302(self._release):
            args.append(f"--jobs={','.join(wanted)}")
        try:
            doc = self._json("squeue", args)
        except SchedulerError as exc:
            if len(args) > 1 and not exc.transient and "invalid job id" in exc.message.lower():
                return {}
            raise
        return parse_jobs(doc, self.slurm_cluster)

    def _fix_exit_codes(self, jobs: dict[str, JobInfo]) -> dict[str, JobInfo]:
        ended = [j for j, info in jobs.items() if info.state.terminal or info.tasks]
        if not ended:
            return jobs
        proc = self._run(
            "sacct",
            [
                *("-n", "-P", "-X", "--allusers", "-o", "JobIDRaw,JobID,ExitCode"),
                *("-j", ",".join(ended)),
            ],
        )
        if proc.returncode != 0:
            log.warning("sacct -o ExitCode failed; exit codes may read 0: %s", proc.stderr)
            return jobs
        codes: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            raw_id, job_id, text = [*line.split("|"), "", ""][:3]
            codes[job_id] = text  # an array's task: "<array id>_<index>"
            codes.setdefault(raw_id, text)
        fixed = dict(jobs)
        for job_id, info in jobs.items():
            if info.tasks:
                tasks = [_with_exit(t, codes.get(t.job_id)) for t in info.tasks]
                fixed[job_id] = arrays.aggregate(job_id, tasks, base=info)
            else:
                fixed[job_id] = _with_exit(info, codes.get(job_id))
        return fixed

    def cancel(self, job_id: str) -> None:
        if not JOB_ID.match(str(job_id)):
            return  # no such job can exist: nothing to cancel
        proc = self._run("scancel", [str(job_id)])
        if proc.returncode == 0:
            return
        message = _clean(proc.stderr).lower()
        if any(text in message for text in _ALREADY_DONE):
            return
        raise self._failure("scancel", proc)

    def _node_doc(self) -> dict[str, Any]:
        # 22.05 has no `scontrol --json`; its `sinfo --json` lists nodes. From 23.02 on,
        # `sinfo --json` groups by partition and `scontrol show nodes --json` lists nodes.
        if self._release is None:
            self._json("squeue", ["--json"])
        if older_than_2302(self._release or ""):
            return self._json("sinfo", ["--json"])
        return self._json("scontrol", ["show", "nodes", "--json"])

    def nodes(self) -> list[NodeInfo]:
        return parse_nodes(self._node_doc())

    def ping(self) -> ClusterInfo:
        jobs_doc = self._json("squeue", ["--json"])
        nodes = parse_nodes(self._node_doc())
        jobs = parse_jobs(jobs_doc, self.slurm_cluster).values()
        return cluster_info(self.cluster, self._release or "", nodes, jobs)

    def list_tagged(self, since: datetime) -> dict[str, JobInfo]:
        start = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")  # _run sets TZ=UTC
        done = parse_jobs(
            self._json("sacct", ["--json", "--allusers", "-S", start, "-E", "now"]),
            self.slurm_cluster,
        )
        live = parse_jobs(self._json("squeue", ["--json"]), self.slurm_cluster)
        return keyed_by_tag({**done, **live}, since)

    def drain(self, node: str, reason: str) -> None:
        self._scontrol_update(node, "DRAIN", reason)

    def resume(self, node: str) -> None:
        self._scontrol_update(node, "RESUME", None)

    def _scontrol_update(self, node: str, state: str, reason: str | None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+", node):
            raise SchedulerError(f"invalid node name {node!r}", cluster=self.cluster)
        args = ["update", f"NodeName={node}", f"State={state}"]
        if reason is not None:
            args.append(f"Reason={reason.replace(chr(10), ' ') or 'broker'}")
        proc = self._run("scontrol", args)
        if proc.returncode != 0:
            raise self._failure("scontrol", proc)

    def accounting(self) -> SlurmAccounting:
        """A ``SlurmAccounting`` (sacctmgr) bound to this cluster's configuration."""
        from .accounting import SlurmAccounting

        return SlurmAccounting(
            self.slurm_cluster,
            slurm_conf=self.slurm_conf,
            bin_dir=self.bin_dir,
            timeout_s=self.timeout_s,
        )


def _with_exit(info: JobInfo, text: str | None) -> JobInfo:
    """``info`` with the exit code of sacct's ``ExitCode`` text, if it ended and has one."""
    code = exit_code_from_text(text) if text and info.state.terminal else None
    if code is None:
        return info
    return dataclasses.replace(info, exit_code=code, signal=exit_signal_from_text(text or ""))


def _clean(text: str) -> str:
    lines = [re.sub(r"^\w+: error: ", "", ln.strip()) for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines)


def _id_order(job_id: str) -> tuple[int, str]:
    head = job_id.split("_", 1)[0]
    return (int(head) if head.isdigit() else 0, job_id)
