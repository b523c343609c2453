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


def test_threading_layer_is_reported():
    from fastmlp.backends.numba_backend import threading_layer

    assert threading_layer() in ("omp", "tbb", "workqueue")
