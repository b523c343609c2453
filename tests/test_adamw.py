"""solver="adamw": Adam with decoupled weight decay (codes.OptimizerStep.weight_decay), on
every backend, against Adam's own step."""

import copy

import numpy as np
import pytest

from fastmlp import FastMLP, FastMLPRegressor

from .features import fit_quietly, skip_unless_thread_invariant


def _data(estimator, n=96, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if estimator is FastMLP:
        return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, X[:, 0] - 2 * X[:, 1] ** 2


_fit = fit_quietly


@pytest.mark.parametrize("estimator", [FastMLP, FastMLPRegressor])
def test_adamw_without_decay_is_adam_bit_for_bit(backend_name, estimator):
    X, y = _data(estimator)
    kw = dict(hidden_layer_sizes=(16,), max_iter=3, batch_size=32, random_state=0,
              backend=backend_name)
    adam = _fit(estimator(solver="adam", **kw), X, y)
    adamw = _fit(estimator(solver="adamw", weight_decay=0.0, **kw), X, y)
    np.testing.assert_array_equal(adamw._params, adam._params)
    # and the decay is AdamW's alone: Adam ignores weight_decay
    other = _fit(estimator(solver="adam", weight_decay=0.5, **kw), X, y)
    np.testing.assert_array_equal(other._params, adam._params)


@pytest.mark.parametrize("estimator", [FastMLP, FastMLPRegressor])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_adamw_step_is_adams_minus_lr_times_decay(backend_name, estimator, schedule):
    # From the same weights w0 (and a fresh optimizer, as every fit starts one), one
    # full-batch step of AdamW lands lr * weight_decay * w0 below Adam's, for every weight
    # and bias: the decay is decoupled from the gradient and its moments.
    X, y = _data(estimator)
    start = _fit(estimator(hidden_layer_sizes=(16, 8), max_iter=2, batch_size=len(X),
                           dtype="float64", random_state=0, backend=backend_name,
                           learning_rate=schedule), X, y)
    w0 = start._params.copy()
    wd = 0.3
    stepped = {}
    for solver in ("adam", "adamw"):
        model = copy.deepcopy(start).set_params(warm_start=True, max_iter=1, solver=solver,
                                                weight_decay=wd)
        stepped[solver] = _fit(model, X, y)._params
    # a fit's cosine schedule starts at the full rate: its first batch has lr itself
    lr = start.learning_rate_init
    assert not np.array_equal(stepped["adamw"], stepped["adam"])
    np.testing.assert_allclose(stepped["adamw"] - stepped["adam"], -lr * wd * w0,
                               rtol=1e-9, atol=1e-15)


def test_adamw_matches_the_reference_backend(compiled_backend, dtype, tol):
    X, y = _data(FastMLP, n=200)
    kw = dict(hidden_layer_sizes=(24, 12), max_iter=4, batch_size=50, random_state=3,
              solver="adamw", weight_decay=0.05, dtype=dtype, learning_rate="cosine")
    ref = _fit(FastMLP(backend="numpy", **kw), X, y)
    got = _fit(FastMLP(backend=compiled_backend.NAME, **kw), X, y)
    np.testing.assert_allclose(got._params, ref._params, rtol=tol["rtol"] * 10,
                               atol=tol["atol"] * 10)


def test_adamw_bits_do_not_depend_on_the_thread_count(backend_name):
    # a backend whose epoch gives the same bits at any thread count keeps that with the
    # decay, an element-wise factor
    skip_unless_thread_invariant(backend_name)
    X, y = _data(FastMLP, n=300, d=40)
    kw = dict(hidden_layer_sizes=(64,), max_iter=2, random_state=1, solver="adamw",
              backend=backend_name)
    one = _fit(FastMLP(n_jobs=1, **kw), X, y)
    two = _fit(FastMLP(n_jobs=2, **kw), X, y)
    np.testing.assert_array_equal(one._params, two._params)


def test_weight_decay_shrinks_the_weights():
    X, y = _data(FastMLP, n=300)
    kw = dict(hidden_layer_sizes=(32,), max_iter=30, random_state=0, backend="numpy",
              solver="adamw", learning_rate_init=0.01)
    norms = [np.linalg.norm(_fit(FastMLP(weight_decay=wd, **kw), X, y).coefs_[0])
             for wd in (0.0, 1.0, 5.0)]
    assert norms[0] > norms[1] > norms[2]


def test_weight_decay_must_be_non_negative():
    X, y = _data(FastMLP)
    with pytest.raises(ValueError, match="weight_decay"):
        FastMLP(solver="adamw", weight_decay=-0.1, backend="numpy").fit(X, y)
