"""numba's predict through the first layer panel by panel (predict.first_layer_panels):
the panel-major copy holds W's values, it is made only where it is meant to be, and the
predictions are the bits of the row-by-row path, bad rows refused as there."""

import numpy as np
import pytest
import scipy.sparse as sp

from fastmlp.backends import backend_status, get_backend
from fastmlp.backends.codes import IDENTITY, RELU, SOFTMAX
from fastmlp.backends.layout import n_params

pytestmark = pytest.mark.skipif(backend_status()["numba"] is not None,
                                reason="the numba backend is not available")

ROWS = 300


@pytest.fixture
def predict(monkeypatch):
    from fastmlp.backends.numba_backend import predict as module

    # the panels from ROWS rows on, so that small problems take them
    monkeypatch.setattr(module, "PANEL_MIN_ROWS", ROWS)
    return module


def _problem(dtype, sizes, rows=ROWS, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.array(sizes)
    params = (rng.standard_normal(n_params(sizes)) * 0.1).astype(dtype)
    X = ((rng.random((rows, sizes[0])) < 0.2) * rng.random((rows, sizes[0]))).astype(dtype)
    return X, params, sizes


def _both_paths(predict, monkeypatch, X, params, sizes, output=IDENTITY):
    be = get_backend("numba")
    with_panels = np.full((X.shape[0], sizes[-1]), np.nan, params.dtype)
    be.predict_proba(with_panels, X, params, sizes, RELU, output=output)
    monkeypatch.setattr(predict, "PANEL_MIN_ROWS", 10**9)
    by_rows = np.full_like(with_panels, np.nan)
    be.predict_proba(by_rows, X, params, sizes, RELU, output=output)
    monkeypatch.setattr(predict, "PANEL_MIN_ROWS", ROWS)
    return with_panels, by_rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_panels_hold_the_first_layer_by_panels(predict, dtype):
    _, params, sizes = _problem(dtype, (30, 150, 4))
    w0p = predict.first_layer_panels(params, sizes, ROWS)
    wide = 256 // np.dtype(dtype).itemsize
    n_pan = 150 // wide
    W = params[: 30 * 150].reshape(30, 150)
    expected = W[:, : n_pan * wide].reshape(30, n_pan, wide).transpose(1, 0, 2).ravel()
    np.testing.assert_array_equal(w0p, expected)


def test_panels_only_where_they_pay(predict):
    _, params, sizes = _problem(np.float32, (30, 150, 4))
    assert predict.first_layer_panels(params, sizes, ROWS).shape[0] == 2 * 64 * 30
    assert predict.first_layer_panels(params, sizes, ROWS - 1).shape[0] == 0
    # no whole panel, no hidden layer, too many inputs for a panel to fit in L2
    _, narrow, narrow_sizes = _problem(np.float32, (30, 63, 4))
    assert predict.first_layer_panels(narrow, narrow_sizes, ROWS).shape[0] == 0
    _, linear, linear_sizes = _problem(np.float32, (30, 70))
    assert predict.first_layer_panels(linear, linear_sizes, ROWS).shape[0] == 0
    wide_sizes = np.array([predict.PANEL_MAX_INPUTS + 1, 64, 2])
    wide = np.zeros(n_params(wide_sizes), np.float32)
    assert predict.first_layer_panels(wide, wide_sizes, ROWS).shape[0] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [(60, 130, 7), (60, 64, 5), (60, 200, 96, 7), (60, 40, 3)],
                         ids=["rest", "one-panel", "deep", "no-panel"])
@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_same_bits_as_row_by_row(predict, monkeypatch, dtype, sizes, kind):
    X, params, sizes = _problem(dtype, sizes)
    X[5] = 0  # a row of no non-zero input
    X = sp.csr_matrix(X) if kind == "csr" else X
    with_panels, by_rows = _both_paths(predict, monkeypatch, X, params, sizes)
    np.testing.assert_array_equal(with_panels, by_rows)
    reference = np.empty_like(by_rows)
    get_backend("numpy").predict_proba(reference, X, params, sizes, RELU, output=IDENTITY)
    tol = {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-11}
    np.testing.assert_allclose(with_panels, reference, **tol)


def test_same_bits_through_softmax_over_several_blocks(predict, monkeypatch):
    # more rows than two threads' blocks of PREDICT_BLOCK rows, and a last part block
    X, params, sizes = _problem(np.float32, (50, 192, 10), rows=4 * predict.PREDICT_BLOCK + 37)
    with_panels, by_rows = _both_paths(predict, monkeypatch, X, params, sizes, SOFTMAX)
    np.testing.assert_array_equal(with_panels, by_rows)


@pytest.mark.parametrize("kind", ["dense", "csr"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bad_rows_refused_on_the_panel_path(predict, kind, bad):
    X, params, sizes = _problem(np.float32, (60, 130, 7))
    X[ROWS - 1, 7] = bad
    X = sp.csr_matrix(X) if kind == "csr" else X
    out = np.empty((ROWS, 7), np.float32)
    with pytest.raises(ValueError, match="NaN or infinity"):
        get_backend("numba").predict_proba(out, X, params, sizes, RELU)
