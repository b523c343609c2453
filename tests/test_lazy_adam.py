"""solver="lazy_adam": Adam that steps only the first layer's rows of the inputs present in
a mini-batch. The same optimizer on every backend (numpy is the reference), exactly Adam
when every input is present in every batch, and the rows of absent inputs left alone."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, FastMLPRegressor
from fastmlp.backends import available_backends


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _sparse_problem(n=300, d=500, seed=0):
    """Rows with a few of many features, so most inputs are absent from most batches."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    y = rng.integers(0, 3, n)
    y[np.asarray(X[:, :50].sum(axis=1)).ravel() > 0.3] = 3
    return X, y


def _weights(model):
    return model.coefs_ + model.intercepts_


def _fit(X, y, solver, backend, **kw):
    params = dict(hidden_layer_sizes=(16, 8), max_iter=3, batch_size=32, random_state=0,
                  alpha=1e-3, backend=backend)
    params.update(kw)
    return FastMLP(solver=solver, **params).fit(X, y)


def test_lazy_adam_is_adam_when_every_input_is_in_every_batch(backend_name):
    rng = np.random.default_rng(1)
    X = (rng.random((200, 30)) + 0.1).astype(np.float32)  # no zero anywhere
    y = (X[:, 0] > X[:, 1]).astype(int)
    exact = _fit(X, y, "adam", backend_name)
    lazy = _fit(X, y, "lazy_adam", backend_name)
    for a, b in zip(_weights(exact), _weights(lazy)):
        np.testing.assert_array_equal(a, b)
    assert lazy.loss_ == exact.loss_


def test_rows_of_absent_inputs_keep_their_weights(backend_name):
    X, y = _sparse_problem()
    X = X.tolil()
    X[:, 7] = 0  # feature 7 never appears
    X[:, 9] = 0
    X[5, 9] = 0.5  # feature 9 in one row only: stepped in one batch of each epoch
    X = X.tocsr()
    X.eliminate_zeros()
    start = _fit(X, y, "adam", backend_name, max_iter=1, learning_rate_init=1e-30)
    lazy = _fit(X, y, "lazy_adam", backend_name)
    exact = _fit(X, y, "adam", backend_name)
    w0 = start.coefs_[0]
    # untouched by lazy Adam; exact Adam moves them (the L2 term is non-zero)
    np.testing.assert_array_equal(lazy.coefs_[0][7], w0[7])
    assert np.all(exact.coefs_[0][7] != w0[7])
    # feature 9: a step in each of the 3 epochs moves it, by less than Adam's every-batch
    # decay moves exact's row
    assert np.all(lazy.coefs_[0][9] != w0[9])
    # present features moved under both
    for model in (lazy, exact):
        assert np.abs(model.coefs_[0][60:] - w0[60:]).max() > 1e-3


@pytest.mark.numba  # every backend
def test_lazy_adam_agrees_across_backends():
    X, y = _sparse_problem(seed=2)
    reference = _fit(X, y, "lazy_adam", "numpy")
    exact = _fit(X, y, "adam", "numpy")
    assert max(np.abs(a - b).max() for a, b in zip(_weights(reference), _weights(exact))) > 1e-3
    for backend in available_backends():
        model = _fit(X, y, "lazy_adam", backend)
        for a, b in zip(_weights(model), _weights(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert model.loss_ == pytest.approx(reference.loss_, rel=1e-5)
        np.testing.assert_array_equal(model.predict(X), reference.predict(X))


def test_dense_and_sparse_input_give_the_same_lazy_model(backend_name):
    X, y = _sparse_problem(seed=3)
    from_sparse = _fit(X, y, "lazy_adam", backend_name)
    from_dense = _fit(X.toarray(), y, "lazy_adam", backend_name)
    for a, b in zip(_weights(from_sparse), _weights(from_dense)):
        if backend_name == "numpy":  # sparse and dense products round differently
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)


def test_explicit_zeros_do_not_count_as_present(backend_name):
    X, y = _sparse_problem(seed=4)
    rows, cols = X.nonzero()
    keep = cols != 11
    data = np.r_[np.asarray(X[rows[keep], cols[keep]]).ravel(), np.zeros(X.shape[0])]
    coo = sp.coo_matrix((data.astype(np.float32),
                         (np.r_[rows[keep], np.arange(X.shape[0])],
                          np.r_[cols[keep], np.full(X.shape[0], 11)])), shape=X.shape)
    with_zeros = sp.csr_matrix(coo)  # keeps the explicit zeros
    assert with_zeros.nnz > (X.nnz - np.count_nonzero(cols == 11))
    start = _fit(with_zeros, y, "adam", backend_name, max_iter=1, learning_rate_init=1e-30)
    lazy = _fit(with_zeros, y, "lazy_adam", backend_name)
    np.testing.assert_array_equal(lazy.coefs_[0][11], start.coefs_[0][11])


def test_lazy_adam_in_partial_fit_and_the_regressor(backend_name):
    X, y = _sparse_problem(seed=5)
    clf = FastMLP(solver="lazy_adam", hidden_layer_sizes=(8,), random_state=0,
                  backend=backend_name)
    for start in range(0, 300, 100):
        clf.partial_fit(X[start:start + 100], y[start:start + 100], classes=np.arange(4))
    assert clf.t_ == 300
    assert np.all(np.isfinite(clf.coefs_[0]))
    target = np.asarray(X[:, :20].sum(axis=1)).ravel()
    reg = FastMLPRegressor(solver="lazy_adam", hidden_layer_sizes=(8,), max_iter=30,
                           random_state=0, backend=backend_name).fit(X, target)
    baseline = np.mean((target - target.mean()) ** 2)
    assert np.mean((reg.predict(X) - target) ** 2) < 0.5 * baseline


def test_an_unknown_solver_names_the_choices():
    X, y = _sparse_problem()
    with pytest.raises(ValueError, match="lazy_adam"):
        FastMLP(solver="lazyadam").fit(X, y)
