"""Thread-count control. Counts change only inside ``thread_limit``, which restores the
previous settings on exit, whatever happens inside."""

from __future__ import annotations

import functools
import math
import os
import random
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext

from threadpoolctl import threadpool_info


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
    per process (reading the files costs more than predicting one row)."""
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
        stack.enter_context(_threadpool_controller().limit(limits=n))
        backend_limit = getattr(backend, "thread_limit", None)
        if backend_limit is not None:
            stack.enter_context(backend_limit(n))
        yield


@contextmanager
def serial_blas_between(computes_with_blas=False):
    """BLAS on one thread while a compiled backend's kernels alternate with small BLAS
    calls of other code (SciPy's L-BFGS-B, between loss evaluations). BLAS threads left
    spinning after each call compete with the kernels' own threads for the cores, and a
    small L-BFGS fit took many times as long (docs/archive/performance-log.md). A backend
    that computes with BLAS itself (``computes_with_blas``, the NumPy reference) keeps
    BLAS's threads."""
    if computes_with_blas:
        yield
        return
    with one_blas_thread():
        yield


_controller = None
_controller_modules = -1


def _threadpool_controller():
    """One ThreadpoolController for the process, looked up again when modules have been
    imported since (a new extension module may bring a BLAS or OpenMP library of its
    own): a fresh one reads every loaded library from /proc/self/maps, which costs
    milliseconds; a cached one costs microseconds. ``thread_limit`` runs on every fit and
    predict with n_jobs set, where threadpoolctl's own threadpool_limits, which looks up
    afresh each time, took a large part of a 10,000-row predict."""
    global _controller, _controller_modules
    n_modules = len(sys.modules)
    if _controller is None or n_modules != _controller_modules:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
        _controller_modules = n_modules
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


class OtherProcesses:
    """How many cores other processes kept busy between two calls of ``cores``: the
    machine's busy CPU time (/proc/stat) less this process's, over the wall time."""

    def __init__(self):
        self._last = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        busy = (sum(fields[:8]) - idle) / hz
        own = os.times()
        return busy, own.user + own.system, time.monotonic()

    def cores(self) -> float:
        """Cores other processes used on average since the last call (0 if unknown)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[2] - last[2] <= 0:
            return 0.0
        others = (now[0] - last[0]) - (now[1] - last[1])
        return max(0.0, others / (now[2] - last[2]))


class AdaptiveTeam:
    """The thread count of each part of an epoch, chosen by measured speed, for fits
    with default threads (``n_jobs=None``) on a team of ``full`` threads.

    A team of several threads meets at every mini-batch. When another process takes a
    core, one of the team waits for the scheduler at each meeting, and the epoch runs
    many times slower than on one thread (docs/archive/performance-log.md, "Fits side by side"). So
    the epoch runs in parts, each timed, and now and then (after 1, 2, 4 ... PROBE_MAX
    parts, each wait drawn at random between that and twice it, so that fits started
    together do not look together) the team looks at the machine:

    - when other processes kept no more cores busy than the team leaves them (system
      CPU time from /proc/stat, less this process's own, since the last look; none
      known on systems without it), the full team runs, and nothing is probed;
    - when they did, and the full team is running, a part of half the usual length
      runs on one thread, a probe; unless the full team trained rows GAIN times as fast,
      one thread runs from then on. While others are busy the full team is not tried;
    - a part at under half the speed of the part before on as many threads looks at
      once, and the looks start again from one part apart.

    Parts last about PART_SECONDS (longer for large models, whose weights each call of
    train_epoch lays out and back: parts last 50 times that estimated cost). The first
    part is a few batches, and unless the last look found the machine quiet, parts grow
    from there at most doubling (so does the full team when it starts again), so a
    collapsed part costs little; alone, the calls cost a few per cent.

    A quiet machine does not make the full team the right one: when a mini-batch holds
    little work (a small dense network), the threads' meetings cost more than the second
    thread gives. So, after the first part, the team calibrates once: a part on one
    thread, then one as long on the full team; unless the full team trained rows
    SOLO_GAIN times as fast, a quiet machine gets one thread (``solo``) for the rest of
    the fit, and the other core stays free.

    Only for backends whose results do not depend on the thread count (cython by design;
    numba with its work in ``full`` blocks whatever the threads, see ``blocks``), so
    the choice changes only the time taken, never a bit of the model."""

    PART_SECONDS = 0.1
    FIRST_BATCHES = 4
    GAIN = 1.3
    PROBE_MAX = 64
    # the calibration's parts: about this long each, on one thread, then the full team
    CALIBRATION_SECONDS = 0.02
    # the full team must train this many times as fast as one thread to be kept
    SOLO_GAIN = 1.15
    # the estimated cost of one call of train_epoch beyond its batches: a fixed part, and
    # the work layout of the parameters, gradients and moments, there and back
    CALL_SECONDS = 3e-4
    CALL_SECONDS_PER_PARAM = 4e-9

    def __init__(self, full, backend, batch_size, n_params=0):
        self.full, self.backend, self.batch_size = full, backend, batch_size
        self.call_seconds = self.CALL_SECONDS + self.CALL_SECONDS_PER_PARAM * n_params
        self.part_seconds = max(self.PART_SECONDS, 50 * self.call_seconds)
        self.threads = full
        self.rate = {}  # threads -> rows/s of the latest part on that many
        self.wait, self.interval = 1, 1  # parts until the next look; its doubling
        self.rows = self.FIRST_BATCHES * batch_size
        self.probes = self.switches = 0
        self.quiet = False  # whether the last look found the other cores free
        # the calibration: None until measured, then whether one thread is the best team
        # on a quiet machine; the thread counts of its parts still to run, and their rows
        self.solo = None if full > 1 else True
        self._calibration, self._calibration_rows = [], 0
        self.parts = 0
        # the looks' timing only: never the model's generator
        self._jitter = random.Random()
        self._others = OtherProcesses()

    def blocks(self):
        """A context that fixes the backend's blocks of work at the full team's, for the
        whole fit (a no-op where the backend needs none)."""
        work_blocks = getattr(self.backend, "work_blocks", None)
        return work_blocks(self.full) if work_blocks is not None else nullcontext()

    def _quiet_team(self):
        """The team for a quiet machine: one thread when the calibration found it best."""
        return 1 if self.solo else self.full

    def next_part(self):
        """(threads, rows) of the next part."""
        if self.solo is None and self.parts >= 1:
            if not self._calibration:
                self._calibration = [1, self.full]
                rate = self.rate.get(self.full, 0.0)
                self._calibration_rows = max(self.batch_size, int(
                    rate * self.CALIBRATION_SECONDS) // self.batch_size * self.batch_size)
            return self._calibration[0], self._calibration_rows
        if self.wait > 0:
            return self.threads, self.rows
        self.wait = self._jitter.randint(self.interval, 2 * self.interval)
        self.interval = min(2 * self.interval, self.PROBE_MAX)
        self.quiet = self._others.cores() <= _affinity_count() - self.full + 0.5
        if self.quiet:
            # nobody else needs the cores: the calibrated team, without a probe
            if self.threads != self._quiet_team():
                self.threads = self._quiet_team()
                self.rows = self.FIRST_BATCHES * self.batch_size
                self.switches += 1
            return self.threads, self.rows
        if self.threads > 1:  # others are busy: is the full team still worth it?
            return 1, max(self.batch_size,
                          self.rows // (2 * self.batch_size) * self.batch_size)
        return self.threads, self.rows

    def limit(self, n):
        """The backend's threads limited to n while the part runs (BLAS is the backend's
        business: the compiled epochs hold it to one thread themselves)."""
        return self.backend.thread_limit(n)

    def record(self, threads, rows, seconds):
        """What the part that ran ``rows`` rows on ``threads`` threads took."""
        # the rate of the batches, without the call's own cost, so a short probe compares
        # with a long part
        rate = rows / max(seconds - self.call_seconds, 0.1 * seconds, 1e-9)
        self.parts += 1
        if self._calibration and self.solo is None:
            self.rate[self._calibration.pop(0)] = rate
            if not self._calibration:
                self.solo = self.rate[self.full] < self.SOLO_GAIN * self.rate[1]
                if self.solo and self.threads == self.full:
                    self.threads = 1
                    self.switches += 1
                self.rows = max(self.batch_size, min(
                    2 * self._calibration_rows,
                    int(self.rate[self.threads] * self.part_seconds))
                    // self.batch_size * self.batch_size)
            return
        before, self.rate[threads] = self.rate.get(threads), rate
        if threads != self.threads:  # a probe of one thread
            self.probes += 1
            if rate * self.GAIN > self.rate[self.threads]:
                self.threads = threads
                self.switches += 1
        elif before is not None and rate < 0.5 * before:
            # sharply slower than the part before on as many threads: look now, and
            # often again
            self.wait, self.interval, self.quiet = 0, 1, False
        else:
            self.wait -= 1
        target = int(self.rate[self.threads] * self.part_seconds)
        if not self.quiet:
            target = min(2 * self.rows, target)
        self.rows = max(self.batch_size, target // self.batch_size * self.batch_size)


def thread_invariant(backend) -> bool:
    """Whether ``backend``'s training gives the same bits at any thread count: by its own
    design (THREAD_INVARIANT), or with its work in a fixed number of blocks
    (``work_blocks``). The numpy backend's BLAS sums in an order that follows its
    threads."""
    return bool(getattr(backend, "THREAD_INVARIANT", False) or hasattr(backend, "work_blocks"))


def batch_work(layer_sizes, batch_size, density=1.0) -> float:
    """Multiply-adds of one mini-batch: the forward product and the two backward ones of
    every layer, the first layer's at the density of its input (the share of non-zero
    inputs, which it alone reads), and ten per parameter for the optimizer's step."""
    sizes = [int(s) for s in layer_sizes]
    products = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    if products:
        products[0] *= density
    n_params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    return 3.0 * batch_size * sum(products) + 10.0 * n_params


