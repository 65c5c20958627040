"""Launch shapes of the GPU kernels (no CUDA import: the CLI and tests read them freely)."""

from __future__ import annotations

# Register tile per thread, threads per block (x, y), K slice: 64 x 64 tiles of C per block.
RM, RN = 4, 4
TX, TY = 16, 16
BK = 16
BM, BN = TY * RM, TX * RN
TRIAD_THREADS = 256
PROBE_THREADS = 256
PROBE_CHAINS = 8
PROBE_B = 2.0**-20  # iters * PROBE_B is exact in float32 and float64: the sums are checked
