"""Every kernel of every backend against the loop-by-loop oracle in naive.py, and the
composite kernels (train_epoch, predict_proba) against the NumPy reference backend."""

import numpy as np
import pytest

from fastmlp.backends.codes import (
    ACTIVATIONS,
    ADAM,
    CONSTANT,
    COSINE,
    EXP,
    IDENTITY,
    LINEAR,
    LOGISTIC,
    RELU,
    SGD,
    SOFTMAX,
    Target,
    optimizer_step,
    scheduled_lr,
)
from fastmlp.backends.layout import n_params

from . import naive

SHAPES = [(1, 1, 1), (3, 5, 2), (7, 13, 10), (17, 33, 9)]


def rand(rng, shape, dtype, scale=1.0):
    return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)


@pytest.mark.parametrize("act_name", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_forward(backend, dtype, tol, act_name, shape):
    n, n_in, n_out = shape
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, (n, n_in), dtype), rand(rng, (n_in, n_out), dtype), rand(rng, n_out, dtype)
    out = np.full((n, n_out), np.nan, dtype=dtype)
    backend.linear_forward(out, x, w, b, ACTIVATIONS[act_name])
    np.testing.assert_allclose(out, naive.linear_forward(x, w, b, ACTIVATIONS[act_name]), **tol)


@pytest.mark.parametrize("act_name", list(ACTIVATIONS))
def test_activation_backward(backend, dtype, tol, act_name):
    rng = np.random.default_rng(2)
    act = ACTIVATIONS[act_name]
    z = rand(rng, (6, 11), dtype)
    a = naive.linear_forward(z, np.eye(11), np.zeros(11), act).astype(dtype)
    delta = rand(rng, (6, 11), dtype)
    expected = naive.activation_backward(delta, a, act)
    backend.activation_backward(delta, a, act)
    np.testing.assert_allclose(delta, expected, **tol)


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (5, 2), (9, 10)], ids=str)
def test_softmax_xent_forward_and_backward(backend, dtype, tol, shape):
    n, k = shape
    rng = np.random.default_rng(3)
    logits = rand(rng, (n, k), dtype, scale=4.0)
    y = rng.integers(0, k, n).astype(np.int64)
    expected_probs, expected_loss, expected_correct = naive.softmax_xent(logits, y)
    probs = np.empty_like(logits)
    loss, correct = backend.softmax_xent_forward(probs, logits, y)
    np.testing.assert_allclose(probs, expected_probs, **tol)
    np.testing.assert_allclose(loss, expected_loss, **tol)
    assert correct == expected_correct
    delta = np.empty_like(probs)
    backend.softmax_xent_backward(delta, probs, y)
    np.testing.assert_allclose(delta, naive.softmax_xent_backward(probs, y), **tol)


def test_softmax_xent_in_place_and_extreme_logits(backend, dtype):
    logits = np.array([[1000.0, 0.0, -1000.0], [-50.0, -50.0, -50.0]], dtype=dtype)
    y = np.array([0, 2], dtype=np.int64)
    loss, correct = backend.softmax_xent_forward(logits, logits, y)
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(logits.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-5)
    assert correct == 1