def too_small_to_split(backend, work) -> bool:
    """Whether ``backend`` runs a mini-batch of ``work`` multiply-adds (batch_work)
    faster as one block of work on one thread than split between threads: a backend
    that says so defines SMALL_BATCH_WORK, the work below which it does."""
    return work is not None and work < getattr(backend, "SMALL_BATCH_WORK", 0)


def epoch_threads(n_jobs, backend, work=None):
    """The ``n_jobs`` a fit's mini-batch epochs run with: as given, except that with the
    default (None) a backend whose results follow its thread count (not
    thread_invariant) trains on one thread. So a default fit on the numpy backend gives
    the same model on any machine and under any load, and two of them side by side do
    not wait on each other's threads (on 2 cores its BLAS team took several times as
    long as one thread each; alone, its second thread bought little:
    docs/archive/performance-log.md).
    A default fit whose mini-batches hold too little work to split (``work``, see
    too_small_to_split) trains on one thread too."""
    if n_jobs is None and (not thread_invariant(backend) or too_small_to_split(backend, work)):
        return 1
    return n_jobs


def adaptive_team(n_jobs, backend, batch_size, n_params=0, work=None):
    """An AdaptiveTeam for a fit with ``n_jobs`` on ``backend``, or None: only default
    threads (None) on more than one thread adapt (an explicit count is kept as asked),
    and only on a backend whose results do not depend on its thread count
    (thread_invariant; the numpy backend trains on one thread by default instead:
    epoch_threads), and whose mini-batches of ``work`` are worth splitting."""
    if n_jobs is not None or not hasattr(backend, "thread_limit") or not thread_invariant(
            backend) or too_small_to_split(backend, work):
        return None
    full = default_threads()[0]
    return AdaptiveTeam(full, backend, batch_size, n_params) if full > 1 else None
