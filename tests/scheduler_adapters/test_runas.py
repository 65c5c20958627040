"""Tools run as a POSIX user through long-lived helpers (``runas``): the helper keeps
none of root's ids or capabilities, a tool that hangs is killed and its helper reused,
a dead or stopped helper is replaced, and whatever a helper answers is checked."""

from __future__ import annotations

import json
import os
import pwd
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from scheduler_adapters.slurm import _runas_helper as proto
from scheduler_adapters.slurm import runas
from scheduler_adapters.slurm.runas import HelperFailed, UserRunner, identity_of
from tests._slurm import ensure_posix_user

USER = "brokeridtest"  # the same tenant-like user as test_slurm_cli's identity tests
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs tools as others")


@pytest.fixture
def runner() -> Iterator[UserRunner]:
    r = UserRunner(env=ENV)
    yield r
    r.close()


@pytest.fixture
def ident() -> runas.Identity:
    ensure_posix_user(USER)
    found = identity_of(USER)
    assert found is not None
    return found


def sh(r: UserRunner, ident: runas.Identity, script: str) -> str:
    proc = r.run(ident, ["/bin/sh", "-c", script], env=ENV, cwd="/", stdin=None, timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_root
def test_the_tool_has_the_users_ids_only_and_no_capability(
    runner: UserRunner, ident: runas.Identity
) -> None:
    status = sh(
        runner,
        ident,
        "grep -E '^(Uid|Gid|Groups|CapPrm|CapEff)' /proc/self/status",
    )
    fields = {k: v.split() for k, v in (line.split(":", 1) for line in status.splitlines())}
    pw = pwd.getpwnam(USER)
    assert fields["Uid"] == [str(pw.pw_uid)] * 4
    assert fields["Gid"] == [str(pw.pw_gid)] * 4
    assert sorted(map(int, fields["Groups"])) == sorted(set(os.getgrouplist(USER, pw.pw_gid)))
    assert int(fields["CapPrm"][0], 16) == int(fields["CapEff"][0], 16) == 0
    # The helper itself (the tool's parent) is as bare, and stays so between calls.
    helper = sh(runner, ident, "grep -E '^(Uid|CapEff)' /proc/$PPID/status")
    assert f"Uid:\t{pw.pw_uid}\t{pw.pw_uid}\t{pw.pw_uid}\t{pw.pw_uid}" in helper
    assert "CapEff:\t0000000000000000" in helper


#: The descriptors test's call, run in a Python of its own (below).
_DESCRIPTORS = """
import json, os, sys
from scheduler_adapters.slurm.runas import UserRunner, identity_of
env = json.loads(sys.argv[2])
fd = os.memfd_create("job-env")
os.write(fd, b"A=1\\0MSG=two\\nlines")
os.lseek(fd, 0, os.SEEK_SET)
# A number that the helper's own socket would take if it were not moved away.
target = 3 if fd != 3 else 4
if target != fd:
    os.dup2(fd, target)
runner = UserRunner(env=env)
try:
    proc = runner.run(
        identity_of(sys.argv[1]),
        ["/bin/sh", "-c", f"cat /dev/fd/{target}; echo; cat; echo oops >&2; exit 3"],
        env=env, cwd="/", stdin="from stdin\\n", timeout=10, pass_fds=[target],
    )
finally:
    runner.close()
print(json.dumps([proc.returncode, proc.stdout, proc.stderr]))
"""


@needs_root
def test_stdin_output_exit_status_and_descriptors_arrive_intact(ident: runas.Identity) -> None:
    """The call runs in a Python of its own, where descriptor 3 is free: in this process
    it may be another's (a pytest-xdist worker's channel to its controller), and putting
    the job's descriptor there would cut it."""
    child = subprocess.run(
        [sys.executable, "-c", _DESCRIPTORS, ident.name, json.dumps(ENV)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    returncode, stdout, stderr = json.loads(child.stdout)
    assert returncode == 3
    assert stdout == "A=1\0MSG=two\nlines\nfrom stdin\n"
    assert stderr == "oops\n"


@needs_root
def test_a_hung_tool_is_killed_and_its_helper_serves_the_next_call(
    runner: UserRunner, ident: runas.Identity
) -> None:
    marker = f"broker-runas-hang-{os.getpid()}"
    with pytest.raises(subprocess.TimeoutExpired):
        runner.run(
            ident,
            ["/bin/bash", "-c", f"exec -a {marker} sleep 30"],
            env=ENV,
            cwd="/",
            stdin=None,
            timeout=0.5,
        )
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == ""  # killed, not left behind
    assert sh(runner, ident, "echo again") == "again\n"
    assert runner.started == 1


@needs_root
def test_a_helper_that_died_while_idle_is_replaced(
    runner: UserRunner, ident: runas.Identity
) -> None:
    pid = int(sh(runner, ident, "echo $PPID"))
    os.kill(pid, 9)
    time.sleep(0.1)
    assert int(sh(runner, ident, "echo $PPID")) != pid
    assert runner.started == 2


@needs_root
def test_a_helper_stopped_mid_call_fails_the_call_in_time_and_is_replaced(
    runner: UserRunner, ident: runas.Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tool runs as the user, who may signal the helper: a stopped helper costs
    that call only (a transient failure), never a hung worker."""
    monkeypatch.setattr(runas, "GRACE_S", 0.5)
    t0 = time.monotonic()
    with pytest.raises(HelperFailed) as caught:
        runner.run(
            ident,
            ["/bin/sh", "-c", "kill -STOP $PPID"],
            env=ENV,
            cwd="/",
            stdin=None,
            timeout=0.5,
        )
    assert caught.value.transient
    assert time.monotonic() - t0 < 5
    assert sh(runner, ident, "echo fine") == "fine\n"
    assert runner.started == 2


@needs_root
def test_calls_in_flight_at_once_get_a_helper_each(
    runner: UserRunner, ident: runas.Identity
) -> None:
    answers: list[str] = []
    barrier = threading.Barrier(4)

    def call(n: int) -> None:
        barrier.wait()
        answers.append(sh(runner, ident, f"sleep 0.3; echo {n}"))

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [f"{n}\n" for n in range(4)]
    assert runner.started == 4
    for n in range(4):  # then reused, not started again
        assert sh(runner, ident, f"echo {n}") == f"{n}\n"
    assert runner.started == 4


@needs_root
def test_an_idle_helper_is_closed(ident: runas.Identity) -> None:
    r = UserRunner(env=ENV, idle_s=0.2)
    try:
        pid = int(sh(r, ident, "echo $PPID"))
        time.sleep(0.3)
        assert int(sh(r, ident, "echo $PPID")) != pid  # a new one: the first was closed
        time.sleep(0.2)
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in _state(pid)
    finally:
        r.close()


@needs_root
def test_a_sweep_closes_idle_helpers_without_a_call(ident: runas.Identity) -> None:
    r = UserRunner(env=ENV, idle_s=0.2)
    try:
        pid = int(sh(r, ident, "echo $PPID"))
        r.sweep()
        assert os.path.exists(f"/proc/{pid}")  # not idle long enough yet
        time.sleep(0.3)
        r.sweep()
        assert _state(pid) == "gone"  # closed and reaped
    finally:
        r.close()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line for line in f if line.startswith("State:")).lower()
    except OSError:
        return "gone"


@needs_root
def test_a_tool_that_cannot_start_is_an_oserror_naming_what(
    runner: UserRunner, ident: runas.Identity
) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        runner.run(ident, ["/bin/true"], env=ENV, cwd="/nonexistent", stdin=None, timeout=5)
    assert missing.value.filename == "/nonexistent"
    with pytest.raises(PermissionError) as denied:
        runner.run(ident, ["/bin/true"], env=ENV, cwd="/root", stdin=None, timeout=5)
    assert denied.value.filename == "/root"
    with pytest.raises(FileNotFoundError):
        runner.run(ident, ["/no/such/tool"], env=ENV, cwd="/", stdin=None, timeout=5)
    assert runner.started == 1  # none of these cost the helper


def _frame(doc: object) -> bytes:
    payload = json.dumps(doc).encode()
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize(
    "answer",
    [
        _frame({"returncode": "0", "stdout": "", "stderr": ""}),
        _frame({"returncode": 0, "stdout": 1, "stderr": ""}),
        _frame({"oserror": {"errno": "x", "strerror": "", "filename": None}}),
        _frame({"timeout": "yes"}),
        _frame(["not", "an", "object"]),
        struct.pack(">I", proto.MAX_FRAME + 1),
        b"\x00\x00\x00\x10{not json at all",
        b"",
    ],
    ids=["rc-text", "stdout-int", "errno-text", "timeout-text", "list", "huge", "bad-json", "eof"],
)
def test_a_malformed_answer_is_a_helper_failure(answer: bytes) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(answer)
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(HelperFailed):
            runas._answer(ours)


def test_descriptors_in_an_answer_are_closed_and_refused() -> None:
    ours, theirs = socket.socketpair()
    r, w = os.pipe()
    with ours, theirs:
        proto.send_frame(theirs, {"returncode": 0, "stdout": "", "stderr": ""}, [r])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(HelperFailed, match="descriptors"):
            runas._answer(ours)
        assert set(os.listdir("/proc/self/fd")) <= before
    os.close(r)
    os.close(w)


def test_a_malformed_request_gets_no_tool_run() -> None:
    for bad in (
        {"argv": "/bin/true", "cwd": "/", "env": {}, "stdin": None, "timeout": 1},
        {"argv": ["/bin/true"], "cwd": "/", "env": {"A": 1}, "stdin": None, "timeout": 1},
        {"argv": ["/bin/true"], "cwd": "/", "env": {}, "stdin": None, "timeout": 1, "fds": [1]},
    ):
        with pytest.raises(ValueError):
            proto.run(bad, [])


def test_known_users_are_remembered_unknown_ones_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = pwd.getpwnam

    def counting(name: str) -> pwd.struct_passwd:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(runas.pwd, "getpwnam", counting)
    runas._users.clear()
    assert identity_of("root") == identity_of("root") is not None
    assert calls == ["root"]
    assert identity_of("no-such-user-xyz") is None
    assert identity_of("no-such-user-xyz") is None
    assert calls == ["root", "no-such-user-xyz", "no-such-user-xyz"]
