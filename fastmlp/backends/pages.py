"""Parameters on huge pages for prediction.

Predicting, the first layer reads the rows of W picked by each row's non-zero inputs: rows
of W at random, all over it. On 4 KB pages a 784-128 W spans 100 pages and a 784-1024 W
800, more than the first-level TLB holds (64 entries), so most of those reads wait for an
address translation as well. Whether an array lands on 2 MB pages was left to chance:
NumPy asks the kernel for huge pages only for arrays of 4 MB or more, and the allocator
reuses freed memory that was asked for before; so the same predict took up to twice the
time from one process to the next (docs/archive/performance-log.md). ``huge_page_copy`` makes it
certain where the kernel allows it: a copy of the parameters in memory advised for
transparent huge pages (Linux's madvise(MADV_HUGEPAGE)). The copy changes no value.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys

import numpy as np

HUGE_PAGE_BYTES = 2 * 2**20
# below this, W's 4 KB pages fit the first-level TLB and a copy gains nothing
HUGE_PAGE_MIN_BYTES = 256 * 2**10
# predicting fewer rows than this keeps the caller's array: a fresh huge page costs the
# kernel about 100 us to clear, a tenth of predicting 1,000 rows through 784-128-10
HUGE_PAGE_MIN_ROWS = 1024

# NumPy itself asks for huge pages from this size up; below it small_page_empty is
# np.empty
SMALL_PAGE_MIN_BYTES = 4 * 2**20

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


def small_page_empty(n: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of ``n`` values of ``dtype`` whose pages are advised
    against huge pages (Linux's madvise(MADV_NOHUGEPAGE)) before anything touches them;
    a plain array where that advice is not available or the array is small. It is a
    NumPy allocation still (freed as any, counted by tracemalloc).

    For arrays a fit writes once and then reads a row's stretch at a time (the compressed
    input), where the TLB's reach matters little and the first touch a lot: NumPy asks
    for huge pages from 4 MB up, and a fresh process's huge pages are often memory the
    machine (or, under virtualisation, its host) has not backed yet, which faulted in
    several times slower than small pages the system had just freed
    (docs/archive/performance-log.md)."""
    dtype = np.dtype(dtype)
    a = np.empty(n, dtype)
    if a.nbytes >= SMALL_PAGE_MIN_BYTES:
        _advise_small_pages(a)
    return a


def _advise_small_pages(a: np.ndarray) -> None:
    """madvise(MADV_NOHUGEPAGE) over the whole pages inside ``a``; nothing where the
    system has no such call. Advice only: a failure changes no value."""
    madvise = _madvise()
    if madvise is None:
        return
    page = mmap.PAGESIZE
    start = -(-a.ctypes.data // page) * page
    stop = (a.ctypes.data + a.nbytes) // page * page
    if stop > start:
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start),
                mmap.MADV_NOHUGEPAGE)


@functools.lru_cache(maxsize=1)
def _madvise():
    """The C library's madvise, or None (not Linux, no MADV_NOHUGEPAGE)."""
    if not hasattr(mmap, "MADV_NOHUGEPAGE") or not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise


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
