"""Dask: a hyperparameter search across worker processes, and streaming training over a
dask array with dask-ml's Incremental, on a real LocalCluster (worker processes on the
loopback interface). Marked ``dask`` and left out of the default run: CI runs them with
``pip install -e ".[dask]" && pytest -m dask``."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from fastmlp import FastMLP

pytestmark = pytest.mark.dask
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def digits(mnist):
    (X, y), (X_test, y_test) = mnist
    return (X[:3000], y[:3000]), (X_test[:1000], y_test[:1000])


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _default_threads():
    from fastmlp.threads import default_threads

    return default_threads()


def test_workers_default_to_their_share_of_the_cores(client):
    # a worker process sets OMP_NUM_THREADS=1; the default follows it
    assert set(client.run(_default_threads).values()) == {(1, "OMP_NUM_THREADS")}


def test_grid_search_on_the_cluster_equals_the_local_one(client, digits, backend_name):
    joblib = pytest.importorskip("joblib")
    (X, y), _ = digits
    grid = {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(16,), (32,)]}
    # one thread everywhere: the same seed, backend and thread count give the same bits,
    # in the workers' fresh processes too (their compiled code is loaded or compiled there)
    est = FastMLP(max_iter=2, random_state=0, backend=backend_name, n_jobs=1)
    local = GridSearchCV(est, grid, cv=3).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(est, grid, cv=3).fit(X, y)
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
    for a, b in zip(remote.best_estimator_.coefs_, local.best_estimator_.coefs_):
        np.testing.assert_array_equal(a, b)


def test_incremental_streams_a_dask_array_block_by_block(client, digits):
    pytest.importorskip("dask_ml")
    import dask.array as da
    from dask_ml.wrappers import Incremental

    (X, y), (X_test, y_test) = digits
    classes = np.arange(10)
    inc = Incremental(FastMLP(random_state=0, n_jobs=1, backend="numpy"),
                      scoring="accuracy", shuffle_blocks=False)
    inc.fit(da.from_array(X, chunks=(500, X.shape[1])), da.from_array(y, chunks=500),
            classes=classes)
    # the same as partial_fit over the blocks in order, here
    reference = FastMLP(random_state=0, n_jobs=1, backend="numpy")
    for start in range(0, X.shape[0], 500):
        reference.partial_fit(X[start:start + 500], y[start:start + 500], classes=classes)
    for a, b in zip(inc.estimator_.coefs_, reference.coefs_):
        np.testing.assert_array_equal(a, b)
    assert inc.estimator_.t_ == X.shape[0]
    assert inc.score(da.from_array(X_test, chunks=500), da.from_array(y_test, chunks=500)) \
        > 0.8
