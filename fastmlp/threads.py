"""Thread-count control. Counts change only inside ``thread_limit``, which restores the
previous settings on exit, whatever happens inside."""

from __future__ import annotations

import functools
import math
import os
import sys
from contextlib import ExitStack, contextmanager

from threadpoolctl import threadpool_info, threadpool_limits


def _affinity_count() -> int:
    """CPUs this process may be scheduled on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path):
    with open(path) as f:
        return f.read().split()


@functools.lru_cache(maxsize=1)
def cgroup_cpu_quota() -> float | None:
    """The CPU time this process's cgroup may use, in CPUs (a container's ``--cpus``), or
    None without a quota: cgroup v2's cpu.max, else v1's cfs quota and period. Read once
    per process (reading the files cost 25 us, more than predicting one row)."""
    try:
        quota, period = _read("/sys/fs/cgroup/cpu.max")[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")[0])
        period = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")[0])
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_count() -> int:
    """CPUs this process may use: those it may run on, capped by its cgroup's CPU quota
    (rounded up), as joblib counts them."""
    n = _affinity_count()
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return n


def _omp_num_threads_env() -> int | None:
    # OMP_NUM_THREADS may be a list (one count per nesting level): the first applies
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n > 0 else None


def _dask_worker_threads() -> int | None:
    """The thread count of the Dask worker running this code, if it runs in one."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except Exception:  # not in a worker (ValueError), or an incompatible version
        return None
    n = getattr(getattr(worker, "state", None), "nthreads", None) or getattr(
        worker, "nthreads", None)
    return int(n) if n else None


def _openmp_limit() -> int | None:
    """The smallest thread count of the OpenMP runtimes loaded (what a threadpoolctl
    limit, or joblib's limit on its workers' inner threads, sets)."""
    counts = [lib.num_threads for lib in _threadpool_controller().lib_controllers
              if lib.user_api == "openmp" and lib.num_threads]
    return min(counts) if counts else None


def default_threads() -> tuple[int, str]:
    """The thread count of a fit or predict with ``n_jobs=None``, and what set it: every
    CPU the process may use, or fewer when OMP_NUM_THREADS, a threadpoolctl limit on
    OpenMP, or the Dask worker it runs in says so."""
    candidates = [(cpu_count(), "the CPUs this process may use")]
    for n, reason in ((_omp_num_threads_env(), "OMP_NUM_THREADS"),
                      (_openmp_limit(), "a limit on OpenMP's threads (threadpoolctl)"),
                      (_dask_worker_threads(), "the Dask worker's nthreads")):
        if n is not None:
            candidates.append((n, reason))
    return min(candidates, key=lambda c: c[0])


def resolve_n_jobs(n_jobs) -> int | None:
    """None -> None (the libraries' defaults, unless default_threads is lower); -1 -> all
    CPUs; -2 -> all but one..."""
    if n_jobs is None:
        return None
    if n_jobs < 0:
        return max(1, cpu_count() + 1 + n_jobs)
    return int(n_jobs)


@contextmanager
def thread_limit(n_jobs, backend=None):
    """Limit BLAS (and the backend's own thread pool, if it has one) to ``n_jobs`` threads.
    With ``n_jobs=None`` the libraries keep their own counts, unless ``default_threads``
    is lower than the CPUs the process may run on (a quota, OMP_NUM_THREADS, a limit, a
    Dask worker): then that is the limit."""
    n = resolve_n_jobs(n_jobs)
    if n is None:
        n = default_threads()[0]
        if n >= _affinity_count():
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


def _threadpool_controller():
    """One ThreadpoolController for the process: a fresh one looks up every loaded
    library (milliseconds), a cached one costs microseconds."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextmanager
def one_blas_thread():
    """BLAS on the calling thread alone while the block runs (restored after): for the
    compiled backends, whose threads each call BLAS on their own block of a product
    (several BLAS threads per call would compete with them for the cores)."""
    with _threadpool_controller().limit(limits=1, user_api="blas"):
        yield


def blas_info() -> list[dict]:
    """The BLAS libraries loaded in this process, with their thread counts."""
    return [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                  "architecture", "filepath")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
