"""Threads for the GEMM and FFT cores: Python threads over compiled ``nogil`` code.

Why not numba's ``parallel=True``: a parfor is compiled as a gufunc into which numba links,
re-optimises and re-emits every function the loop body calls, once per ``prange`` loop and
once more for the function around it. For the FFT that cost more than the FFT itself
(24 s of a cold ``validate``'s 34 s of compiling here, against 13 s for the one-thread
core). Here a core is one ordinary jitted function that a thread runs on its share,
compiled once and used alike by one thread and by many; the threads take work from an
atomic counter (a thread the OS has descheduled on a busy host holds up no fixed share)
and wait, spinning briefly and then yielding the CPU, only for work another thread has
taken (``wait_for``), so a thread that starts late or not at all holds no one up; the
``barrier``, which waits for every thread to arrive, is kept for cores that need one.
After its share, a pool thread watches a few milliseconds for the next call before it
sleeps (``SPIN_TICKS``), as OpenMP runtimes do, so calls in a row find it awake. A pool
thread that wakes on its caller's CPU moves off it (``_hop_off``), and the caller waits
for its pool threads spinning, not asleep (``_watch``, ``polite``): on a VM, a woken
thread was often put on the CPU of the thread that woke it, beside that thread.

One parallel call runs at a time per process (``run``): a core waiting at a barrier needs
every one of its threads running, which a pool shared by overlapping calls cannot promise.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from kernels._jit import jit

_libc = ctypes.CDLL(None)
# Cached machine code refers to the symbol by name; it is bound again in every process.
llvm_binding.add_symbol(
    "kernels_sched_yield", ctypes.cast(_libc.sched_yield, ctypes.c_void_p).value or 0
)

SPINS = 4000  # pause instructions (~100 ns each) before a waiter starts yielding

_sched_getcpu = _libc.sched_getcpu  # the CPU the calling thread runs on now
_sched_getcpu.restype = ctypes.c_int
_sched_getcpu.argtypes = []


def _elem_ptr(context: Any, builder: Any, arrty: Any, arr: Any, idx: Any) -> Any:
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [idx])


def _is_i64_array(arr: Any) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.int64


@intrinsic
def atomic_add(typingctx: Any, arr: Any, idx: Any, v: Any) -> Any:
    """``arr[idx] += v`` as one atomic read-modify-write (sequentially consistent), for an
    int64 array; returns the value before."""
    if not _is_i64_array(arr):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", p, val, "seq_cst")

    return types.int64(arr, idx, v), codegen


@intrinsic
def atomic_load(typingctx: Any, arr: Any, idx: Any) -> Any:
    """``arr[idx]`` read atomically (acquire): what a thread wrote before its atomic_add
    on the same element is seen after this load returns the added value."""
    if not _is_i64_array(arr):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(p, "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def cpu_relax(typingctx: Any) -> Any:
    """The x86 spin-wait hint ``pause``."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(
            cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), []
        )
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def yield_cpu(typingctx: Any) -> Any:
    """sched_yield(2): let another runnable thread have this CPU."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.IntType(32), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "kernels_sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@jit()
def barrier(sync: Any, idx: int, target: int) -> None:
    """Arrive at the barrier counted in ``sync[idx]`` and wait until ``target`` arrivals
    (a counter that only grows: the g-th barrier of T threads waits for g * T)."""
    atomic_add(sync, idx, 1)
    wait_for(sync, idx, target)


@jit()
def wait_for(sync: Any, idx: int, target: int) -> None:
    """Wait until the counter ``sync[idx]`` reaches ``target`` (spinning briefly, then
    yielding the CPU, as ``barrier``): unlike a barrier, it waits for work done, never
    for a thread to arrive."""
    spins = 0
    while atomic_load(sync, idx) < target:
        if spins < SPINS:
            cpu_relax()
            spins += 1
        else:
            yield_cpu()


#: After its share of a call, a pool thread watches for the next call for this many
#: time-stamp counter ticks (~2-5 ms: the counter runs at the CPU's base clock) before it
#: sleeps, as OpenMP runtimes and OpenBLAS keep their threads spinning: on a VM a
#: sleeping thread's vCPU is descheduled, and waking it again took up to ~5 ms here
#: (Intel Xeon, KVM), about a 1024 SGEMM on two threads, so the call's first thread did
#: nearly all the work and two threads ran at 1.1x one (back-to-back calls, whose
#: threads never slept: 1.9x). The next call's own Python set-up takes ~0.4 ms.
SPIN_TICKS = 10_000_000
_posts = np.zeros(1, np.int64)  # _posts[0]: calls handed to the pool so far


@intrinsic
def ticks(typingctx: Any) -> Any:
    """The time-stamp counter (``llvm.readcyclecounter``: rdtsc on x86)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@jit()
