"""The Numba flags and decorators, in one place.

- parallel: prange loops run on Numba's thread pool.
- fastmath: only "contract", which lets LLVM fuse a multiply and an add into one FMA.
  "reassoc" (reordering sums) made freshly compiled and cache-loaded code sum in
  different orders, so the same seed gave different weights in a new process; the
  kernels avoid reductions in hot loops instead (sums of rows), and their dot products
  keep one partial sum per lane of a register panel, added pairwise in a fixed order.
  "nnan"/"ninf" stay off: with them LLVM may assume no NaN or inf exists and delete the
  checks that detect a diverging model.
- error_model "numpy": a float division by zero gives inf/nan as in NumPy instead of
  raising; Python's check before every division otherwise stops LLVM from vectorising
  any loop that divides (the Adam update, docs/archive/performance-log.md).
- cache: compiled machine code is written to the user's cache folder (see _cache.py and
  backends/jit_cache.py), so a new process loads it instead of compiling again.
- threading layer: per-mini-batch parallel regions are only affordable where a launch
  costs about a microsecond (OpenMP, TBB), not ~100 us (workqueue), so OpenMP is preferred.

Decorators: ``jit`` for serial kernels, ``pjit`` for kernels with prange loops, and
``inline`` for the small helpers called in inner loops, which Numba inlines into their
callers: as separate functions every call costs a call plus atomic reference-count
updates on each array view, which in the inner loops cost more than the arithmetic (and
the atomics contend between threads). Inlining is also what compiling costs most, so
helpers called once per block of work (not per row or per element) are plain ``jit``
functions: an epoch then compiles in about half the time, and runs as fast.
``inline_always`` is for what must be inlined to be correct (a stack buffer that belongs
to its caller's frame).
"""

import os

import numba
import numpy as np

from ._cache import install as _install_cache_locator

# before any decorator below runs: Numba picks a function's cache place when it is
# decorated
_install_cache_locator()

PARALLEL = True
FASTMATH = {"contract"}
CACHE = True
ERROR_MODEL = "numpy"

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

FLAGS = dict(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, nogil=True)
jit = numba.njit(**FLAGS)
pjit = numba.njit(**FLAGS, parallel=PARALLEL)
inline = numba.njit(**FLAGS, inline="always")
inline_always = inline

# The kernels work on flat 1-D arrays with unsigned (uint64) offsets, and create no array
# views inside their parallel loops: a signed index makes Numba emit a wrap-around check
# that stops vectorisation, and every view inside a prange body costs atomic
# reference-count updates on the parent array, which the two threads then fight over.
# U(x) converts to uint64; never mix it with signed integers in index arithmetic (Numba
# would promote the sum to float64).
U = np.uint64

# A block of units handed to one thread starts on a multiple of this many elements (64
# bytes of float32), so no cache line is written by two threads.
ALIGN = 16


def read_only(a):
    """A read-only view of ``a``. Numba compiles a kernel again for read-only arrays (a
    type of their own); the kernels that read the user's X always get a read-only view,
    so writable and read-only X (a joblib memory map, say) share one compiled kernel."""
    view = a.view()
    view.flags.writeable = False
    return view