@pytest.mark.parametrize("alpha_n", [0.0, 0.3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_backward(backend, dtype, tol, shape, alpha_n):
    n, n_in, n_out = shape
    rng = np.random.default_rng(4)
    x, w = rand(rng, (n, n_in), dtype), rand(rng, (n_in, n_out), dtype)
    delta = rand(rng, (n, n_out), dtype)
    dw, db, dx = (np.full(s, np.nan, dtype=dtype) for s in ((n_in, n_out), n_out, (n, n_in)))
    backend.linear_backward(dw, db, dx, delta, x, w, alpha_n)
    exp_dw, exp_db, exp_dx = naive.linear_backward(delta, x, w, alpha_n)
    np.testing.assert_allclose(dw, exp_dw, **tol)
    np.testing.assert_allclose(db, exp_db, **tol)
    np.testing.assert_allclose(dx, exp_dx, **tol)


def test_linear_backward_skips_input_gradient(backend, dtype, tol):
    rng = np.random.default_rng(5)
    x, w, delta = rand(rng, (4, 3), dtype), rand(rng, (3, 2), dtype), rand(rng, (4, 2), dtype)
    dw, db = np.empty((3, 2), dtype=dtype), np.empty(2, dtype=dtype)
    backend.linear_backward(dw, db, np.empty((0, 0), dtype=dtype), delta, x, w, 0.0)
    np.testing.assert_allclose(dw, naive.linear_backward(delta, x, w, 0.0)[0], **tol)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update(backend, dtype, tol, nesterov):
    rng = np.random.default_rng(6)
    param, grad, velocity = rand(rng, 37, dtype), rand(rng, 37, dtype), rand(rng, 37, dtype)
    exp_param, exp_velocity = naive.sgd_update(param, grad, velocity, 0.1, 0.9, nesterov)
    backend.sgd_update(param, grad, velocity, 0.1, 0.9, nesterov)
    np.testing.assert_allclose(param, exp_param, **tol)
    np.testing.assert_allclose(velocity, exp_velocity, **tol)


@pytest.mark.parametrize("keep", [None, 0.75])  # None: the default, no decay (AdamW's: 0.75)
def test_adam_update(backend, dtype, tol, keep):
    rng = np.random.default_rng(7)
    param, grad, m = rand(rng, 37, dtype), rand(rng, 37, dtype), rand(rng, 37, dtype)
    v = np.abs(rand(rng, 37, dtype))
    exp = naive.adam_update(param, grad, m, v, 0.01, 0.9, 0.999, 1e-8, keep or 1.0)
    extra = () if keep is None else (keep,)
    backend.adam_update(param, grad, m, v, 0.01, 0.9, 0.999, 1e-8, *extra)
    for got, want in zip((param, m, v), exp):
        np.testing.assert_allclose(got, want, **tol)


def _problem(dtype, layer_sizes, n=50, seed=8):
    rng = np.random.default_rng(seed)
    X = rand(rng, (n, layer_sizes[0]), dtype)
    y = rng.integers(0, layer_sizes[-1], n).astype(np.int64)
    params = rand(rng, n_params(layer_sizes), dtype, scale=0.3)
    return X, y, params, np.asarray(layer_sizes, dtype=np.int64)


@pytest.mark.parametrize("solver", [SGD, ADAM], ids=["sgd", "adam"])
# (20, 130, 19): more classes than one vector holds, hidden units split unevenly between
# threads, and first-layer rows wider than one register panel with columns left over
@pytest.mark.parametrize("layer_sizes", [(5, 3), (6, 8, 4), (7, 9, 5, 3, 2), (20, 130, 19)],
                         ids=str)
def test_train_epoch_matches_reference(compiled_backend, reference, dtype, tol, solver,
                                       layer_sizes):
    X, y, params, sizes = _problem(dtype, layer_sizes)
    results = []
    for impl in (reference, compiled_backend):
        p = params.copy()
        g = np.zeros_like(p)
        m = np.zeros_like(p)
        v = np.zeros_like(p) if solver == ADAM else np.zeros(0, dtype=dtype)
        order = np.random.default_rng(9).permutation(X.shape[0]).astype(np.int64)
        loss, correct, t = impl.train_epoch(p, g, m, v, sizes, RELU, X, y, order, 16, 1e-3,
                                            optimizer_step(solver, 0.01), 0)
        results.append((p, loss, correct, t))
    (p_ref, loss_ref, correct_ref, t_ref), (p, loss, correct, t) = results
    assert t == t_ref == (4 if solver == ADAM else 0)
    assert correct == correct_ref
    np.testing.assert_allclose(loss, loss_ref, **tol)
    np.testing.assert_allclose(p, p_ref, **tol)
    assert not np.allclose(p_ref, params), "an epoch must change the parameters"


def test_train_epoch_reduces_loss(backend, dtype):
    X, _, params, sizes = _problem(dtype, (6, 16, 3), n=120)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    g, m, v = np.zeros_like(params), np.zeros_like(params), np.zeros_like(params)
    order = np.arange(120, dtype=np.int64)
    losses = []
    t = 0
    for _ in range(30):
        loss, _, t = backend.train_epoch(params, g, m, v, sizes, RELU, X, y, order, 20, 0.0,
                                         optimizer_step(ADAM, 0.01), t)
        losses.append(loss / 120)
    assert t == 30 * 6
    assert losses[-1] < 0.5 * losses[0]


# one row (the serial path) and 300 (rows split between threads) by default
@pytest.mark.parametrize("n", [1, pytest.param(23, marks=pytest.mark.exhaustive), 300])
# more classes than one vector holds (16 float32, 8 float64), with and without hidden
# layers, top layers whose width is not a multiple of the vector sums' interleave, and a
# first layer wider than one register panel (64 float32, 32 float64) with columns left
@pytest.mark.parametrize("layer_sizes", [(5, 3), (6, 8, 4), (7, 9, 5, 3, 2), (12, 18),
                                         (30, 70, 21)], ids=str)
@pytest.mark.parametrize("act_name", list(ACTIVATIONS))
def test_predict_proba_matches_forward(backend, dtype, tol, layer_sizes, act_name, n):
    X, _, params, sizes = _problem(dtype, layer_sizes, n=n)
    X[X < -0.5] = 0  # zero inputs take the sparse path
    act = ACTIVATIONS[act_name]
    out = np.empty((n, layer_sizes[-1]), dtype=dtype)
    backend.predict_proba(out, X, params, sizes, act)
    h = X.astype(np.float64)
    pos = 0
    for i, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        w = params[pos : pos + n_in * n_out].reshape(n_in, n_out)
        b = params[pos + n_in * n_out : pos + n_in * n_out + n_out]
        pos += n_in * n_out + n_out
        h = naive.linear_forward(h, w, b, IDENTITY if i == len(layer_sizes) - 2 else act)
    probs, _, _ = naive.softmax_xent(h, np.zeros(n, dtype=np.int64))
    np.testing.assert_allclose(out, probs, **tol)
    # without the softmax: the logits themselves (what predict takes the arg-max of)
    logits = np.full_like(out, np.nan)
    backend.predict_proba(logits, X, params, sizes, act, output=IDENTITY)
    np.testing.assert_allclose(logits, h, **tol)
    assert not np.allclose(logits, out), "logits must differ from probabilities"


_BLOCK = 256  # numba's PREDICT_BLOCK (test_predict_block_size)


def test_predict_block_size():
    from fastmlp.backends.numba_backend.predict import PREDICT_BLOCK

    # the rows of the block tests below are placed by it
    assert PREDICT_BLOCK == _BLOCK


@pytest.mark.parametrize("bad_row", [0, _BLOCK + 2, 3 * _BLOCK - 1])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_predict_refuses_a_non_finite_row_in_any_block(backend, bad_row, bad):
    """Deep networks predict in blocks of rows (numba: PREDICT_BLOCK); a bad row in the
    first block, in a thread's second (short) block or in the last is found, whichever
    thread has it."""
    if not getattr(backend, "CHECKS_FINITE_INPUT", False):
        pytest.skip("this backend leaves the check of X to the estimator")
    n = 3 * _BLOCK
    X, _, params, sizes = _problem(np.float32, (7, 9, 5, 3, 2), n=n)
    X[bad_row, 3] = bad
    out = np.empty((n, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="NaN or infinity"):
        backend.predict_proba(out, X, params, sizes, RELU)


@pytest.mark.parametrize("schedule", [COSINE, LINEAR], ids=["cosine", "linear"])
@pytest.mark.parametrize("solver", [SGD, ADAM], ids=["sgd", "adam"])
def test_train_epoch_schedules_match_reference(compiled_backend, reference, dtype, tol,
                                               solver, schedule):
    X, y, params, sizes = _problem(dtype, (20, 130, 19))
    results = []
    for impl in (reference, compiled_backend):
        p, g, m = params.copy(), np.zeros_like(params), np.zeros_like(params)
        v = np.zeros_like(p) if solver == ADAM else np.zeros(0, dtype=dtype)
        order = np.random.default_rng(9).permutation(X.shape[0]).astype(np.int64)
        # the epoch starts a third of the way into a schedule of 150 samples
        opt = optimizer_step(solver, 0.02, schedule=schedule, seen=50, horizon=150)
        impl.train_epoch(p, g, m, v, sizes, RELU, impl.prepare_inputs(X), y, order, 16, 1e-3,
                         opt, 0)
        results.append(p)
    np.testing.assert_allclose(results[1], results[0], **tol)
    constant = params.copy()
    reference.train_epoch(constant, np.zeros_like(params), np.zeros_like(params),
                          np.zeros_like(params) if solver == ADAM else np.zeros(0, dtype),
                          sizes, RELU, X, y,
                          np.random.default_rng(9).permutation(X.shape[0]).astype(np.int64),
                          16, 1e-3, optimizer_step(solver, 0.02), 0)
    assert not np.allclose(results[0], constant), "a decayed rate must change the epoch"


def test_scheduled_lr():
    assert scheduled_lr(0.1, CONSTANT, 70, 100) == 0.1
    assert scheduled_lr(0.1, COSINE, 0, 100) == 0.1
    assert scheduled_lr(0.1, COSINE, 50, 100) == pytest.approx(0.05)
    assert scheduled_lr(0.1, COSINE, 100, 100) == pytest.approx(0.0, abs=1e-18)
    assert scheduled_lr(0.1, LINEAR, 25, 100) == pytest.approx(0.075)
    assert scheduled_lr(0.1, LINEAR, 300, 100) == 0.0  # past the horizon


# ------------------------------------------------------------ output functions and weights

OUTPUT_CASES = {"softmax": SOFTMAX, "logistic": LOGISTIC, "identity": IDENTITY, "exp": EXP}


def _target(output, n, k, dtype, weighted, seed=5):
    """A Target of n rows for an output of k units: labels, 0/1 indicators, values or
    counts, with weights from 0 to 2 (a few exactly 0) when weighted."""
    rng = np.random.default_rng(seed)
    labels = np.empty(0, dtype=np.int64)
    values = np.empty((0, k), dtype=dtype)
    if output == SOFTMAX:
        labels = rng.integers(0, k, n).astype(np.int64)
    elif output == LOGISTIC:
        values = rng.integers(0, 2, (n, k)).astype(dtype)
    elif output == EXP:
        values = rng.poisson(2.0, (n, k)).astype(dtype)
    else:
        values = rng.standard_normal((n, k)).astype(dtype)
    weights = np.empty(0, dtype=dtype)
    if weighted:
        weights = rng.uniform(0, 2, n).astype(dtype)
        weights[::7] = 0
    return Target(output, labels, values, weights)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("output", list(OUTPUT_CASES.values()), ids=list(OUTPUT_CASES))
@pytest.mark.parametrize("layer_sizes", [(5, 3), (6, 8, 4), (20, 130, 19)], ids=str)
def test_outputs_and_weights_match_reference(compiled_backend, reference, dtype, tol, output,
                                             weighted, layer_sizes):
    """train_epoch, loss_and_grad and predict_proba of every output function, with and
    without row weights, against the reference."""
    X, _, params, sizes = _problem(dtype, layer_sizes)
    n, k = X.shape[0], int(sizes[-1])
    target = _target(output, n, k, dtype, weighted)
    order = np.random.default_rng(9).permutation(n).astype(np.int64)
    results = []
    for impl in (reference, compiled_backend):
        grads = np.zeros_like(params)
        objective = impl.loss_and_grad(grads, params, sizes, RELU, X, target, 1e-2)
        p, g, m, v = params.copy(), *(np.zeros_like(params) for _ in range(3))
        loss, hits, _ = impl.train_epoch(p, g, m, v, sizes, RELU, impl.prepare_inputs(X),
                                         target, order, 16, 1e-3, optimizer_step(ADAM, 0.01),
                                         0)
        out = np.empty((n, k), dtype=dtype)
        impl.predict_proba(out, X, p, sizes, RELU, output=output)
        results.append((objective, grads, loss, hits, p, out))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    objective, _, loss, hits, p, out = results[0]
    assert np.isfinite(objective) and objective > 0 and loss > 0
    assert not np.allclose(p, params), "an epoch must change the parameters"
    if output in (IDENTITY, EXP):
        assert hits == 0  # no "right" prediction for regression
    if output == SOFTMAX:
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
    if output in (LOGISTIC, EXP):
        assert (out > 0).all()


@pytest.mark.float64
@pytest.mark.parametrize("output", list(OUTPUT_CASES.values()), ids=list(OUTPUT_CASES))
def test_row_weights_mean_what_scikit_learn_says(backend, output):
    """Weights scale each row's share of a weighted mean, whose L2 term is divided by the
    sum of the weights: weights of 1 change nothing, integer weights equal repeated rows
    (zero: absent rows)."""
    dtype = np.float64
    X, _, params, sizes = _problem(dtype, (6, 8, 4))
    n, k = X.shape[0], int(sizes[-1])
    base = _target(output, n, k, dtype, weighted=False)

    def objective(x, target):
        grads = np.zeros_like(params)
        return backend.loss_and_grad(grads, params, sizes, RELU, x, target, 1e-2), grads

    plain = objective(X, base)
    equal = objective(X, base._replace(weights=np.ones(n)))
    counts = np.arange(n) % 3  # 0, 1 or 2 copies of each row
    repeated_target = Target(output, np.repeat(base.labels, counts[:base.labels.size]),
                             np.repeat(base.values, counts[:base.values.shape[0]], axis=0),
                             np.empty(0))
    repeated = objective(np.repeat(X, counts, axis=0), repeated_target)
    weighted = objective(X, base._replace(weights=counts.astype(dtype)))
    for got, want in ((equal, plain), (weighted, repeated)):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-13)
    assert not np.allclose(weighted[1], plain[1])


@pytest.mark.parametrize("problem, match", [
    ("label out of range", "y must lie in"),
    ("values of the wrong shape", "target values must be"),
    ("NaN in values", "must be finite"),
    ("negative Poisson target", "must be >= 0"),
    ("negative weight", "weights must be finite and non-negative"),
    ("weights of the wrong length", "weights must be"),
])
def test_bad_targets_are_refused_before_compiled_code(backend, problem, match):
    X, y, params, sizes = _problem(np.float64, (5, 3))
    n, k = X.shape[0], int(sizes[-1])
    target = {
        "label out of range": Target(SOFTMAX, np.full(n, k, dtype=np.int64),
                                     np.empty((0, k)), np.empty(0)),
        "values of the wrong shape": Target(IDENTITY, y[:0], np.zeros((n, k + 1)),
                                            np.empty(0)),
        "NaN in values": Target(IDENTITY, y[:0], np.full((n, k), np.nan), np.empty(0)),
        "negative Poisson target": Target(EXP, y[:0], -np.ones((n, k)), np.empty(0)),
        "negative weight": Target(SOFTMAX, y, np.empty((0, k)), -np.ones(n)),
        "weights of the wrong length": Target(SOFTMAX, y, np.empty((0, k)), np.ones(n - 1)),
    }[problem]
    p, g, m, v = params.copy(), *(np.zeros_like(params) for _ in range(3))
    order = np.arange(n, dtype=np.int64)
    with pytest.raises(ValueError, match=match):
        backend.train_epoch(p, g, m, v, sizes, RELU, backend.prepare_inputs(X), target, order,
                            8, 0.0, optimizer_step(ADAM, 0.01), 0)
    with pytest.raises(ValueError, match=match):
        backend.loss_and_grad(g, params, sizes, RELU, X, target, 0.0)
    np.testing.assert_array_equal(p, params)


def test_adam_sets_moments_below_the_smallest_normal_float32_to_zero(backend, dtype):
    """codes.FLUSH_BELOW: a first moment that decays below 2**-126 becomes 0 instead of a
    subnormal float (slow on Intel CPUs); larger moments, and NaN, are left as they are."""
    from fastmlp.backends.codes import FLUSH_BELOW

    m = np.array([1.5e-38, -1.5e-38, 1e-30, 1.0, np.nan, 0.0], dtype=dtype)
    v = np.array([1e-36, 1e-30, 1e-30, 1.0, 1.0, 1.3e-38], dtype=dtype)
    grad = np.zeros_like(m)
    param = np.ones_like(m)
    backend.adam_update(param, grad, m, v, 1e-3, 0.5, 0.5, 1e-8)
    # m and v halve: 7.5e-39 and 6.5e-39 are below the line, 5e-31 and 5e-37 are not
    np.testing.assert_array_equal(m[[0, 1, 5]], 0)
    assert m[2] == dtype.type(5e-31) and m[3] == 0.5 and np.isnan(m[4])
    assert v[5] == 0 and v[0] == dtype.type(5e-37) and FLUSH_BELOW == 2.0**-126
    assert np.isfinite(param[:4]).all() and np.isnan(param[4])


@pytest.mark.parametrize("layer_sizes", [(12, 3), (12, 9, 3), (12, 9, 7, 3)], ids=str)
@pytest.mark.parametrize("solver", [SGD, ADAM], ids=["sgd", "adam"])
def test_numba_large_models_train_in_place_with_the_same_bits(monkeypatch, layer_sizes,
                                                                 solver):
    """A large model is put in the work layout in its own arrays (no working copies);
    forced on a small one, it must leave the same parameters and moments, in the flat
    layout (the gradient array is the epoch's scratch: it holds nothing afterwards)."""
    pytest.importorskip("numba")
    from fastmlp.backends import numba_backend
    from fastmlp.backends.numba_backend import workspace

    X, y, params, sizes = _problem(np.float32, layer_sizes, n=90)
    results = []
    for threshold in (workspace.IN_PLACE_BYTES, 0):
        monkeypatch.setattr(workspace, "IN_PLACE_BYTES", threshold)
        p, g = params.copy(), np.full_like(params, np.nan)
        m, v = np.zeros_like(p), (np.zeros_like(p) if solver == ADAM else p[:0].copy())
        order = np.random.default_rng(4).permutation(90).astype(np.int64)
        numba_backend.train_epoch(p, g, m, v, sizes, RELU, X, y, order, 16, 1e-3,
                                  optimizer_step(solver, 0.01), 0)
        results.append((p, m, v))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
