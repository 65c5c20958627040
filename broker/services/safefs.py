"""Reads and writes inside directories a tenant's job controls, without trusting them.

The broker runs with more rights than a tenant's job (as root, or as the user that
owns every tenant's files), so anything a job can write is hostile input: a link
to a file only the center may read, a FIFO that blocks the reader for ever, a sparse
file whose apparent size is larger than the disk, a directory tree that loops back.
Every function here therefore

* starts from a *trusted* directory (the cluster's scratch root, a workspace root)
  and walks the rest component by component with ``O_NOFOLLOW``: no symlink is
  ever resolved, so nothing outside the trusted root can be reached (the effect of
  ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``, which Python does not expose);
* opens files ``O_NONBLOCK`` and refuses anything but a regular file (``fstat`` on
  the descriptor it will read, so there is no window between check and use);
* reports sizes from that ``fstat`` (``st_size``: a sparse file counts at its
  apparent size, what a copy of it would cost).

Errors are ``UnsafeFile`` (a link, a FIFO, a device...: the message says which and is
safe to show to the tenant) or the usual ``FileNotFoundError``.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
CHUNK_BYTES = 1 << 20


class UnsafeFile(Exception):
    """A path a tenant controls is not something the broker will read: the message
    names the path and why (a symbolic link, a FIFO, ...)."""


_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def kind_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _parts(relpath: str) -> list[str]:
    parts = relpath.split("/")
    if not relpath or any(p in ("", ".", "..") for p in parts):
        raise UnsafeFile(f"{relpath!r} is not a plain relative path")
    return parts


def _refusal(dir_fd: int, name: str, shown: str, exc: OSError) -> Exception:
    """Why opening ``name`` in ``dir_fd`` with O_NOFOLLOW failed, as a tenant-safe error."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            return exc
        return UnsafeFile(f"{shown} is {kind_of(mode)}; the broker does not follow it")
    return exc


def open_dir(root: str | os.PathLike[str], relpath: str = "") -> int:
    """A descriptor of ``root/relpath``; ``root`` is trusted, no link below it is followed."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if not relpath:
        return fd
    try:
        done: list[str] = []
        for part in _parts(relpath):
            done.append(part)
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refusal(fd, part, "/".join(done), exc) from exc
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_regular(root: str | os.PathLike[str], relpath: str) -> tuple[int, os.stat_result]:
    """Open ``root/relpath`` for reading if it is a regular file: ``(fd, its fstat)``.

    Never blocks (a FIFO is opened non-blocking, seen by ``fstat`` and refused) and
    never follows a link, in the last component or any directory above it.
    """
    parent, _, name = relpath.rpartition("/")
    dfd = open_dir(root, parent)
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError as exc:
            raise _refusal(dfd, name, relpath, exc) from exc
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{relpath} is {kind_of(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def create_file(
    root: str | os.PathLike[str],
    relpath: str,
    *,
    owner: tuple[int, int] | None = None,
    dir_mode: int = 0o700,
    file_mode: int = 0o600,
) -> int:
    """Create ``root/relpath`` (it must not exist), making missing directories.

    Directories made here get ``dir_mode`` and, when given, ``owner``; the file is
    created ``file_mode`` with ``O_EXCL``, so an existing name (a planted link) fails.
    """
    parent, _, name = relpath.rpartition("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in _parts(parent) if parent else []:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, dir_mode, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if owner is not None:
                    os.fchown(nxt, *owner)
                os.fchmod(nxt, dir_mode)  # not narrowed by the umask
            except OSError as exc:
                raise _refusal(fd, part, relpath, exc) from exc
            os.close(fd)
            fd = nxt
        try:
            # A retried attempt: replace the name, never write through it.
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError as exc:
            raise UnsafeFile(f"{relpath} is a directory") from exc
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(name, flags, file_mode, dir_fd=fd)
        if owner is not None:
            os.fchown(out, *owner)
        os.fchmod(out, file_mode)
        return out
    finally:
        os.close(fd)


def read_tail(root: str | os.PathLike[str], relpath: str, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of a regular file (empty if it does not exist)."""
    try:
        fd, st = open_regular(root, relpath)
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb") as fh:
        fh.seek(max(0, st.st_size - max_bytes))
        return fh.read(max_bytes)


def read_small(root: str | os.PathLike[str], relpath: str, max_bytes: int) -> bytes:
    """A whole regular file of at most ``max_bytes`` (``UnsafeFile`` if larger)."""
    fd, st = open_regular(root, relpath)
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > max_bytes:
            raise UnsafeFile(f"{relpath} is {st.st_size} bytes, more than {max_bytes}")
        return fh.read(max_bytes)


