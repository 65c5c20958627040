"""Run a tool as another POSIX user through long-lived helpers, one per call in flight.

The slurm-cli adapter runs sbatch as the job's user. Switching ids per call costs
either a full ``fork()`` of the worker while it holds the GIL (subprocess's ``user=``)
or an extra program started as root first (util-linux ``setpriv``: about 1 ms of CPU a
call here, an eighth of a submission's). Instead, each user gets helpers
(``_runas_helper``): small Python processes started once as root in the tools' fixed
environment, which drop every id for good before they read a request, then start each
tool with ``vfork()`` as that user. A helper serves one call at a time; a user gets as
many as it has calls in flight, and one left idle for ``idle_s`` is closed.

What a helper answers is read as hostile (it runs as a tenant's user): frames are
size-capped JSON whose fields are type-checked, and a helper that answers anything else,
or nothing in time, is killed and the call fails (``HelperFailed``).
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from . import _runas_helper as proto

__all__ = ["HelperFailed", "Identity", "UserRunner", "identity_of"]

#: Seconds a helper may take to start and drop its ids.
START_TIMEOUT_S = 10.0
#: Seconds past a call's own timeout before its helper counts as hung.
GRACE_S = 5.0


class HelperFailed(RuntimeError):
    """The helper could not start (``transient`` false: a configuration fault), or it
    broke the protocol, died or did not answer in time (``transient``: try again)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


#: Seconds a user's ids are remembered (as nscd would): a lookup costs ~0.2 ms a
#: submission, most of it the group database.
USER_TTL_S = 60.0
_users: TTLCache[str, Identity] = TTLCache(maxsize=4096, ttl=USER_TTL_S)
_users_lock = threading.Lock()


def identity_of(user: str) -> Identity | None:
    """``user``'s uid, gid, groups and home from the user database, None if there is no
    such user (not remembered: a user made meanwhile is found at once)."""
    with _users_lock:
        found = _users.get(user)
    if found is not None:
        return found
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = tuple(sorted(set(os.getgrouplist(user, pw.pw_gid))))
    found = Identity(user, pw.pw_uid, pw.pw_gid, groups, pw.pw_dir)
    with _users_lock:
        _users[user] = found
    return found


