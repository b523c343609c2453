import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP
from fastmlp.backends import available_backends

numba = pytest.importorskip("numba")
pytestmark = pytest.mark.skipif("numba" not in available_backends(), reason="numba backend")


def test_numba_thread_limit_restores_on_error():
    from fastmlp.backends.numba_backend import thread_limit

    before = numba.get_num_threads()
    with pytest.raises(RuntimeError):
        with thread_limit(1):
            assert numba.get_num_threads() == 1
            raise RuntimeError("inside")
    assert numba.get_num_threads() == before


def test_fit_with_n_jobs_restores_numba_threads():
    before = numba.get_num_threads()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = FastMLP(max_iter=3, n_jobs=1, random_state=0, backend="numba").fit(X, y)
        two = FastMLP(max_iter=3, n_jobs=2, random_state=0, backend="numba").fit(X, y)
    assert numba.get_num_threads() == before
    # the thread count changes the blocking, not the mathematics
    np.testing.assert_allclose(one.coefs_[0], two.coefs_[0], rtol=1e-4, atol=1e-6)


def test_same_seed_and_threads_give_identical_weights():
    rng = np.random.default_rng(1)
    X = rng.random((300, 20)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = FastMLP(max_iter=4, random_state=7, backend="numba").fit(X, y)
        b = FastMLP(max_iter=4, random_state=7, backend="numba").fit(X, y)
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.exhaustive  # compiles the numba kernels from scratch in a new process
def test_new_process_reproduces_weights_bitwise(tmp_path):
    """Freshly compiled and cache-loaded kernels must compute the same bits."""
    import subprocess
    import sys

    script = (
        "import hashlib, warnings, numpy as np\n"
        "warnings.simplefilter('ignore')\n"
        "from fastmlp import FastMLP\n"
        "rng = np.random.default_rng(3)\n"
        "X = rng.random((500, 40)).astype(np.float32)\n"
        "X[X < 0.6] = 0\n"
        "y = rng.integers(0, 4, 500)\n"
        "c = FastMLP(hidden_layer_sizes=(32, 16), max_iter=3, random_state=0,"
        " backend='numba').fit(X, y)\n"
        "print(hashlib.md5(c._params.tobytes()).hexdigest())\n"
    )
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 32


def test_threading_layer_is_reported():
    from fastmlp.backends.numba_backend import threading_layer

    assert threading_layer() in ("omp", "tbb", "workqueue")


def test_compiled_code_follows_every_source_it_is_built_from(tmp_path, monkeypatch):
    # numba checks a cached kernel only against its own file, not the helpers compiled
    # into it: the cache's folder is named by a digest of all the backends' sources
    from fastmlp.backends import jit_cache

    (tmp_path / "backends" / "numba_backend").mkdir(parents=True)
    helper = tmp_path / "backends" / "numba_backend" / "inline.py"
    helper.write_text("x = 1\n")
    (tmp_path / "backends" / "numba_backend" / "epoch.cpython-311.pyc").write_text("bytecode")
    monkeypatch.setattr(jit_cache, "_PACKAGE", tmp_path)
    monkeypatch.setenv("FASTMLP_CACHE_DIR", str(tmp_path / "cache"))
    jit_cache.sources_digest.cache_clear()
    try:
        first = jit_cache.code_dir()
        jit_cache.sources_digest.cache_clear()
        assert jit_cache.code_dir() == first  # nothing changed
        helper.write_text("x = 2  # an edit of a helper module\n")
        jit_cache.sources_digest.cache_clear()
        assert jit_cache.code_dir() != first
        assert jit_cache.code_dir().parent == first.parent  # the same installation
    finally:
        jit_cache.sources_digest.cache_clear()


@pytest.mark.parametrize("backend_name, blas_threads_inside", [("numba", 1), ("numpy", None)])
def test_lbfgs_keeps_blas_serial_between_compiled_kernels(monkeypatch, backend_name,
                                                          blas_threads_inside):
    """SciPy's L-BFGS-B calls BLAS between loss evaluations; with a compiled backend BLAS
    runs on one thread during the fit (its spinning threads would take the cores from the
    kernels' threads), and every setting is restored afterwards. The NumPy backend
    computes with BLAS, and keeps its threads."""
    from threadpoolctl import threadpool_info

    from fastmlp import FastMLPRegressor
    from fastmlp.backends import get_backend

    def blas_threads():
        return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    before = blas_threads()
    backend = get_backend(backend_name)
    seen, real = [], backend.loss_and_grad

    def recording(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "loss_and_grad", recording)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 3))
    FastMLPRegressor(solver="lbfgs", max_iter=5, backend=backend_name).fit(X, X[:, 0])
    assert seen and blas_threads() == before
    expected = [blas_threads_inside] * len(before) if blas_threads_inside else before
    assert all(threads == expected for threads in seen)


@numba.njit(parallel=True)
def _halve_in_threads(x):
    out = np.empty_like(x)
    for i in numba.prange(x.shape[0]):
        out[i] = x[i] * np.float32(0.5)
    return out


def test_fused_epoch_leaves_the_threads_floating_point_mode_as_it_was(compiled_backend):
    """The fused epochs flush subnormals to zero while they run (FTZ/DAZ on x86); the
    calling thread and the pool's threads must get subnormals back afterwards."""
    rng = np.random.default_rng(0)
    X = rng.random((300, 20)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        FastMLP(hidden_layer_sizes=(16, 16), max_iter=2, random_state=0,
                backend=compiled_backend.NAME).fit(X, y)
    tiny = np.full(64, 2.0**-126, dtype=np.float32)
    assert np.all(tiny * np.float32(0.5) == np.float32(2.0**-127))  # this thread
    assert np.all(_halve_in_threads(tiny) == np.float32(2.0**-127))  # numba's pool


def test_thread_limit_sets_blas_threads_and_restores_them(monkeypatch):
    """thread_limit holds every BLAS library to n threads inside and restores each count
    after, through the cached controller, which is looked up again once a module has
    been imported (one may bring a library of its own), and not otherwise."""
    import sys
    import types

    from threadpoolctl import threadpool_info

    from fastmlp import threads

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    assert before, "no BLAS library is loaded"
    with threads.thread_limit(1):
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before

    first = threads._threadpool_controller()
    assert threads._threadpool_controller() is first
    monkeypatch.setitem(sys.modules, "_fastmlp_new_module", types.ModuleType("new"))
    second = threads._threadpool_controller()
    assert second is not first
    assert threads._threadpool_controller() is second
    with threads.thread_limit(1):
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
