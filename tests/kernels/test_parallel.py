"""The threads of the GEMM and FFT cores: the pool, the atomic counter and the barrier,
and how GEMM splits rows among threads."""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
import pytest

from kernels import _parallel
from kernels._jit import OPTIONS, jit
from kernels._parallel import atomic_add, atomic_load, barrier, run, ticks
from kernels.matmul import _chunk


@jit()
def _count(sync: np.ndarray, out: np.ndarray, t: int, threads: int, rounds: int) -> None:
    """Each round: take tickets from sync[1 + r] until they run out, then meet."""
    for r in range(rounds):
        i = atomic_add(sync, 1 + r, 1)
        while i < 1000:
            out[r * 1000 + i] += t + 1  # each ticket is taken exactly once
            i = atomic_add(sync, 1 + r, 1)
        barrier(sync, 0, (r + 1) * threads)
        out[rounds * 1000 + r * threads + t] = atomic_load(sync, 0)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_counter_and_barrier(threads: int) -> None:
    rounds = 5
    sync = np.zeros(1 + rounds, np.int64)
    out = np.zeros(rounds * 1000 + rounds * threads, np.int64)
    run([(_count, (sync, out, t, threads, rounds)) for t in range(threads)])
    assert np.all(out[: rounds * 1000] >= 1) and np.all(out[: rounds * 1000] <= threads)
    # after the r-th barrier every thread saw at least r * threads arrivals
    seen = out[rounds * 1000 :].reshape(rounds, threads)
    assert np.all(seen >= (np.arange(1, rounds + 1) * threads)[:, None])
    assert sync[0] == rounds * threads


def test_run_waits_for_all_and_reraises() -> None:
    done: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        with lock:
            done.append(i)
        if i == 2:
            raise RuntimeError("boom 2")

    with pytest.raises(RuntimeError, match="boom 2"):
        run([(work, (i,)) for i in range(4)])
    assert sorted(done) == [0, 1, 2, 3]
    run([(work, (0,))])  # one call: on this thread, no pool
    assert _parallel._lock.acquire(blocking=False)  # released after an error
    _parallel._lock.release()


def test_run_drops_a_call_the_pool_has_not_started() -> None:
    """skip_late: the first call did the shared work; one still queued is not waited for."""
    hold = threading.Event()
    ran: list[str] = []
    pool = _parallel._get_pool(1)
    blockers = [pool.submit(hold.wait, 30) for _ in range(_parallel._pool_size)]  # all busy
    try:
        run([(ran.append, ("first",)), (ran.append, ("late",))], skip_late=True)
        assert ran == ["first"]
    finally:
        hold.set()
        for b in blockers:
            b.result()
    run([(ran.append, ("a",)), (ran.append, ("b",))])  # without it, every call runs
    assert sorted(ran) == ["a", "b", "first"]


