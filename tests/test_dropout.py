"""Dropout of the hidden layers (codes.OptimizerStep.dropout): the counter-based masks,
their gradient, and the same masks on every backend at any thread count."""


import numpy as np
import pytest

from fastmlp import FastMLP, FastMLPRegressor
from fastmlp.backends import numpy_backend
from fastmlp.backends.codes import (
    ADAM,
    GOLDEN64,
    LEAKY_RELU,
    LOGISTIC,
    RELU,
    SGD,
    TANH,
    as_target,
    dropout_kept,
    dropout_row_key,
    dropout_threshold,
    mix64,
    optimizer_step,
)
from fastmlp.backends.layout import layer_views, n_params

from .conftest import TOLERANCES
from .features import fit_quietly, skip_unless_thread_invariant, three_classes


@pytest.fixture(autouse=True)
def _wrapping_hash():
    # the hash multiplies uint64s with wrap-around, which NumPy's scalars warn of
    with np.errstate(over="ignore"):
        yield


def test_the_generator_is_splitmix64():
    # SplitMix64 seeded with 0 gives 0xE220A8397B1DCDAF, then 0x6E789E6AA1B965F4 (its
    # published sequence: the finaliser of 1 and 2 times the golden gamma)
    states = np.array([1, 2], dtype=np.uint64) * GOLDEN64
    assert [int(z) for z in mix64(states)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_masks_drop_the_rate_independently_of_the_coordinates(rate):
    keys = dropout_row_key(np.uint64(7), np.uint64(640), np.uint64(1),
                           np.arange(400, dtype=np.uint64))
    kept = dropout_kept(keys[:, None], np.arange(500, dtype=np.uint64)[None, :],
                        dropout_threshold(rate))
    assert abs(1 - kept.mean() - rate) < 0.005  # 200,000 units: 4 standard deviations
    # rows, units, layers and batches each draw their own masks
    assert 0.2 < np.mean(kept[0] != kept[1]) < 0.8
    assert 0.2 < np.mean(kept[:, 0] != kept[:, 1]) < 0.8
    other = dropout_row_key(np.uint64(7), np.uint64(704), np.uint64(1),
                            np.arange(400, dtype=np.uint64))
    assert 0.2 < np.mean(dropout_kept(other[:, None], np.arange(500, dtype=np.uint64),
                                      dropout_threshold(rate)) != kept) < 0.8


def test_forward_keeps_and_scales():
    rng = np.random.default_rng(0)
    h = rng.random((50, 40)) + 0.5
    out = h.copy()
    numpy_backend._dropout_forward(out, 2, 11, 960, 0.25)
    kept = out != 0
    np.testing.assert_allclose(out[kept], h[kept] / 0.75)
    assert abs(kept.mean() - 0.75) < 0.05


@pytest.mark.parametrize("act", [RELU, LEAKY_RELU, TANH, LOGISTIC])
def test_the_gradient_with_dropout_is_the_derivative_of_the_loss(act):
    # one batch, its masks fixed by (seed, batch): central differences of the loss
    rng = np.random.default_rng(1)
    sizes = np.array([5, 9, 7, 3])
    params = rng.standard_normal(n_params(sizes)) * 0.7
    X = rng.standard_normal((12, 5))
    target = as_target(rng.integers(0, 3, 12).astype(np.int64), np.float64)
    drop = (0.4, 123, 4096)

    def loss_and_grad(p):
        grads = np.zeros_like(p)
        acts = [X.copy()] + [np.empty((12, s)) for s in sizes[1:]]
        deltas = [np.empty((12, s)) for s in sizes[1:]]
        loss, _ = numpy_backend._batch_step(layer_views(p, sizes), layer_views(grads, sizes),
                                            act, acts, deltas, target, 0.0, drop)
        return loss / 12, grads

    _, grads = loss_and_grad(params)
    eps = 1e-6
    for q in rng.choice(params.size, 25, replace=False):
        step = np.zeros_like(params)
        step[q] = eps
        numeric = (loss_and_grad(params + step)[0] - loss_and_grad(params - step)[0]) / (2 * eps)
        assert numeric == pytest.approx(grads[q], rel=1e-4, abs=1e-7)


def _problem(dtype, layer_sizes, n=80, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, layer_sizes[0])).astype(dtype)
    y = rng.integers(0, layer_sizes[-1], n).astype(np.int64)
    params = (0.5 * rng.standard_normal(n_params(layer_sizes))).astype(dtype)
    return X, y, params, np.asarray(layer_sizes, dtype=np.int64)


