"""FFT plans: a transform bound once to its input and output arrays, then called repeatedly.

``fft()`` checks its arguments, looks up its tables, workspace and compiled entry point
(remembered per thread for short 1-D inputs) and allocates its output on every call:
1-2 us in all (Zen 4), about a tenth of a 2^12-point transform. A plan does that once, as
FFTW's plans and pyFFTW's builder objects do, so that a call costs what calling the
compiled core costs (~0.3 us). The arrays stay bound: each call transforms what the input
array holds then, into the output array.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from kernels.fourier import _NO_SYNC, _REAL, PARALLEL_MIN, _rows_entry, aligned_empty, fft, plan


class FFTPlan:
    """``fft(x, inverse=inverse, threads=threads, out=out)`` bound to ``x`` and ``out``.

    ``out`` must be C-contiguous with x's shape and dtype (None: a new 64-byte aligned
    array, ``.out``).
    A plan owns its workspace, so plans may run on different threads at once; one plan
    must not be called from two threads at a time.
    """

    def __init__(
        self,
        x: np.ndarray[Any, Any],
        out: np.ndarray[Any, Any] | None = None,
        *,
        inverse: bool = False,
        threads: int | None = 1,
    ) -> None:
        if not isinstance(x, np.ndarray):
            raise TypeError("an FFT plan binds a numpy array")
        if not x.dtype.isnative:
            raise TypeError(f"an FFT plan binds native-endian arrays, not {x.dtype.str}")
        if out is None:  # aligned, as fft() allocates it
            out = aligned_empty(x.size, x.dtype).reshape(x.shape)
        fft(x, inverse=inverse, threads=threads, out=out)  # every check fft() makes, once
        self.x = x
        self.out = out
        one_thread = threads == 1 or out.size < PARALLEL_MIN
        if out.size == 0 or not one_thread or x.ndim != 1 or not x.flags.c_contiguous:
            # threads, batches and strided input: fft() itself (its overhead is small beside)
            self._entry: Any = partial(fft, x, inverse=inverse, threads=threads, out=out)
            self._args: tuple[Any, ...] = ()
            return
        real = _REAL[x.dtype.char]
        p = plan(x.shape[-1], real)
        work = aligned_empty(p.work1, real)
        self._args = (x, out, 1, bool(inverse), p.fb, p.meta, work, _NO_SYNC, 1)
        self._entry = _rows_entry(self._args)

    def __call__(self) -> np.ndarray[Any, Any]:
        self._entry(*self._args)
        return self.out
