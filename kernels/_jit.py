"""JIT policy: the one place that decides how every kernel is compiled, cached and threaded.

Why each choice:

* SLP vectorization on. Numba switched LLVM's SLP vectorizer off by default (numba PR #8852)
  and straight-line code such as the FFT butterflies then stays scalar. The flag is read
  by numba's pass builder each time it compiles, and ``reload_config`` re-reads it from the
  environment whenever any ``NUMBA_*`` variable changes, so it is set in both places, here,
  before any kernel module defines a jitted function. Importing ``kernels`` therefore
  always imports this module first.
* A cache keyed on the policy. Numba's cache key ignores the optimisation flags
  (numba #10821) and only hashes the function's own bytecode, not the helpers it calls in
  other modules, so a cache built without SLP, or before a helper changed, would be
  silently reused. ``_PolicyCache`` adds the policy flags and a digest of this package's
  sources to the key.
* ``error_model="numpy"``: no Python-style ZeroDivision checks in hot loops.
* ``fastmath={"contract"}`` only: FMA contraction is wanted; ``reassoc`` is not (it makes
  LLVM vectorize reductions along k with gathers), nor ``nnan``/``ninf`` (a broken node
  must be able to produce a NaN residual).
* Threads are passed to the kernels as arguments: a function that calls
  ``get_num_threads()`` inside cannot be cached.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

os.environ["NUMBA_SLP_VECTORIZE"] = "1"
os.environ.setdefault("NUMBA_OPT", "3")

# The flags above must be set before numba reads them.
import numba
from numba.core import config
from numba.core.caching import FunctionCache

config.SLP_VECTORIZE = 1

F = TypeVar("F", bound=Callable[..., Any])

FASTMATH = frozenset({"contract"})
OPTIONS: dict[str, Any] = {
    "nogil": True,
    "error_model": "numpy",
    "boundscheck": False,
    "fastmath": set(FASTMATH),
}


def _source_digest() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(here.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


SOURCE_DIGEST = _source_digest()


def policy_tag() -> tuple[Any, ...]:
    """The flags that change generated code but that numba's cache key leaves out."""
    return (
        ("slp", int(config.SLP_VECTORIZE)),
        ("loop", int(config.LOOP_VECTORIZE)),
        ("opt", int(config.OPT)),
        ("fastmath", tuple(sorted(FASTMATH))),
        ("src", SOURCE_DIGEST),
    )


class _PolicyCache(FunctionCache):  # type: ignore[misc]
    """Numba's function cache with the policy tag added to the index key."""

    def _index_key(self, sig: Any, codegen: Any) -> tuple[Any, ...]:
        return (*super()._index_key(sig, codegen), policy_tag())


def slp_enabled() -> bool:
    return bool(config.SLP_VECTORIZE)


def jit(*, parallel: bool = False) -> Callable[[F], F]:
    """Compile a kernel core under the policy: nopython, cached with the policy key."""

    def wrap(fn: F) -> F:
        disp = numba.njit(cache=False, parallel=parallel, **OPTIONS)(fn)
        # numba's own ``enable_caching`` would install a plain FunctionCache.
        disp._cache = _PolicyCache(fn)
        return disp  # type: ignore[no-any-return]

    return wrap


def max_threads() -> int:
    return int(config.NUMBA_NUM_THREADS)


def use_threads(threads: int | None) -> int:
    """Set numba's thread count for the calling thread and return it (None: all)."""
    limit = max_threads()
    n = limit if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = min(n, limit)
    numba.set_num_threads(n)
    return n
