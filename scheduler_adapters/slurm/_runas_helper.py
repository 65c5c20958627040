"""A helper that runs Slurm's tools as one POSIX user, for the slurm-cli adapter.

Started by ``runas.UserRunner`` as root, in the tools' fixed environment, with its
stdin a Unix socket to the broker. Before it reads anything from that socket it drops
every id for good (supplementary groups, then real/effective/saved gid, then uid) and
checks that it did; from then on it runs each request's tool as that user with
``subprocess`` (``vfork``: no copy of a large process, no id switch per call) and
answers with the tool's exit status and output. It exits when the socket closes.

A request is a frame (4-byte big-endian length, then JSON) of ``argv``, ``cwd``,
``env``, ``stdin``, ``timeout`` and ``fds`` (the numbers the tool must find the
descriptors sent with the frame at, e.g. sbatch's ``--export-file=N``); the answer is
a frame of ``returncode``, ``stdout``, ``stderr``, or ``timeout``, or ``oserror``
(``errno``, ``strerror``, ``filename``) when the tool could not be started.

Standard library only: it runs with ``python -I -S``, outside the broker's
environment.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
from typing import Any

#: Largest frame either side accepts (a script is at most a few MB).
MAX_FRAME = 64 << 20
#: Most descriptors a request may carry.
MAX_FDS = 4
#: Where received descriptors wait before they move to the numbers the tool expects.
_PARKING = 256
_LENGTH = struct.Struct(">I")


def send_frame(sock: socket.socket, doc: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(doc, separators=(",", ":")).encode()
    data = _LENGTH.pack(len(payload)) + payload
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    sock.sendall(data)


def _recv_exactly(sock: socket.socket, n: int, fds: list[int]) -> bytes | None:
    """``n`` bytes (None at a clean end of stream), collecting any descriptors sent."""
    chunks, got = [], 0
    while got < n:
        fdarray = array.array("i")
        data, ancdata, _, _ = sock.recvmsg(n - got, socket.CMSG_SPACE(MAX_FDS * fdarray.itemsize))
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fdarray.frombytes(cdata[: len(cdata) - len(cdata) % fdarray.itemsize])
        fds.extend(fdarray)
        if not data:
            if got == 0:
                return None
            raise ConnectionError("stream ended inside a frame")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next frame and the descriptors that came with it; None at end of stream."""
    fds: list[int] = []
    try:
        head = _recv_exactly(sock, _LENGTH.size, fds)
        if head is None:
            return None
        (size,) = _LENGTH.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes")
        body = _recv_exactly(sock, size, fds)
        if body is None:
            raise ConnectionError("stream ended inside a frame")
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("a frame must hold a JSON object")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return doc, fds


def drop_to(uid: int, gid: int, groups: list[int]) -> None:
    """Become ``uid``/``gid`` with exactly ``groups``, for good; raise if any id stays."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError("could not drop to the user's ids")
    if sorted(set(os.getgroups())) != sorted(set(groups)):
        raise PermissionError("could not set the user's groups")
    if uid != 0:
        try:
            os.setresuid(0, 0, 0)
        except PermissionError:
            pass
        else:
            raise PermissionError("could get root back after dropping it")


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return value


def run(request: dict[str, Any], received: list[int]) -> dict[str, Any]:
    """Run one request's tool; the received descriptors are closed on return."""
    parked: list[int] = []
    placed: list[int] = []
    try:
        argv = _strings(request.get("argv"), "argv")
        targets = request.get("fds") or []
        if (
            not argv
            or not isinstance(request.get("cwd"), str)
            or not isinstance(request.get("env"), dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items())
            or not isinstance(request.get("timeout"), int | float)
            or not (request.get("stdin") is None or isinstance(request["stdin"], str))
            or not isinstance(targets, list)
            or len(targets) != len(received)
            or not all(isinstance(t, int) and 3 <= t < _PARKING for t in targets)
            or len(set(targets)) != len(targets)
        ):
            raise ValueError("malformed request")
        # Park every received descriptor above the targets first, so that placing one
        # cannot overwrite another not yet placed.
        parked.extend(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _PARKING) for fd in received)
        for src, target in zip(parked, targets, strict=True):
            os.dup2(src, target, inheritable=False)
            placed.append(target)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=request["env"],
                cwd=request["cwd"],
                pass_fds=targets,
            )
        except OSError as exc:
            return {
                "oserror": {
                    "errno": exc.errno or 0,
                    "strerror": exc.strerror or str(exc),
                    "filename": exc.filename if isinstance(exc.filename, str) else None,
                }
            }
        stdin = None if request["stdin"] is None else request["stdin"].encode()
        try:
            out, err = proc.communicate(stdin, timeout=request["timeout"])
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"timeout": True}
        return {
            "returncode": proc.returncode,
            "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace"),
        }
    finally:
        for fd in (*received, *parked, *placed):
            with contextlib.suppress(OSError):
                os.close(fd)


def main(args: list[str]) -> int:
    uid, gid = int(args[0]), int(args[1])
    groups = [int(g) for g in args[2].split(",") if g] if len(args) > 2 else []
    # The socket moves above the numbers a request may ask for; fd 0 becomes /dev/null.
    sock = socket.socket(fileno=fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, _PARKING))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        drop_to(uid, gid, groups)
    except OSError as exc:
        send_frame(sock, {"fatal": f"cannot become uid {uid}: {exc}"})
        return 2
    send_frame(sock, {"ready": os.getpid()})
    while True:
        try:
            frame = recv_frame(sock)
        except (OSError, ValueError) as exc:
            print(f"runas helper: {exc}", file=sys.stderr)
            return 1
        if frame is None:
            return 0
        request, received = frame
        try:
            answer = run(request, received)
        except ValueError as exc:
            answer = {"invalid": str(exc)}
        send_frame(sock, answer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