# the first layer alone, a small dense layer above it, a wide one (numba: matrix
# products), and the top layer read from its copy
@pytest.mark.parametrize("layer_sizes", [(9, 12, 5), (7, 150, 6, 3), (6, 40, 300, 30, 4)],
                         ids=str)
@pytest.mark.parametrize("act", [RELU, TANH, LEAKY_RELU])
# Adam in float32 divides gradients near zero by their tiny moments, which turns the
# rounding of a sum into a visible step now and then: Adam is compared in float64
@pytest.mark.parametrize("solver, dtype", [(SGD, np.float32), (SGD, np.float64),
                                           (ADAM, np.float64)], ids=str)
def test_dropout_epochs_match_the_reference(compiled_backend, reference, layer_sizes, act,
                                            solver, dtype):
    # the same masks on every backend: an epoch with dropout agrees with the reference to
    # the rounding of its sums (a unit dropped on one backend and not on another would
    # be off by far more)
    tol = TOLERANCES[np.dtype(dtype)]
    X, y, params, sizes = _problem(dtype, layer_sizes)
    opt = optimizer_step(solver, 0.02, dropout=0.35, drop_seed=99, seen=320.0)
    results = []
    for impl in (reference, compiled_backend):
        p = params.copy()
        g, m, v = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        order = np.random.default_rng(5).permutation(X.shape[0]).astype(np.int64)
        loss, hits, _ = impl.train_epoch(p, g, m, v, sizes, act, impl.prepare_inputs(X), y,
                                         order, 16, 1e-3, opt, 0)
        results.append((p, loss))
    (p_ref, loss_ref), (p, loss) = results
    np.testing.assert_allclose(loss, loss_ref, rtol=10 * tol["rtol"])
    np.testing.assert_allclose(p, p_ref, rtol=10 * tol["rtol"], atol=10 * tol["atol"])


_fit = fit_quietly


def _data(n=400, d=30, seed=0):
    return three_classes(n, d, seed)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_masks_do_not_depend_on_the_backend_or_the_thread_count(backend_name, n_jobs):
    X, y = _data()
    kw = dict(hidden_layer_sizes=(96, 48), dropout=0.4, max_iter=3, random_state=2,
              learning_rate_init=0.01)
    ref = _fit(FastMLP(backend="numpy", **kw), X, y)
    got = _fit(FastMLP(backend=backend_name, n_jobs=n_jobs, **kw), X, y)
    np.testing.assert_allclose(got._params, ref._params, rtol=2e-3, atol=2e-4)


def test_dropout_bits_do_not_depend_on_the_thread_count(backend_name):
    skip_unless_thread_invariant(backend_name)
    X, y = _data(n=500, d=40)
    kw = dict(hidden_layer_sizes=(200, 70), dropout=0.5, max_norm=2.0, max_iter=2,
              random_state=1, backend=backend_name)
    one = _fit(FastMLP(n_jobs=1, **kw), X, y)
    two = _fit(FastMLP(n_jobs=2, **kw), X, y)
    np.testing.assert_array_equal(one._params, two._params)


@pytest.mark.parametrize("estimator", [FastMLP, FastMLPRegressor])
def test_dropout_trains_and_predicts_with_every_unit(backend_name, estimator):
    X, y = _data()
    model = _fit(estimator(hidden_layer_sizes=(128,), dropout=0.5, max_iter=15,
                           random_state=0, backend=backend_name), X, y)
    assert model.score(X, y) > (0.85 if estimator is FastMLP else 0.5)
    # prediction is deterministic: no unit is dropped there
    np.testing.assert_array_equal(model.predict(X), model.predict(X))
    # a different seed draws other masks, and so other weights
    other = _fit(estimator(hidden_layer_sizes=(128,), dropout=0.5, max_iter=15,
                           random_state=1, backend=backend_name), X, y)
    assert not np.allclose(other.coefs_[0], model.coefs_[0])


def test_dropout_is_checked():
    X, y = _data(n=50)
    with pytest.raises(ValueError, match=r"dropout must be in the range \[0.0, 1.0\); got 1.0"):
        FastMLP(dropout=1.0, backend="numpy").fit(X, y)
    with pytest.raises(ValueError, match="solver='lbfgs' minimises one fixed loss"):
        FastMLP(dropout=0.2, solver="lbfgs", backend="numpy").fit(X, y)
