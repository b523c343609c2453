"""The default thread count (n_jobs=None) respects what limits the process: its CPU
affinity and cgroup quota, OMP_NUM_THREADS, a threadpoolctl limit on OpenMP and the Dask
worker it runs in; an explicit n_jobs wins over all of them."""

import sys
import types
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, FastMLPRegressor, threads
from fastmlp.backends import get_backend
from fastmlp.cli import main

several_cpus = pytest.mark.skipif(threads.cpu_count() < 2, reason="needs 2 CPUs or more")


def _backend_threads(name):
    """The thread count the backend's kernels would use now."""
    if name == "numba":
        import numba
        return numba.get_num_threads()
    if name == "cython":
        return get_backend("cython").max_threads()
    return min(info["num_threads"] for info in threads.blas_info())


def _threads_in_fit(monkeypatch, backend_name, **kw):
    """The most threads the backend ran train_epoch on during a two-epoch fit. A
    default-thread fit on a busy machine may run its epochs in timed parts, some on
    fewer threads (threads.AdaptiveTeam), so the calls are at least one an epoch."""
    backend = get_backend(backend_name)
    real = backend.train_epoch
    seen = []

    def recording(*args, **kwargs):
        seen.append(_backend_threads(backend_name))
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "train_epoch", recording)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        FastMLP(hidden_layer_sizes=(8,), max_iter=2, backend=backend_name, **kw).fit(X, y)
    assert len(seen) >= 2
    return max(seen)


@several_cpus
def test_omp_num_threads_sets_the_default(monkeypatch, backend_name):
    before = _backend_threads(backend_name)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.default_threads() == (1, "OMP_NUM_THREADS")
    assert _threads_in_fit(monkeypatch, backend_name) == 1
    assert _backend_threads(backend_name) == before  # restored after the fit
    # an explicit n_jobs wins
    assert _threads_in_fit(monkeypatch, backend_name, n_jobs=2) == 2


@pytest.mark.parametrize("value, expected", [("1,1", 1), ("abc", None), ("0", None),
                                             ("", None), (" 3 ", 3)])
