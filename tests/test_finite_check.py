"""fit's check of X for NaN and infinity: a large dense float X is checked by a parallel
compiled pass (_inputs.check_finite_X) instead of scikit-learn's one-thread sum, and must
refuse exactly what scikit-learn refuses, with scikit-learn's own message."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.utils import assert_all_finite

from fastmlp import FastMLP, FastMLPRegressor
from fastmlp._inputs import PARALLEL_CHECK_VALUES
from fastmlp.backends.numba_backend.inputs import all_finite

N_IN = 64
N_ROWS = PARALLEL_CHECK_VALUES // N_IN + 3  # just past the size of the parallel check


def _big(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_ROWS, N_IN)).astype(dtype)


def _sklearn_message(X, name):
    with pytest.raises(ValueError) as info:
        assert_all_finite(X, estimator_name=name, input_name="X")
    return str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (N_ROWS // 2, 17), (N_ROWS - 1, N_IN - 1)])
def test_all_finite_finds_one_bad_value_anywhere(dtype, bad, where):
    X = _big(dtype)
    assert all_finite(X)
    X[where] = bad
    assert not all_finite(X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_that_are_finite(dtype):
    # the largest, the smallest subnormal and signed zeros are finite
    info = np.finfo(dtype)
    X = np.zeros((4, 8), dtype=dtype)
    X[0, :4] = [info.max, -info.max, info.smallest_subnormal, -0.0]
    assert all_finite(X)


@pytest.mark.parametrize("estimator", [FastMLP, FastMLPRegressor])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fit_refuses_a_large_x_with_scikit_learns_message(estimator, dtype, bad):
    X = _big(dtype)
    X[N_ROWS - 2, 5] = bad
    y = np.arange(N_ROWS) % 3
    model = estimator(hidden_layer_sizes=(4,), max_iter=1, dtype=dtype, n_jobs=1)
    with pytest.raises(ValueError) as info:
        model.fit(X, y)
    assert str(info.value) == _sklearn_message(X, estimator.__name__)
    assert ("NaN" in str(info.value)) == (bad != np.inf)


@pytest.mark.parametrize("make", [
    lambda X: X[:40],  # small: scikit-learn's check
    lambda X: sp.csr_matrix(X[:40]),  # sparse: scikit-learn's check of its values
    lambda X: np.asfortranarray(X),  # validated to C order first, then checked
    lambda X: X.tolist()[:40],  # a list
])
def test_fit_refuses_other_forms_of_x(make):
    X = _big(np.float64)
    X[3, 7] = np.nan
    Xf = make(X)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        FastMLP(hidden_layer_sizes=(4,), max_iter=1).fit(Xf, np.arange(len(Xf) if not
                                                                 sp.issparse(Xf) else 40) % 2)


def test_fit_still_checks_y():
    X = _big(np.float32)[:50]
    y = np.linspace(0, 1, 50)
    y[3] = np.nan
    with pytest.raises(ValueError, match="Input y contains NaN"):
        FastMLPRegressor(hidden_layer_sizes=(4,), max_iter=1).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_large_finite_x_fits_as_before(monkeypatch):
    # the check changes nothing it lets through: the same weights as when
    # scikit-learn's own check is made (the parallel one switched off by its size)
    X = _big(np.float32)
    y = (X[:, 0] > 0).astype(int)

    def fit():
        return FastMLP(hidden_layer_sizes=(8,), max_iter=2, random_state=0,
                       n_jobs=1).fit(X, y).coefs_[0]

    ours = fit()
    monkeypatch.setattr("fastmlp._inputs.PARALLEL_CHECK_VALUES", X.size + 1)
    np.testing.assert_array_equal(ours, fit())


@pytest.mark.parametrize("backend", ["numba", "numpy", "cython"])
def test_the_parallel_pass_is_the_backends_own(monkeypatch, backend):
    # a backend that offers all_finite (numba) checks a large X with it; the others
    # get scikit-learn's check (and its message) as before, and load no Numba for it
    from fastmlp.backends import backend_status, get_backend

    if backend_status()[backend] is not None:
        pytest.skip(f"the {backend} backend is not available")
    module = get_backend(backend)
    real = getattr(module, "all_finite", None)
    assert (real is not None) == (backend == "numba")
    calls = []
    if real is not None:
        monkeypatch.setattr(module, "all_finite", lambda X: calls.append(X.shape) or real(X))
    X = _big(np.float32)
    X[7, 7] = np.inf
    with pytest.raises(ValueError) as info:
        FastMLP(hidden_layer_sizes=(4,), max_iter=1, backend=backend).fit(X, X[:, 0] > 0)
    assert str(info.value) == _sklearn_message(X, "FastMLP")
    assert calls == ([X.shape] if backend == "numba" else [])
