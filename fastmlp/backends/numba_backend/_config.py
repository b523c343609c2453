"""The Numba flags, in one place.

- parallel: prange loops run on Numba's thread pool.
- fastmath: only "contract", which lets LLVM fuse a multiply and an add into one FMA.
  "reassoc" (reordering sums) was measured to make freshly compiled and cache-loaded code
  sum in different orders, so the same seed gave different weights in a new process; the
  kernels avoid reductions in hot loops instead (sums of rows), and the few dot products
  keep eight partial sums in a fixed order. "nnan"/"ninf" stay off: with them LLVM may
  assume no NaN or inf exists and delete the checks that detect a diverging model.
- error_model "numpy": a float division by zero gives inf/nan as in NumPy instead of
  raising; Python's check before every division otherwise stops LLVM from vectorising
  any loop that divides (measured: the Adam update ran 6x slower with it).
- cache: compiled machine code is written next to the module (in __pycache__) or under
  NUMBA_CACHE_DIR, so a new process loads it instead of compiling again.
- threading layer: per-mini-batch parallel regions are only affordable where a launch
  costs about a microsecond (OpenMP, TBB), not ~100 us (workqueue), so OpenMP is preferred.
"""

import os

import numba

PARALLEL = True
FASTMATH = {"contract"}
CACHE = True
ERROR_MODEL = "numpy"

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