@dataclass(eq=False)
class _Helper:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    last_used: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        self.sock.close()  # the helper exits at end of stream
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class UserRunner:
    """Helpers per identity, started on demand; ``run`` is safe from many threads."""

    def __init__(self, *, env: Mapping[str, str], idle_s: float = 60.0) -> None:
        self._env = dict(env)
        self._idle_s = idle_s
        self._idle: dict[Identity, list[_Helper]] = {}
        self._lock = threading.Lock()
        self.started = 0  # helpers started so far (tests, metrics)
        # An adapter dropped without close() still ends its helpers.
        self._finalizer = weakref.finalize(self, _close_all, self._idle, self._lock)

    def run(
        self,
        identity: Identity,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        stdin: str | None,
        timeout: float,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Like ``subprocess.run(argv, capture_output=True, text=True)`` as ``identity``:
        ``subprocess.TimeoutExpired`` past ``timeout`` (the tool is killed), ``OSError``
        if the tool could not be started, ``HelperFailed`` if the helper failed."""
        request = {
            "argv": list(argv),
            "cwd": cwd,
            "env": dict(env),
            "stdin": stdin,
            "timeout": timeout,
            "fds": list(pass_fds),
        }
        for attempt in (1, 2):
            helper = self._checkout(identity)
            try:
                helper.sock.settimeout(timeout + GRACE_S)
                try:
                    proto.send_frame(helper.sock, request, list(pass_fds))
                except OSError as exc:
                    # Not delivered (the helper died while idle): once more, a new one.
                    if attempt == 1:
                        helper.proc.kill()
                        helper.close()
                        continue
                    raise HelperFailed(f"cannot reach the helper: {exc}") from exc
                answer = _answer(helper.sock)
            except BaseException:
                helper.proc.kill()
                helper.close()
                raise
            self._checkin(identity, helper)
            break
        if "returncode" in answer:
            return subprocess.CompletedProcess(
                list(argv), answer["returncode"], answer["stdout"], answer["stderr"]
            )
        if "timeout" in answer:
            raise subprocess.TimeoutExpired(list(argv), timeout)
        err = answer["oserror"]
        raise OSError(err["errno"], err["strerror"], err["filename"])

    def close(self) -> None:
        """End every idle helper (a later call starts new ones)."""
        _close_all(self._idle, self._lock)

    def sweep(self) -> None:
        """Close the helpers idle for ``idle_s`` (each call does; so do the adapter's
        polls, so helpers do not outlive a burst of submissions by long)."""
        now = time.monotonic()
        stale: list[_Helper] = []
        with self._lock:
            for key, helpers in list(self._idle.items()):
                keep = [h for h in helpers if now - h.last_used < self._idle_s]
                stale += [h for h in helpers if now - h.last_used >= self._idle_s]
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
        for h in stale:
            h.close()

    def _checkout(self, identity: Identity) -> _Helper:
        self.sweep()
        with self._lock:
            helper = self._idle[identity].pop() if self._idle.get(identity) else None
        if helper is not None and helper.proc.poll() is None:
            return helper
        if helper is not None:
            helper.close()
        return self._start(identity)

    def _checkin(self, identity: Identity, helper: _Helper) -> None:
        helper.last_used = time.monotonic()
        with self._lock:
            self._idle.setdefault(identity, []).append(helper)

    def _start(self, identity: Identity) -> _Helper:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    proto.__file__,
                    str(identity.uid),
                    str(identity.gid),
                    ",".join(map(str, identity.groups)),
                ],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                env=self._env,
                cwd="/",
            )
        except OSError as exc:
            ours.close()
            raise HelperFailed(
                f"cannot start a helper for {identity.name}: {exc}", transient=False
            ) from exc
        finally:
            theirs.close()
        helper = _Helper(proc, ours)
        try:
            ours.settimeout(START_TIMEOUT_S)
            frame = proto.recv_frame(ours)
            if frame is None or frame[1]:
                raise HelperFailed(f"the helper for {identity.name} ended before it was ready")
            doc = frame[0]
            if "fatal" in doc:
                raise HelperFailed(str(doc["fatal"])[:500], transient=False)
            if doc.get("ready") != proc.pid:
                raise HelperFailed(f"the helper for {identity.name} did not say it was ready")
        except BaseException as exc:
            proc.kill()
            helper.close()
            if isinstance(exc, HelperFailed):
                raise
            raise HelperFailed(f"the helper for {identity.name} did not start: {exc}") from exc
        self.started += 1
        return helper


def _close_all(idle: dict[Identity, list[_Helper]], lock: threading.Lock) -> None:
    with lock:
        helpers = [h for hs in idle.values() for h in hs]
        idle.clear()
    for helper in helpers:
        helper.close()


def _answer(sock: socket.socket) -> dict[str, Any]:
    """The helper's answer, checked field by field."""
    try:
        frame = proto.recv_frame(sock)
    except TimeoutError as exc:
        raise HelperFailed("the helper did not answer in time") from exc
    except (OSError, ValueError) as exc:
        raise HelperFailed(f"unreadable answer from the helper: {exc}") from exc
    if frame is None:
        raise HelperFailed("the helper ended without answering")
    doc, fds = frame
    for fd in fds:
        os.close(fd)
    if fds:
        raise HelperFailed("the helper sent descriptors")
    if (
        isinstance(doc.get("returncode"), int)
        and isinstance(doc.get("stdout"), str)
        and isinstance(doc.get("stderr"), str)
    ):
        return doc
    if doc.get("timeout") is True:
        return doc
    err = doc.get("oserror")
    if (
        isinstance(err, dict)
        and isinstance(err.get("errno"), int)
        and isinstance(err.get("strerror"), str)
        and (err.get("filename") is None or isinstance(err["filename"], str))
    ):
        return doc
    raise HelperFailed(f"malformed answer from the helper: {str(doc)[:200]}")
