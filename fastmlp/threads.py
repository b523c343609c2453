"""Thread-count control. Counts change only inside ``thread_limit``, which restores the
previous settings on exit, whatever happens inside."""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager

from threadpoolctl import threadpool_info, threadpool_limits


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_n_jobs(n_jobs) -> int | None:
    """None -> None (leave the libraries' defaults); -1 -> all CPUs; -2 -> all but one..."""
    if n_jobs is None:
        return None
    if n_jobs < 0:
        return max(1, cpu_count() + 1 + n_jobs)
    return int(n_jobs)


@contextmanager
def thread_limit(n_jobs, backend=None):
    """Limit BLAS (and the backend's own thread pool, if it has one) to ``n_jobs`` threads."""
    n = resolve_n_jobs(n_jobs)
    if n is None:
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(threadpool_limits(limits=n))
        backend_limit = getattr(backend, "thread_limit", None)
        if backend_limit is not None:
            stack.enter_context(backend_limit(n))
        yield


@contextmanager
def serial_blas_between(backend):
    """BLAS on one thread while a compiled backend's kernels alternate with small BLAS
    calls of other code (SciPy's L-BFGS-B, between loss evaluations). BLAS threads left
    spinning after each call compete with the kernels' own threads for the cores: on 2
    cores a small L-BFGS fit took 0.76 s instead of 0.016 s. The NumPy backend computes
    with BLAS itself, so it keeps BLAS's threads."""
    from .backends import REFERENCE

    if backend.NAME == REFERENCE:
        yield
        return
    with one_blas_thread():
        yield


_controller = None


@contextmanager
def one_blas_thread():
    """BLAS on the calling thread alone while the block runs (restored after): for the
    compiled backends, whose threads each call BLAS on their own block of a product
    (several BLAS threads per call would compete with them for the cores). A cached
    controller makes this cost microseconds, not the milliseconds of a fresh look-up."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield


def blas_info() -> list[dict]:
    """The BLAS libraries loaded in this process, with their thread counts."""
    return [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                  "architecture", "filepath")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
