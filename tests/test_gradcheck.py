"""Finite-difference check of the whole backward pass (loss_and_grad) of every backend."""

import numpy as np
import pytest

from fastmlp.backends.codes import ACTIVATIONS, OUTPUTS, Target
from fastmlp.backends.layout import n_params

# finite differences need float64 (numba's cases of it are exhaustive: conftest.py)
pytestmark = pytest.mark.float64


def _finite_differences(backend, params, sizes, act, X, y, alpha, eps=1e-6):
    """The central-difference gradient of loss_and_grad's objective, entry by entry."""
    scratch = np.zeros_like(params)
    numeric = np.empty_like(params)
    for j in range(params.size):
        saved = params[j]
        params[j] = saved + eps
        up = backend.loss_and_grad(scratch, params, sizes, act, X, y, alpha)
        params[j] = saved - eps
        down = backend.loss_and_grad(scratch, params, sizes, act, X, y, alpha)
        params[j] = saved
        numeric[j] = (up - down) / (2 * eps)
    return numeric


@pytest.mark.parametrize("hidden", [(), (7,), (6, 5, 4)], ids=["0-hidden", "1-hidden", "3-hidden"])
@pytest.mark.parametrize("act_name", list(ACTIVATIONS))
def test_gradient_matches_finite_differences(backend, act_name, hidden):
    rng = np.random.default_rng(11)
    sizes = np.array([5, *hidden, 3], dtype=np.int64)
    X = rng.standard_normal((9, 5))
    y = rng.integers(0, 3, 9).astype(np.int64)
    params = rng.standard_normal(n_params(sizes)) * 0.5
    act = ACTIVATIONS[act_name]
    alpha = 0.1
    grads = np.zeros_like(params)
    loss = backend.loss_and_grad(grads, params, sizes, act, X, y, alpha)
    assert np.isfinite(loss) and loss > 0

    numeric = _finite_differences(backend, params, sizes, act, X, y, alpha)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-7)
    assert np.abs(grads).max() > 1e-3, "gradient should not vanish on this problem"


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("output", ["softmax", "logistic", "identity", "exp"])
@pytest.mark.parametrize("hidden", [(), (6, 4)], ids=["0-hidden", "2-hidden"])
def test_every_output_and_weights_match_finite_differences(backend, output, weighted, hidden):
    """The gradient of each output function's loss, with and without row weights."""
    rng = np.random.default_rng(12)
    sizes = np.array([5, *hidden, 3], dtype=np.int64)
    n = 9
    X = rng.standard_normal((n, 5))
    code = OUTPUTS[output]
    labels, values = np.empty(0, dtype=np.int64), np.empty((0, 3))
    if code == OUTPUTS["softmax"]:
        labels = rng.integers(0, 3, n).astype(np.int64)
    elif code == OUTPUTS["logistic"]:
        values = rng.integers(0, 2, (n, 3)).astype(np.float64)
    elif code == OUTPUTS["exp"]:
        values = rng.poisson(1.5, (n, 3)).astype(np.float64)
    else:
        values = rng.standard_normal((n, 3))
    weights = rng.uniform(0, 3, n) if weighted else np.empty(0)
    target = Target(code, labels, values, weights)
    params = rng.standard_normal(n_params(sizes)) * 0.5
    act, alpha = ACTIVATIONS["tanh"], 0.1
    grads = np.zeros_like(params)
    loss = backend.loss_and_grad(grads, params, sizes, act, X, target, alpha)
    assert np.isfinite(loss) and loss > 0
    numeric = _finite_differences(backend, params, sizes, act, X, target, alpha)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-7)
    assert np.abs(grads).max() > 1e-3
