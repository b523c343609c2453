"""max_norm (codes.OptimizerStep.max_norm) on every backend, and the leaky ReLU beside the
activations every backend already had."""


import numpy as np
import pytest

from fastmlp import FastMLP, FastMLPRegressor
from fastmlp.backends.codes import ADAM, LEAKY_RELU, RELU, SGD, optimizer_step
from fastmlp.backends.layout import layer_views, n_params

from . import naive
from .features import fit_quietly, skip_unless_thread_invariant, three_classes


def _problem(dtype, layer_sizes, n=96, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, layer_sizes[0])).astype(dtype)
    y = rng.integers(0, layer_sizes[-1], n).astype(np.int64)
    params = (0.6 * rng.standard_normal(n_params(layer_sizes))).astype(dtype)
    return X, y, params, np.asarray(layer_sizes, dtype=np.int64)


def _epoch(impl, X, y, params, sizes, batch, opt, act=RELU):
    p = params.copy()
    g, m, v = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    order = np.arange(X.shape[0], dtype=np.int64)
    impl.train_epoch(p, g, m, v, sizes, act, impl.prepare_inputs(X), y, order, batch, 1e-3,
                     opt, 0)
    return p


# a first layer wider than a thread's block and than the extension's column groups, and
# the layers above it in numba's transposed blocks
@pytest.mark.parametrize("layer_sizes", [(9, 4), (9, 12, 5), (7, 150, 6, 3)], ids=str)
@pytest.mark.parametrize("solver", [ADAM, SGD])
def test_one_step_then_every_unit_back_within_the_norm(backend, dtype, tol, layer_sizes,
                                                       solver):
    # one batch: the constrained step is the free step, then each column of each W
    # scaled back to the norm (biases as they were)
    X, y, params, sizes = _problem(dtype, layer_sizes)
    free = _epoch(backend, X, y, params, sizes, X.shape[0], optimizer_step(solver, 0.05))
    bound = _epoch(backend, X, y, params, sizes, X.shape[0],
                   optimizer_step(solver, 0.05, max_norm=1.0))
    binding = 0
    for (w_free, b_free), (w, b) in zip(layer_views(free, sizes), layer_views(bound, sizes)):
        expected = naive.max_norm_project(w_free, 1.0)
        np.testing.assert_allclose(w, expected, **tol)
        np.testing.assert_array_equal(b, b_free)
        assert np.all(np.linalg.norm(w.astype(np.float64), axis=0) <= 1.0 + 1e-5)
        binding += int(np.sum(np.linalg.norm(w_free.astype(np.float64), axis=0) > 1.0))
    assert binding > 0, "the bound must bind somewhere for the test to mean anything"


@pytest.mark.parametrize("act", [RELU, LEAKY_RELU])
@pytest.mark.parametrize("layer_sizes", [(9, 12, 5), (7, 150, 6, 3)], ids=str)
def test_constrained_epochs_match_the_reference(compiled_backend, reference, dtype, tol,
                                                layer_sizes, act):
    # several batches: the next batch's forward pass reads the projected weights (numba
    # keeps forward copies of some layers, which must follow the projection)
    X, y, params, sizes = _problem(dtype, layer_sizes)
    opt = optimizer_step(ADAM, 0.05, max_norm=0.8)
    want = _epoch(reference, X, y, params, sizes, 16, opt, act)
    got = _epoch(compiled_backend, X, y, params, sizes, 16, opt, act)
    np.testing.assert_allclose(got, want, rtol=10 * tol["rtol"], atol=10 * tol["atol"])


_fit = fit_quietly


def _data(n=300, d=20, seed=0):
    return three_classes(n, d, seed)


@pytest.mark.parametrize("estimator", [FastMLP, FastMLPRegressor])
def test_a_bound_that_never_binds_changes_no_bit(backend_name, estimator):
    X, y = _data()
    kw = dict(hidden_layer_sizes=(32, 16), max_iter=3, random_state=0, backend=backend_name)
    free = _fit(estimator(**kw), X, y)
    loose = _fit(estimator(max_norm=1e6, **kw), X, y)
    np.testing.assert_array_equal(loose._params, free._params)


def test_fitted_units_keep_within_the_norm(backend_name):
    X, y = _data()
    model = _fit(FastMLP(hidden_layer_sizes=(64, 32), max_norm=0.7, learning_rate_init=0.05,
                         max_iter=4, random_state=0, backend=backend_name), X, y)
    norms = np.concatenate([np.linalg.norm(w, axis=0) for w in model.coefs_])
    assert norms.max() <= 0.7 * (1 + 1e-5)
    assert np.sum(norms > 0.7 * (1 - 1e-5)) > 10  # the bound held many units back
    assert model.score(X, y) > 0.7


def test_max_norm_bits_do_not_depend_on_the_thread_count(backend_name):
    skip_unless_thread_invariant(backend_name)
    X, y = _data(n=400, d=40)
    kw = dict(hidden_layer_sizes=(200, 70), max_norm=0.5, max_iter=2, random_state=1,
              activation="leaky_relu", backend=backend_name)
    one = _fit(FastMLP(n_jobs=1, **kw), X, y)
    two = _fit(FastMLP(n_jobs=2, **kw), X, y)
    np.testing.assert_array_equal(one._params, two._params)


def test_leaky_relu_learns_what_relu_learns(backend_name):
    X, y = _data()
    scores = {act: _fit(FastMLP(activation=act, max_iter=20, random_state=0,
                                backend=backend_name), X, y).score(X, y)
              for act in ("relu", "leaky_relu")}
    assert scores["leaky_relu"] > 0.9 and abs(scores["leaky_relu"] - scores["relu"]) < 0.05


def test_max_norm_is_checked():
    X, y = _data(n=50)
    with pytest.raises(ValueError, match="max_norm must be in the range"):
        FastMLP(max_norm=0.0, backend="numpy").fit(X, y)
    with pytest.raises(ValueError, match="solver='lbfgs' takes no such steps"):
        FastMLP(max_norm=1.0, solver="lbfgs", backend="numpy").fit(X, y)
