"""Runs one local-adapter job: ``python -m scheduler_adapters._local_runner JOB_DIR``.

A detached process of its own, so jobs outlive a restart of the broker: it starts the
batch script in a new session, enforces the time limit, turns SIGTERM into a cancel,
and records the outcome atomically in ``state.json``, which the adapter reads.

Run as root, it runs the script as the account in ``meta.json``'s ``run_as`` (its uid,
group and supplementary groups: nothing of root's is kept), never as root. It opens the
script and the output files itself and hands the job descriptors, so the job needs no
path to the adapter's directory; the output files are opened without following a link
and must be regular files.

The script is executed, not read by a shell: the kernel runs the interpreter of its
``#!`` line (``#!/usr/bin/env python3``), as slurmd does with a batch script; a script
without one got ``#!/bin/bash`` when it was written. The job starts in its working
directory, entered from its job directory without following a link (the directories
below the job directory are the job's own to plant links in).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _now() -> str:
    return datetime.now(UTC).isoformat()


def write_state(job_dir: Path, state: dict[str, Any]) -> None:
    tmp = job_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, job_dir / "state.json")


def _open_out(path: str, who: dict[str, Any] | None) -> int:
    """Open an output file for appending: never through a link, only a regular file
    (a FIFO left there must not block us), owned by the job's account."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        if who is not None:
            os.fchown(fd, who["uid"], who["gid"])
    except BaseException:
        os.close(fd)
        raise
    return fd


