"""Integer X used as it is stored (uint8 images, a np.memmap of them) and input_scale:
the same model, bit for bit, as from the float X a user would otherwise make, with no
float copy of X made by the fit."""

import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, FastMLPRegressor
from fastmlp.backends import sparse


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def pixels(raw_mnist):
    (X, y), (X_test, y_test) = raw_mnist
    return (X[:1_500], y[:1_500]), (X_test[:500], y_test[:500])


def _same(a, b):
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(p, q)


def test_uint8_with_input_scale_is_the_scaled_float_model(pixels, backend_name,
                                                          monkeypatch):
    # blocks smaller than X, so that X is converted in several
    monkeypatch.setattr(sparse, "CONVERT_ROWS", 256)
    monkeypatch.setattr("fastmlp._predict.CONVERT_ROWS", 256)
    (X, y), (X_test, _) = pixels
    as_float = (X.astype(np.float32) * np.float32(1 / 255), X_test.astype(np.float32)
                * np.float32(1 / 255))  # what load_mnist and a user compute
    kw = dict(hidden_layer_sizes=(32, 16), max_iter=2, random_state=0, backend=backend_name)
    reference = FastMLP(**kw).fit(as_float[0], y)
    model = FastMLP(**kw, input_scale=1 / 255).fit(X, y)
    _same(model, reference)
    np.testing.assert_array_equal(model.predict_proba(X_test),
                                  reference.predict_proba(as_float[1]))
    assert model.score(X_test, pixels[1][1]) == reference.score(as_float[1], pixels[1][1])


def test_values_keep_their_meaning_without_a_scale(pixels, backend_name):
    (X, y), _ = pixels
    kw = dict(hidden_layer_sizes=(8,), max_iter=1, random_state=0, backend=backend_name,
              learning_rate_init=1e-4)
    _same(FastMLP(**kw).fit(X, y), FastMLP(**kw).fit(X.astype(np.float32), y))
    # a scale on float X too; 1 means none
    Xf = X.astype(np.float32)
    _same(FastMLP(**kw, input_scale=0.5).fit(Xf, y), FastMLP(**kw).fit(Xf * np.float32(0.5), y))
    _same(FastMLP(**kw, input_scale=1).fit(Xf, y), FastMLP(**kw).fit(Xf, y))


@pytest.mark.parametrize("kind", ["int16", "int64", "memmap", "sparse", "lbfgs",
                                  "early_stopping", "regressor"])
def test_other_stored_inputs(pixels, tmp_path, kind):
    (X, y), (X_test, _) = pixels
    scale = 1 / 255
    Xf = X.astype(np.float32) * np.float32(scale)
    kw = dict(hidden_layer_sizes=(16,), max_iter=2, random_state=0)
    fit_X, cls = X, FastMLP
    if kind in ("int16", "int64"):
        fit_X = X.astype(kind)
    elif kind == "memmap":
        np.save(tmp_path / "x.npy", X)
        fit_X = np.load(tmp_path / "x.npy", mmap_mode="r")
    elif kind == "sparse":
        fit_X, Xf = sp.csr_matrix(X), sp.csr_matrix(Xf)
    elif kind == "lbfgs":
        kw.update(solver="lbfgs", max_iter=5)
    elif kind == "early_stopping":
        kw.update(early_stopping=True, max_iter=3)
    else:
        cls, y = FastMLPRegressor, X[:, 300:310].mean(axis=1).astype(np.float64) / 255
    reference = cls(**kw).fit(Xf, y)
    model = cls(**kw, input_scale=scale).fit(fit_X, y)
    _same(model, reference)
    if kind != "sparse":
        np.testing.assert_array_equal(model.predict(X_test),
                                      reference.predict(X_test.astype(np.float32)
                                                        * np.float32(scale)))


def test_partial_fit_and_clone_keep_the_scale(pixels):
    (X, y), _ = pixels
    model = FastMLP(hidden_layer_sizes=(8,), random_state=0, input_scale=1 / 255)
    reference = FastMLP(hidden_layer_sizes=(8,), random_state=0)
    for start in range(0, 1500, 500):
        model.partial_fit(X[start:start + 500], y[start:start + 500], classes=np.arange(10))
        reference.partial_fit(X[start:start + 500].astype(np.float32) * np.float32(1 / 255),
                              y[start:start + 500], classes=np.arange(10))
    _same(model, reference)
    assert clone(model).input_scale == 1 / 255


def test_a_fit_makes_no_float_copy_of_stored_pixels(pixels, compiled_backend):
    (X, y), _ = pixels
    X = np.tile(X, (8, 1))  # 12,000 rows, 9.4 MB as uint8, 37.6 MB as float32
    y = np.tile(y, 8)
    model = FastMLP(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                    backend=compiled_backend.NAME, input_scale=1 / 255)
    model.fit(X[:100], y[:100])  # compile outside the measurement
    tracemalloc.start()
    try:
        model.fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # compressed rows of float32 values and int32 columns for the 19 % non-zero pixels
    # (1.5 bytes a pixel) and one converted block of 2,048 rows (0.7 here); a float copy
    # of X alone would be 4.0, and with the compressed rows 5.5
    assert peak < 3.0 * X.nbytes, peak / X.nbytes


@pytest.mark.parametrize("bad", [0, -1.0, np.inf, np.nan, "x"])
def test_bad_input_scale_is_refused(pixels, bad):
    (X, y), _ = pixels
    with pytest.raises((ValueError, TypeError), match="input_scale"):
        FastMLP(input_scale=bad).fit(X[:50], y[:50])