def iter_range(fd: int, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``fd`` from ``start``, in chunks; closes ``fd`` when done."""
    try:
        left = length
        while left > 0:
            chunk = os.pread(fd, min(CHUNK_BYTES, left), start)
            if not chunk:
                break
            yield chunk
            start += len(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Trusted:
    """A trusted directory and the path below it that a tenant may control."""

    root: str
    below: str

    def join(self, relpath: str) -> str:
        return f"{self.below}/{relpath}" if self.below else relpath

    def open_regular(self, relpath: str) -> tuple[int, os.stat_result]:
        """``open_regular`` of ``relpath`` below; messages name ``relpath`` only (the
        tenant's own name, not where the center keeps its directory)."""
        try:
            return open_regular(self.root, self.join(relpath))
        except UnsafeFile as exc:
            raise UnsafeFile(str(exc).replace(f"{self.below}/", "", 1)) from None


def beneath(trusted_root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Trusted:
    """Split ``path`` into the trusted root it lies under and the rest (``ValueError``
    when it is not under it). Lexical only: nothing is resolved."""
    root = os.path.normpath(os.path.abspath(trusted_root))
    full = os.path.normpath(os.path.abspath(path))
    rel = os.path.relpath(full, root)
    if rel == ".":
        return Trusted(root, "")
    if rel.startswith("..") or os.path.isabs(rel):
        raise ValueError(f"{full} is not under {root}")
    return Trusted(root, rel.replace(os.sep, "/"))


class WalkLimit(Exception):
    """A glob walk visited more entries, or took longer, than it may."""


@dataclass
class _Budget:
    entries: int
    deadline: float

    def spend(self) -> None:
        self.entries -= 1
        if self.entries < 0:
            raise WalkLimit("too many directory entries to search")
        if time.monotonic() > self.deadline:
            raise WalkLimit("searching the job's directory took too long")


@dataclass
class GlobResult:
    """Regular files that matched, what matched but was not collected (and why), and the
    patterns that matched nothing at all."""

    files: list[str]
    refused: list[str]
    unmatched: list[str] = field(default_factory=list)


def glob_files(
    root: str | os.PathLike[str],
    relpath: str,
    patterns: Sequence[str],
    *,
    max_entries: int = 100_000,
    timeout_s: float = 60.0,
) -> GlobResult:
    """Relative paths (to ``root/relpath``) of the regular files matching ``patterns``.

    Glob semantics as ``pathlib``: ``*``, ``?``, ``[...]`` within one component,
    ``**`` for any number of directories; a directory that a pattern names by its name
    (no wildcard in the last component) is taken whole (``outputs: ["results"]``
    collects the files under ``results/``, its links and FIFOs refused by name; ``*``
    still only the files at the top). The walk never enters a symlinked directory and
    lists only regular files, so a link to ``/`` or ``/root`` reveals nothing; a link,
    FIFO or device that a pattern names is reported in ``refused`` (its own name only),
    and a pattern that names nothing in ``unmatched``. It gives up (``WalkLimit``) past
    ``max_entries`` or ``timeout_s``.
    """
    budget = _Budget(max_entries, time.monotonic() + timeout_s)
    found: dict[str, None] = {}
    refused: dict[str, None] = {}
    unmatched: list[str] = []
    top = open_dir(root, relpath)
    try:
        for pattern in patterns:
            named = False
            for rel, mode in _match(top, "", pattern.split("/"), budget):
                named = True
                if stat.S_ISREG(mode):
                    found[rel] = None
                else:
                    refused[f"{rel} is {kind_of(mode)}; not collected"] = None
            if not named:
                unmatched.append(pattern)
    finally:
        os.close(top)
    return GlobResult(list(found), list(refused), unmatched)


def _entries(dfd: int, budget: _Budget) -> list[tuple[str, int]]:
    out = []
    with os.scandir(dfd) as it:
        for entry in it:
            budget.spend()
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            out.append((entry.name, mode))
    return sorted(out)


_WILDCARDS = frozenset("*?[")


def _match(dfd: int, prefix: str, comps: list[str], budget: _Budget) -> Iterator[tuple[str, int]]:
    """``(path, mode)`` of what ``comps`` names below ``dfd``: regular files, and the
    other things a pattern names (links, FIFOs...) for the caller to refuse."""
    if not comps:  # everything below: its links and FIFOs too, for the caller to refuse
        for name, mode in _entries(dfd, budget):
            if stat.S_ISDIR(mode):
                yield from _descend(dfd, name, prefix, [], budget)
            else:
                yield prefix + name, mode
        return
    head, rest = comps[0], comps[1:]
    if head == "**":
        if rest:
            yield from _match(dfd, prefix, rest, budget)
        for name, mode in _entries(dfd, budget):
            if stat.S_ISDIR(mode):
                yield from _descend(dfd, name, prefix, comps, budget)
            elif not rest and stat.S_ISREG(mode):
                yield prefix + name, mode
        return
    regex = re.compile(fnmatch.translate(head))
    literal = not _WILDCARDS.intersection(head)
    for name, mode in _entries(dfd, budget):
        if not regex.match(name):
            continue
        if stat.S_ISDIR(mode):
            if rest:
                yield from _descend(dfd, name, prefix, rest, budget)
            elif literal:  # a directory named last, not by a wildcard: all of it
                yield from _descend(dfd, name, prefix, [], budget)
        elif stat.S_ISREG(mode):
            if not rest:
                yield prefix + name, mode
        else:
            yield prefix + name, mode  # a link (even to a directory), a FIFO...: refused


MAX_DEPTH = 64


def _descend(
    dfd: int, name: str, prefix: str, comps: list[str], budget: _Budget
) -> Iterator[tuple[str, int]]:
    if prefix.count("/") >= MAX_DEPTH:
        raise WalkLimit(f"directories nested deeper than {MAX_DEPTH} levels")
    try:
        sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except OSError:
        return  # replaced by a link or removed meanwhile: not followed
    try:
        yield from _match(sub, f"{prefix}{name}/", comps, budget)
    finally:
        os.close(sub)


def path_of(trusted: Trusted, relpath: str) -> Path:
    """For messages only: the path a relative name stands for."""
    return Path(trusted.root) / trusted.join(relpath)