def _start(
    meta: dict[str, Any], job_dir: Path, index: int | None, who: dict[str, Any] | None
) -> subprocess.Popen[bytes]:
    """Start the script (one task of an array when ``index`` is set) in its own session."""

    def _path(template: str) -> str:
        if index is None:
            return template
        return template.replace("%A", meta["job_id"]).replace("%a", str(index))

    out = _open_out(_path(meta["stdout_path"]), who)
    same = meta["stderr_path"] == meta["stdout_path"]
    err = out if same else _open_out(_path(meta["stderr_path"]), who)
    script = os.open(job_dir / "script.sh", os.O_RDONLY | os.O_NOFOLLOW)  # inherited below
    ids: dict[str, Any] = {}
    if who is not None:
        ids = {"user": who["uid"], "group": who["gid"], "extra_groups": who["groups"]}
    env = dict(meta["environment"])
    if index is not None:
        env["SLURM_ARRAY_TASK_ID"] = env["BROKER_ARRAY_TASK_ID"] = str(index)
    try:
        # Entered here, before the switch (its ancestors may be closed to the job's
        # user); the job inherits it. This process runs only this job.
        _enter(meta.get("job_dir") or meta["working_dir"], meta["working_dir"])
        return subprocess.Popen(
            # The kernel reads the #! line; the interpreter opens /dev/fd/N, inherited.
            [f"/dev/fd/{script}"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=(script,),
            env=env,
            start_new_session=True,
            **ids,
        )
    finally:
        for fd in {out, err, script}:
            os.close(fd)


def _end_state(why: str, rc: int) -> tuple[str, int]:
    final = why if why else "completed" if rc == 0 else "failed"
    return final, rc if rc >= 0 else 128 - rc


def run(job_dir: Path) -> int:
    meta = json.loads((job_dir / "meta.json").read_text())
    if meta.get("array"):
        return run_array(job_dir, meta)
    state: dict[str, Any] = {"state": "running", "runner_pid": os.getpid(), "start_time": _now()}
    if (job_dir / "cancel").exists():
        write_state(job_dir, {**state, "state": "cancelled", "end_time": _now()})
        return 0
    who = _who(meta)
    proc = _start(meta, job_dir, None, who)
    outcome = {"why": ""}

    def _stop(signum: int, _frame: Any) -> None:
        outcome["why"] = "cancelled"
        _kill_group(proc)

    signal.signal(signal.SIGTERM, _stop)
    state["pid"] = proc.pid
    write_state(job_dir, state)
    # A cancel that came while we started: the adapter marks first, then reads our state,
    # so either it saw "running" and signals us, or we see its mark here.
    if (job_dir / "cancel").exists():
        _stop(signal.SIGTERM, None)
    deadline = time.monotonic() + meta["time_limit_minutes"] * 60
    while proc.poll() is None:
        if time.monotonic() > deadline:
            outcome["why"] = "timeout"
            _kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
    final, exit_code = _end_state(outcome["why"], proc.returncode)
    write_state(job_dir, {**state, "state": final, "exit_code": exit_code, "end_time": _now()})
    return 0


def _who(meta: dict[str, Any]) -> dict[str, Any] | None:
    who: dict[str, Any] | None = meta.get("run_as") if os.geteuid() == 0 else None
    if os.geteuid() == 0 and (who is None or who["uid"] == 0):
        raise RuntimeError("refusing to run a job as root: its metadata names no other user")
    return who


def run_array(job_dir: Path, meta: dict[str, Any]) -> int:
    """Run an array's tasks, at most ``throttle`` at once, each with its own time limit.

    ``state.json`` holds the array's state and one entry per task that started
    (``tasks``); a task not there yet is pending. ``cancel`` cancels them all,
    ``cancel_<index>`` one task (the adapter writes both, then signals us).
    """
    spec = meta["array"]
    pending: list[int] = list(spec["indices"])
    width = min(len(pending), spec.get("throttle") or len(pending))
    tasks: dict[str, dict[str, Any]] = {}
    state: dict[str, Any] = {
        "state": "running",
        "runner_pid": os.getpid(),
        "start_time": _now(),
        "tasks": tasks,
    }
    who = _who(meta)
    procs: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    why: dict[int, str] = {}
    cancelled = {"all": False}

    def _on_term(signum: int, _frame: Any) -> None:
        cancelled["all"] = True

    signal.signal(signal.SIGTERM, _on_term)
    write_state(job_dir, state)
    written = json.dumps(state)
    limit_s = meta["time_limit_minutes"] * 60
    while pending or procs:
        everything = cancelled["all"] or (job_dir / "cancel").exists()
        for index in list(pending):
            if everything or (job_dir / f"cancel_{index}").exists():
                pending.remove(index)
                tasks[str(index)] = {"state": "cancelled", "exit_code": None, "end_time": _now()}
        for index, (proc, deadline) in procs.items():
            if proc.poll() is None and index not in why:
                if everything or (job_dir / f"cancel_{index}").exists():
                    why[index] = "cancelled"
                    _kill_group(proc)
                elif time.monotonic() > deadline:
                    why[index] = "timeout"
                    _kill_group(proc)
        for index, (proc, _) in list(procs.items()):
            if proc.poll() is not None:
                final, exit_code = _end_state(why.pop(index, ""), proc.returncode)
                tasks[str(index)].update(state=final, exit_code=exit_code, end_time=_now())
                del procs[index]
        while pending and len(procs) < width:
            index = pending.pop(0)
            try:
                proc = _start(meta, job_dir, index, who)
            except Exception as exc:  # one task's failure to start is that task's
                tasks[str(index)] = {
                    "state": "failed",
                    "reason": f"runner error: {exc}",
                    "exit_code": None,
                    "start_time": _now(),
                    "end_time": _now(),
                }
                continue
            procs[index] = (proc, time.monotonic() + limit_s)
            tasks[str(index)] = {"state": "running", "pid": proc.pid, "start_time": _now()}
        if json.dumps(state) != written:
            write_state(job_dir, state)
            written = json.dumps(state)
        if procs:
            time.sleep(0.2)
    ends = [t["state"] for _, t in sorted(tasks.items(), key=lambda kv: int(kv[0]))]
    final = next((e for e in ends if e != "completed"), "completed")
    write_state(job_dir, {**state, "state": final, "end_time": _now()})
    return 0


def _enter(top: str, work: str) -> None:
    """Change into ``work``, which is ``top`` or below it, following no link below ``top``."""
    rel = os.path.relpath(work, top)
    parts = [] if rel == "." else rel.split(os.sep)
    if any(p in ("", "..") for p in parts):
        raise OSError(f"working directory {work} is not under {top}")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise OSError(f"working directory {work}: {part} is not a directory") from exc
            os.close(fd)
            fd = nxt
        os.fchdir(fd)
    finally:
        os.close(fd)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> int:
    job_dir = Path(os.path.abspath(sys.argv[1]))  # the job's cwd is not ours
    # Detach fully: the submitting process reaps the intermediate child at once.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    try:
        return run(job_dir)
    except Exception as exc:  # record, never lose a job silently
        write_state(
            job_dir,
            {
                "state": "failed",
                "reason": f"runner error: {exc}",
                "exit_code": None,
                "end_time": _now(),
            },
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
