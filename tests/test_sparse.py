"""SciPy sparse X in fit, partial_fit, predict, predict_proba and score of both estimators,
on every backend: the same model as from the dense X, bad sparse input refused with a
clear error, and never made dense."""

import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.pipeline import make_pipeline

from fastmlp import FastMLP, FastMLPRegressor

FORMATS = {
    "csr_matrix": sp.csr_matrix, "csc_matrix": sp.csc_matrix, "coo_matrix": sp.coo_matrix,
    "csr_array": sp.csr_array, "csc_array": sp.csc_array, "coo_array": sp.coo_array,
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _problem(n=240, d=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d)) * (rng.random((n, d)) < 0.15)
    y = (X[:, :5].sum(axis=1) > X[:, 5:10].sum(axis=1)).astype(int) + 2 * (X[:, 10] > 0)
    return X.astype(np.float32), y


def _same_model(a, b, exact):
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        if exact:
            np.testing.assert_array_equal(wa, wb)
        else:
            np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_classifier_sparse_fit_and_predict_match_dense(backend_name, fmt):
    X, y = _problem()
    Xs = FORMATS[fmt](X)
    kw = dict(hidden_layer_sizes=(16, 8), max_iter=3, batch_size=32, random_state=0,
              backend=backend_name)
    dense = FastMLP(**kw).fit(X, y)
    sparse = FastMLP(**kw).fit(Xs, y)
    # the compiled backends read the same non-zero inputs in the same order either way
    _same_model(dense, sparse, exact=backend_name != "numpy")
    np.testing.assert_allclose(sparse.predict_proba(Xs), dense.predict_proba(X), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(sparse.predict(Xs), dense.predict(X))
    assert sparse.score(Xs, y) == pytest.approx(dense.score(X, y))
    # a model trained on dense rows predicts sparse ones, and the other way round
    np.testing.assert_allclose(dense.predict_proba(Xs), dense.predict_proba(X), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("hidden", [(), (12,), (12, 6)], ids=str)
def test_regressor_and_partial_fit_take_sparse(backend_name, hidden):
    X, y = _problem(seed=1)
    target = X @ np.linspace(-1, 1, X.shape[1]) + 0.5
    Xs = sp.csr_matrix(X)
    kw = dict(hidden_layer_sizes=hidden, max_iter=3, batch_size=40, random_state=0,
              backend=backend_name)
    dense = FastMLPRegressor(**kw).fit(X, target)
    sparse = FastMLPRegressor(**kw).fit(Xs, target)
    _same_model(dense, sparse, exact=backend_name != "numpy")
    np.testing.assert_allclose(sparse.predict(Xs), dense.predict(X), rtol=1e-4, atol=1e-5)
    clf_d, clf_s = (FastMLP(hidden_layer_sizes=hidden, random_state=0, backend=backend_name)
                    for _ in range(2))
    for start in range(0, X.shape[0], 80):
        rows = slice(start, start + 80)
        clf_d.partial_fit(X[rows], y[rows], classes=np.arange(4))
        clf_s.partial_fit(Xs[rows], y[rows], classes=np.arange(4))
    _same_model(clf_d, clf_s, exact=backend_name != "numpy")


def test_lbfgs_and_early_stopping_take_sparse(backend_name):
    X, y = _problem(seed=2)
    Xs = sp.csr_matrix(X)
    for kw in (dict(solver="lbfgs", max_iter=15), dict(early_stopping=True, max_iter=4)):
        dense = FastMLP(hidden_layer_sizes=(10,), random_state=0, backend=backend_name,
                        **kw).fit(X, y)
        sparse = FastMLP(hidden_layer_sizes=(10,), random_state=0, backend=backend_name,
                         **kw).fit(Xs, y)
        _same_model(dense, sparse, exact=False)


def test_duplicate_and_unsorted_indices_mean_what_scipy_means(backend_name):
    """Duplicates are summed and order does not matter (as in SciPy's own products);
    the user's matrix is left as it was."""
    X, y = _problem(n=60, d=12)
    csr = sp.csr_matrix(X)
    data, indices, indptr = [], [], [0]
    for r in range(X.shape[0]):
        a, b = csr.indptr[r], csr.indptr[r + 1]
        # each entry split in two halves, the row's entries in reverse order
        indices += list(np.repeat(csr.indices[a:b][::-1], 2))
        data += list(np.repeat(csr.data[a:b][::-1] / 2, 2))
        indptr.append(len(indices))
    messy = sp.csr_matrix((np.array(data, np.float32), np.array(indices, np.int32),
                           np.array(indptr)), shape=X.shape)
    assert not messy.has_canonical_format
    before = (messy.data.copy(), messy.indices.copy())
    kw = dict(hidden_layer_sizes=(8,), max_iter=2, random_state=0, backend=backend_name)
    ref = FastMLP(**kw).fit(messy.toarray(), y)
    got = FastMLP(**kw).fit(messy, y)
    _same_model(ref, got, exact=False)
    np.testing.assert_allclose(got.predict_proba(messy), ref.predict_proba(messy.toarray()),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(messy.data, before[0])
    np.testing.assert_array_equal(messy.indices, before[1])


def _broken(kind):
    X = sp.csr_matrix(np.eye(4, 6, dtype=np.float32))
    if kind == "index out of range":
        X.indices[2] = 9
    elif kind == "negative index":
        X.indices[1] = -1
    elif kind == "bad indptr":
        X.indptr[2] = 7
    return X


@pytest.mark.parametrize("kind", ["index out of range", "negative index", "bad indptr"])
def test_broken_sparse_structure_is_refused(backend_name, kind):
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="not a valid sparse matrix|index|indptr"):
        FastMLP(max_iter=1, backend=backend_name).fit(_broken(kind), y)
    good = FastMLP(hidden_layer_sizes=(3,), max_iter=1, backend=backend_name)
    good.fit(sp.csr_matrix(np.eye(4, 6, dtype=np.float32)), y)
    with pytest.raises(ValueError, match="not a valid sparse matrix|index|indptr"):
        good.predict(_broken(kind))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_sparse_values_are_refused(backend_name, bad):
    X = sp.csr_matrix(np.eye(4, 6, dtype=np.float32))
    y = np.array([0, 1, 0, 1])
    clf = FastMLP(hidden_layer_sizes=(3,), max_iter=1, backend=backend_name).fit(X, y)
    X.data[1] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        FastMLP(max_iter=1, backend=backend_name).fit(X, y)
    with pytest.raises(ValueError, match="NaN|infinity"):
        clf.predict(X)


def test_wrong_width_and_dimensions_are_refused(backend_name):
    X, y = _problem(n=40, d=12)
    clf = FastMLP(hidden_layer_sizes=(4,), max_iter=1,
                  backend=backend_name).fit(sp.csr_matrix(X), y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(sp.csr_matrix(X[:, :11]))
    with pytest.raises(ValueError, match="features"):
        clf.predict(sp.csr_matrix(np.hstack([X, X[:, :1]])))
    # rows with no non-zero input at all still get outputs (the biases')
    empty = sp.csr_matrix((3, 12), dtype=np.float32)
    proba = clf.predict_proba(empty)
    assert proba.shape == (3, len(clf.classes_))
    np.testing.assert_allclose(proba[0], proba[1])


def test_text_pipelines(backend_name):
    docs = [f"{a} {b} {c}" for a in ("red", "green", "blue")
            for b in ("apple", "car", "sky", "leaf") for c in ("bright", "dull", "wet")]
    y = [d.split()[0] for d in docs]
    for vectorizer in (TfidfVectorizer(), HashingVectorizer(n_features=2**12)):
        pipe = make_pipeline(vectorizer, FastMLP(hidden_layer_sizes=(16,), max_iter=60,
                                                 learning_rate_init=0.02, random_state=0,
                                                 backend=backend_name))
        pipe.fit(docs, y)
        assert pipe.score(docs, y) == 1.0
        assert list(pipe.predict(["blue wet car", "red dull sky"])) == ["blue", "red"]


def test_a_wide_sparse_fit_is_not_made_dense(backend_name):
    """500 rows x 200,000 columns at 0.1 % density: dense, X alone would take 400 MB."""
    rng = np.random.default_rng(3)
    n, d = 500, 200_000
    X = sp.random(n, d, density=0.001, format="csr", dtype=np.float32, random_state=rng)
    y = rng.integers(0, 3, n)
    clf = FastMLP(hidden_layer_sizes=(8,), max_iter=2, batch_size=50, random_state=0,
                  backend=backend_name)
    clf.fit(X[:50], y[:50])  # compiled and warmed up outside the measurement
    tracemalloc.start()
    try:
        clf.fit(X, y)
        clf.predict_proba(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    model = sum(a.nbytes for a in clf.coefs_ + clf.intercepts_)
    # the model, its gradient and optimizer state, and working copies of them, but not
    # a dense X (or a dense batch of it: 50 x 200,000 x 4 bytes is 40 MB)
    assert peak < 12 * model + 4 * X.data.nbytes, (peak, model)
