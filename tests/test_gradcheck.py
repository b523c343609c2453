"""Finite-difference check of the whole backward pass (loss_and_grad) of every backend."""

import numpy as np
import pytest

from fastmlp.backends.codes import ACTIVATIONS
from fastmlp.backends.layout import n_params


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

    scratch = np.zeros_like(params)
    numeric = np.empty_like(params)
    eps = 1e-6
    for j in range(params.size):
        saved = params[j]
        params[j] = saved + eps
        up = backend.loss_and_grad(scratch, params, sizes, act, X, y, alpha)
        params[j] = saved - eps
        down = backend.loss_and_grad(scratch, params, sizes, act, X, y, alpha)
        params[j] = saved
        numeric[j] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-7)
    assert np.abs(grads).max() > 1e-3, "gradient should not vanish on this problem"