@pytest.mark.parametrize(
    ("m", "mc", "mr", "threads"),
    [(1024, 168, 6, 2), (2048, 168, 6, 2), (1024, 336, 6, 2), (1, 168, 6, 1), (100, 168, 6, 1),
     (1000, 96, 6, 16), (7, 12, 6, 2)],
)  # fmt: skip
def test_row_chunks(m: int, mc: int, mr: int, threads: int) -> None:
    chunk = _chunk(m, mc, mr, threads)
    n = -(-m // chunk)
    assert chunk % mr == 0 and chunk <= max(mc, mr)
    assert n % threads == 0  # every thread gets as many chunks


@jit()
def _add_five(sync: np.ndarray) -> None:
    for _ in range(5):
        atomic_add(sync, 0, 1)


def test_wait_for_waits_for_work_done() -> None:
    """wait_for returns once the counter reaches the target, whoever adds the last unit."""
    from kernels._parallel import wait_for

    sync = np.zeros(2, np.int64)
    run([(wait_for, (sync, 0, 5)), (_add_five, (sync,))])
    assert sync[0] == 5
    wait_for(sync, 1, 0)  # already there: returns at once


@jit()
def _ticks() -> int:
    return ticks()


def test_a_pool_thread_watches_for_the_next_call_then_sleeps() -> None:
    """After its share a pool thread spins (``_watch``) until the next call is posted, or
    until its span of ticks is over; calls made while it watches, or after it slept,
    all run."""
    import time

    from kernels._parallel import _watch

    posts = np.zeros(1, np.int64)
    started = time.perf_counter()
    _watch(posts, 1, 1 << 40)  # a call was posted since: returns at once
    assert time.perf_counter() - started < 0.5
    t0 = _ticks()
    _watch(posts, 0, 2_000_000)  # nothing posted: returns when the span is over
    assert _ticks() - t0 >= 2_000_000
    out: list[int] = []
    for i in range(50):  # the pool thread is watching for most of these, asleep for the last
        if i == 49:
            time.sleep(0.05)
        run([(out.append, (i,)), (out.append, (1000 + i,))])
    assert sorted(out) == sorted([*range(50), *range(1000, 1050)])


def test_a_late_thread_does_not_watch_past_a_call_already_posted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool thread that wakes for a share its call dropped, after the next call was
    posted, returns at once to take that call's share: it watches against its own
    call's number (against the count it found, it watched with the next share queued)."""
    import time

    monkeypatch.setattr(_parallel, "SPIN_TICKS", 1 << 33)  # a watch: ~2-8 s
    with _parallel._lock:  # no run() meanwhile
        post = int(_parallel._posts[0]) + 1
        share = _parallel._Share(print, ("never",), post, -1)
        _parallel._posts[0] = post
        assert share.drop()  # its call finished without it
        _parallel._posts[0] = post + 1  # ... and the next call was posted
        started = time.perf_counter()
        share()  # the thread gets to it now: back at once
        assert time.perf_counter() - started < 1.0
    assert not share.started and not share.done.is_set()
    out: list[int] = []
    run([(out.append, (1,)), (out.append, (2,))])
    assert sorted(out) == [1, 2]


def test_a_share_is_marked_finished_last_from_compiled_code() -> None:
    """The flag the caller spins on is raised after everything the pool thread does
    holding the GIL (``done`` set, the error kept), inside the nogil call that then
    watches for the next call: a caller that saw it while the pool thread still held
    the GIL waited for it asleep and was woken onto the pool thread's CPU, where both
    threads then shared one CPU for the next call (GEMM n=512 on 2 threads: a third of
    the calls at 31-55 GF/s against 70-85, 2-vCPU Zen 4 KVM guest)."""
    seen: list[int] = []

    class Done:
        def set(self) -> None:
            seen.append(int(share.finished[0]))

    with _parallel._lock:  # no run() meanwhile
        post = int(_parallel._posts[0]) + 1
        share = _parallel._Share(lambda: None, (), post, -1)
        share.done = Done()  # type: ignore[assignment]
        _parallel._posts[0] = post + 1  # the next call is posted: its watch returns at once
        share()
    assert seen == [0]  # not yet raised when done was set
    assert share.finished[0] == 1
    assert isinstance(_parallel._finish_and_watch, numba.core.registry.CPUDispatcher)
    assert _parallel._finish_and_watch.targetoptions["nogil"]


def test_the_callers_wait_yields_the_cpu_as_it_spins() -> None:
    """A pool thread stacked on the caller's CPU gets it while the caller waits."""
    from kernels._parallel import _watch

    fresh = numba.njit(**OPTIONS)(_watch.py_func)
    sig = (numba.int64[::1], numba.int64, numba.int64, numba.boolean)
    fresh.compile(sig)  # uncached: numba inspects no code it loaded from its cache
    assert "kernels_sched_yield" in fresh.inspect_llvm(sig)


def test_the_callers_wait_spins_until_the_share_is_finished() -> None:
    from kernels._parallel import _watch

    flag = np.zeros(1, np.int64)
    assert not _watch(flag, 0, 1_000_000, True)  # never set: gives up when the span is over
    flag[0] = 1
    assert _watch(flag, 0, 1 << 40, True)  # set: returns at once


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


@pytest.mark.skipif(_cpus() < 2, reason="needs two CPUs to move between")
def test_hop_off_moves_the_thread_and_keeps_its_affinity() -> None:
    allowed = os.sched_getaffinity(0)
    here = _parallel._sched_getcpu()
    _parallel._hop_off(here)
    assert _parallel._sched_getcpu() != here
    assert os.sched_getaffinity(0) == allowed


@pytest.mark.skipif(_cpus() < 2, reason="needs two CPUs to move between")
def test_a_share_that_starts_on_its_callers_cpu_runs_on_another() -> None:
    """A pool thread the scheduler put on its caller's CPU moves off it before its share
    (were it to stay, it would run only when the caller gave way)."""
    seen: dict[str, int] = {}

    def pool_thread() -> None:
        here = _parallel._sched_getcpu()
        seen["caller"] = here  # as if the caller had run here when it posted the call
        share = _parallel._Share(lambda: seen.update(ran_on=_parallel._sched_getcpu()), (),
                                 -1, here)  # fmt: skip
        share()  # its call number is not the posted one's: no watch after

    t = threading.Thread(target=pool_thread)
    t.start()
    t.join()
    assert seen["ran_on"] != seen["caller"]