def test_omp_num_threads_is_read_as_openmp_reads_it(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert threads._omp_num_threads_env() == expected


def test_a_cgroup_quota_caps_the_cpu_count(monkeypatch):
    files = {}

    def fake_read(path):
        if path not in files:
            raise OSError(path)
        return files[path].split()

    monkeypatch.setattr(threads, "_read", fake_read)
    monkeypatch.setattr(threads, "_affinity_count", lambda: 8)
    # the quota is read once per process: each change of the files below is read afresh
    real_read = threads.cgroup_cpu_quota.__wrapped__

    def quota():
        return real_read()

    monkeypatch.setattr(threads, "cgroup_cpu_quota", quota)
    assert threads.cgroup_cpu_quota() is None and threads.cpu_count() == 8
    files["/sys/fs/cgroup/cpu.max"] = "max 100000"
    assert threads.cgroup_cpu_quota() is None
    files["/sys/fs/cgroup/cpu.max"] = "150000 100000"
    assert threads.cgroup_cpu_quota() == 1.5
    assert threads.cpu_count() == 2  # rounded up
    assert threads.resolve_n_jobs(-1) == 2 and threads.resolve_n_jobs(-2) == 1
    assert threads.default_threads()[0] <= 2
    # cgroup v1
    del files["/sys/fs/cgroup/cpu.max"]
    files["/sys/fs/cgroup/cpu/cpu.cfs_quota_us"] = "50000"
    files["/sys/fs/cgroup/cpu/cpu.cfs_period_us"] = "100000"
    assert threads.cgroup_cpu_quota() == 0.5 and threads.cpu_count() == 1
    files["/sys/fs/cgroup/cpu/cpu.cfs_quota_us"] = "-1"
    assert threads.cgroup_cpu_quota() is None


@several_cpus
def test_a_threadpoolctl_limit_on_openmp_sets_the_default(monkeypatch, compiled_backend):
    from threadpoolctl import threadpool_limits

    if threads._openmp_limit() is None:
        pytest.skip("no OpenMP runtime loaded")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = threads.default_threads()
    with threadpool_limits(limits=1, user_api="openmp"):
        assert threads.default_threads() == (1, "a limit on OpenMP's threads (threadpoolctl)")
        assert _threads_in_fit(monkeypatch, compiled_backend.NAME) == 1
    assert threads.default_threads() == before


@several_cpus
def test_default_numpy_epochs_run_on_one_thread_and_give_its_bits(monkeypatch, raw_mnist):
    # BLAS sums in an order that follows its threads, so the numpy backend's default
    # epochs take one thread: its bits then follow neither the machine nor its load
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads()[0] >= 2
    assert _threads_in_fit(monkeypatch, "numpy") == 1
    assert _threads_in_fit(monkeypatch, "numpy", n_jobs=2) == 2  # as asked
    # thread-invariant: the full team, where a mini-batch holds enough work to split
    monkeypatch.setattr(get_backend("numba"), "SMALL_BATCH_WORK", 0)
    assert _threads_in_fit(monkeypatch, "numba") >= 2
    assert threads.epoch_threads(None, get_backend("numpy")) == 1
    assert threads.epoch_threads(2, get_backend("numpy")) == 2
    assert threads.epoch_threads(None, get_backend("numba")) is None
    monkeypatch.undo()
    (X, y), _ = raw_mnist
    kw = dict(hidden_layer_sizes=(256, 256), batch_size=128, max_iter=1, random_state=0,
              backend="numpy", input_scale=1 / 255)
    fits = {}
    for n_jobs in (None, 1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[n_jobs] = FastMLP(**kw, n_jobs=n_jobs).fit(X[:3000], y[:3000])._params
    np.testing.assert_array_equal(fits[None], fits[1])
    np.testing.assert_allclose(fits[2], fits[1], atol=1e-5)


def test_work_too_small_to_split_trains_on_one_thread(monkeypatch):
    # numba's stages are parallel regions whose meetings cost more than a second thread
    # gives when a mini-batch holds little work (a tiny dense network)
    numba = get_backend("numba")
    small = threads.batch_work([40, 16, 16, 1], 64)
    large = threads.batch_work([40, 64, 64, 1], 128)
    assert small == 3 * 64 * (40 * 16 + 16 * 16 + 16) + 10 * (40 * 16 + 16 + 16 * 16 + 16
                                                                + 16 + 1)
    assert threads.batch_work([784, 128, 10], 64, density=0.25) == (
        3 * 64 * (0.25 * 784 * 128 + 1280) + 10 * (784 * 128 + 128 + 1290))
    assert small < numba.SMALL_BATCH_WORK < large
    assert threads.epoch_threads(None, numba, small) == 1
    assert threads.epoch_threads(None, numba, large) is None
    assert threads.epoch_threads(2, numba, small) == 2  # an explicit count as asked
    monkeypatch.setattr(threads, "default_threads", lambda: (2, "test"))
    assert threads.adaptive_team(None, numba, 64, work=small) is None
    assert isinstance(threads.adaptive_team(None, numba, 128, work=large),
                      threads.AdaptiveTeam)
    monkeypatch.undo()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _threads_in_fit(monkeypatch, "numba") == 1  # a 6-8-2 network
    # and the model is the one of n_jobs=1
    X = np.random.default_rng(1).random((500, 40)).astype(np.float32)
    y = X[:, 0] + X[:, 1]
    kw = dict(hidden_layer_sizes=(16, 16), batch_size=64, max_iter=2, random_state=0,
              backend="numba")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        default = FastMLPRegressor(**kw).fit(X, y)
        one = FastMLPRegressor(**kw, n_jobs=1).fit(X, y)
    np.testing.assert_array_equal(default._params, one._params)


def test_a_dask_worker_sets_the_default(monkeypatch):
    fake = types.ModuleType("distributed")
    worker = types.SimpleNamespace(state=types.SimpleNamespace(nthreads=1))
    fake.get_worker = lambda: worker
    monkeypatch.setitem(sys.modules, "distributed", fake)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads() == (1, "the Dask worker's nthreads")

    def not_in_a_worker():
        raise ValueError("No worker found")

    fake.get_worker = not_in_a_worker
    assert threads._dask_worker_threads() is None


def test_info_prints_the_default_and_its_reason(monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["info"]) == 0
    assert "default threads (n_jobs=None): 1, set by OMP_NUM_THREADS" in capsys.readouterr().out