def _watch(posts: Any, seen: int, span: int, polite: bool = False) -> bool:
    """Return once ``posts[0]`` is not ``seen``, or ``span`` ticks from now; whether it
    changed (nogil: the calling thread holds no lock meanwhile). A pool thread watches
    so for the next call to be posted. ``polite`` yields the CPU every 64 pauses: the
    caller waits so for its pool threads' ``finished`` flag, never asleep (woken from a
    sleep by a pool thread, it was often put on that thread's CPU, the waker's, where
    the pool thread then watched for the next call), letting a pool thread that shares
    its CPU run."""
    end = ticks() + span
    for _ in range(span // 64):  # a bound should the counter stand still
        if atomic_load(posts, 0) != seen:
            return True
        if ticks() > end:
            return False
        for _ in range(64):
            cpu_relax()
        if polite:
            yield_cpu()
    return atomic_load(posts, 0) != seen


@jit()
def _finish_and_watch(finished: Any, posts: Any, seen: int, span: int) -> bool:
    """Mark a share finished, then ``_watch`` for the next call: one nogil call, so the
    flag is raised only once the pool thread has let go of the GIL. Raised from Python
    before, the caller that saw it then waited for the GIL the pool thread still held,
    asleep, and was woken by that thread onto that thread's CPU (the waker's), where the
    pool thread went on watching for the next call: the next call's two threads then
    shared one CPU until the scheduler's tick (4 ms) moved one of them."""
    atomic_add(finished, 0, 1)
    return _watch(posts, seen, span)


def _hop_off(cpu: int) -> None:
    """Move the calling thread off ``cpu`` to another it may run on: narrow its affinity
    to the others (the kernel migrates it at once) and widen it again.

    A pool thread woken by its caller was often put on the caller's own CPU (the
    waker's: the scheduler does so when the other vCPU looks busy or descheduled),
    where it ran only when the caller gave way: 7.4 ms a call against 3.4 on two CPUs
    (DGEMM n=512, 2 threads, 2-vCPU Zen 4 KVM guest, 80 calls logged by sched_getcpu).
    With this and the caller's polite ``_watch``, GEMM n=512 on 2 threads after the
    benchmark's pause, each run in its own process, base and changed alternated, ratio
    to OpenBLAS in four rounds: SGEMM 0.61/0.80/0.80/0.84 against 0.45/0.46/0.86/0.47,
    DGEMM 0.65/0.74/0.90/0.89 against 0.52/0.59/0.71/0.62.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    try:  # a hint: a call never fails for it
        allowed = os.sched_getaffinity(0)
        if cpu in allowed and len(allowed) > 1:
            try:
                os.sched_setaffinity(0, allowed - {cpu})
            finally:
                os.sched_setaffinity(0, allowed)
    except OSError:
        pass


class _Share:
    """One pool thread's part of a call: its function, the CPU its caller ran on,
    whether it started or was dropped (``skip_late``), its error, and when it is done
    (``finished[0]``, which the caller spins on, then ``done``)."""

    __slots__ = ("args", "caller_cpu", "done", "dropped", "error", "finished", "fn", "lock",
                 "post", "started")  # fmt: skip

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], post: int,
                 caller_cpu: int) -> None:  # fmt: skip
        self.fn, self.args = fn, args
        self.post = post  # its call's number in ``_posts[0]``
        self.caller_cpu = caller_cpu
        self.finished = np.zeros(1, np.int64)
        self.lock = threading.Lock()
        self.started = self.dropped = False
        self.error: BaseException | None = None
        self.done = threading.Event()

    def drop(self) -> bool:
        """Drop it if no thread has started it (the caller then does not wait for it)."""
        with self.lock:
            self.dropped = not self.started
            return self.dropped

    def __call__(self) -> None:
        """On a pool thread: run it unless dropped, then watch for the next call. A
        dropped share still wakes its thread and keeps it watching: the thread that came
        too late for this call is awake for the next. A thread that finds itself on its
        caller's CPU first moves off it."""
        if _sched_getcpu() == self.caller_cpu:
            _hop_off(self.caller_cpu)
        with self.lock:
            self.started = not self.dropped
        if self.started:
            try:
                self.fn(*self.args)
            except BaseException as e:
                self.error = e
            finally:
                self.done.set()
        # Watched against its own call's number, not the count when the thread got here:
        # a thread that woke after the next call was posted returns at once to take its
        # share (the count then would have it watch, ~3 ms, with that share queued).
        if self.started:
            _finish_and_watch(self.finished, _posts, self.post, SPIN_TICKS)
        else:
            _watch(_posts, self.post, SPIN_TICKS)


_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size < workers:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kernels")
        _pool_size = workers
    return _pool


def run(
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], skip_late: bool = False
) -> None:
    """Run every ``fn(*args)`` at the same time, the first on the calling thread; return
    when all have returned (re-raising the first error).

    ``skip_late``: the calls share their work through a counter, so that the first can
    do it all; a call the pool has not started by the time the first returns is dropped
    rather than waited for (on a busy host a pool thread can wait milliseconds for a CPU).
    Never for calls that meet at a barrier: each of those must run.
    """
    if len(calls) == 1:
        fn, args = calls[0]
        fn(*args)
        return
    with _lock:
        pool = _get_pool(len(calls) - 1)
        post = int(_posts[0]) + 1
        cpu = _sched_getcpu()
        shares = [_Share(fn, args, post, cpu) for fn, args in calls[1:]]
        for share in shares:
            pool.submit(share)
        _posts[0] = post  # after the submissions: a watching pool thread finds its share
        fn, args = calls[0]
        error: BaseException | None = None
        try:
            fn(*args)
        except BaseException as e:  # the others must still be waited for
            error = e
        for share in shares:
            if skip_late and share.drop():
                continue
            _watch(share.finished, 0, SPIN_TICKS, True)  # then, if still running, asleep
            share.done.wait()
            error = error or share.error
        if error is not None:
            raise error
