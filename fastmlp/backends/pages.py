"""Parameters on huge pages for prediction.

Predicting, the first layer reads the rows of W picked by each row's non-zero inputs: rows
of W at random, all over it. On 4 KB pages a 784-128 W spans 100 pages and a 784-1024 W
800, more than the first-level TLB holds (64 entries), so most of those reads wait for an
address translation as well. Whether an array lands on 2 MB pages was left to chance:
NumPy asks the kernel for huge pages only for arrays of 4 MB or more, and the allocator
reuses freed memory that was asked for before; so the same predict took 1.0x or 1.5-1.8x
the time from one process to the next (docs/performance.md). ``huge_page_copy`` makes it
certain where the kernel allows it: a copy of the parameters in memory advised for
transparent huge pages (Linux's madvise(MADV_HUGEPAGE)). The copy changes no value.
"""

from __future__ import annotations

import functools
import mmap

import numpy as np

HUGE_PAGE_BYTES = 2 * 2**20
# below this, W's 4 KB pages fit the first-level TLB and a copy gains nothing
HUGE_PAGE_MIN_BYTES = 256 * 2**10
# predicting fewer rows than this keeps the caller's array: a fresh huge page costs the
# kernel about 100 us to clear, a tenth of predicting 1,000 rows through 784-128-10
HUGE_PAGE_MIN_ROWS = 1024

_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


@functools.lru_cache(maxsize=1)
def huge_pages_available() -> bool:
    """Whether this system gives transparent huge pages to memory that asks for them
    (the setting reads "[always]" or "[madvise]"; not "[never]", and not a system
    without the setting or without madvise)."""
    if not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_PRIVATE"):
        return False
    try:
        with open(_THP_SETTING) as f:
            setting = f.read()
    except OSError:
        return False
    return "[always]" in setting or "[madvise]" in setting


def on_huge_pages(a: np.ndarray) -> bool:
    """Whether ``a`` is (a view at the start of) a huge_page_copy."""
    root = a
    while isinstance(root, np.ndarray):
        root = root.base
    return (isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap)
            and a.ctypes.data % HUGE_PAGE_BYTES == 0)


def huge_page_empty(n: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of ``n`` values of ``dtype`` starting on a 2 MB
    boundary, in anonymous memory advised for huge pages; a plain array where huge pages
    are not available. The memory is freed with the last reference to the array."""
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if not huge_pages_available() or nbytes == 0:
        return np.empty(n, dtype)
    rounded = -(-nbytes // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    # private, or the memory would be shared memory, whose huge pages a separate setting
    # (usually off) governs
    region = mmap.mmap(-1, rounded + HUGE_PAGE_BYTES,
                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(region, dtype=np.uint8)
    start = (-raw.ctypes.data) % HUGE_PAGE_BYTES
    try:
        region.madvise(mmap.MADV_HUGEPAGE, start, rounded)
    except OSError:
        return np.empty(n, dtype)
    return raw[start : start + nbytes].view(dtype)


def huge_page_copy(a: np.ndarray) -> np.ndarray:
    """A copy of the 1-D array ``a`` on huge pages (huge_page_empty); ``a`` itself where
    huge pages are not available, or where it is such a copy already."""
    if not huge_pages_available() or on_huge_pages(a):
        return a
    out = huge_page_empty(a.shape[0], a.dtype)
    out[:] = a
    return out


def predict_params(params: np.ndarray, n_rows: int) -> np.ndarray:
    """The parameters a prediction of ``n_rows`` rows reads: a huge-page copy when the
    model is large enough for its 4 KB pages to miss the TLB and the rows many enough to
    repay the copy, else ``params`` itself."""
    if n_rows >= HUGE_PAGE_MIN_ROWS and params.nbytes >= HUGE_PAGE_MIN_BYTES:
        return huge_page_copy(params)
    return params
