"""Property-based tests: every kernel of every compiled backend against the NumPy
reference on random shapes (1 to 300 rows, odd widths), random values and both dtypes."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmlp.backends import get_backend
from fastmlp.backends.codes import ACTIVATIONS, ADAM, OUTPUTS, SGD, Target, optimizer_step
from fastmlp.backends.layout import n_params

REFERENCE = get_backend("numpy")
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
rows = st.integers(1, 300)
widths = st.integers(1, 37)
seeds = st.integers(0, 2**32 - 1)
activations = st.sampled_from(sorted(ACTIVATIONS.values()))


def _arrays(seed, dtype, *shapes, scale=1.0, sparse=False):
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        a = rng.standard_normal(shape) * scale
        if sparse:
            a[rng.random(shape) < 0.6] = 0  # zero inputs take a separate path in numba
        out.append(np.ascontiguousarray(a, dtype=dtype))
    return out


def _close(actual, expected, tol, scale=1.0):
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


@SETTINGS
@given(n=rows, n_in=widths, n_out=widths, act=activations, seed=seeds, sparse=st.booleans())
def test_linear_forward(compiled_backend, dtype, tol, n, n_in, n_out, act, seed, sparse):
    (x,) = _arrays(seed, dtype, (n, n_in), sparse=sparse)
    w, b = _arrays(seed + 1, dtype, (n_in, n_out), (n_out,), scale=0.3)
    got, want = (np.empty((n, n_out), dtype) for _ in range(2))
    compiled_backend.linear_forward(got, x, w, b, act)
    REFERENCE.linear_forward(want, x, w, b, act)
    _close(got, want, tol, scale=np.sqrt(n_in))


@SETTINGS
@given(n=rows, n_in=widths, n_out=widths, seed=seeds, with_dx=st.booleans(),
       alpha=st.sampled_from([0.0, 1e-4, 0.5]))
def test_linear_backward(compiled_backend, dtype, tol, n, n_in, n_out, seed, with_dx, alpha):
    delta, x, w = _arrays(seed, dtype, (n, n_out), (n, n_in), (n_in, n_out))
    results = []
    for impl in (compiled_backend, REFERENCE):
        dw, db = np.empty((n_in, n_out), dtype), np.empty(n_out, dtype)
        dx = np.empty((n, n_in) if with_dx else (0, 0), dtype)
        impl.linear_backward(dw, db, dx, delta, x, w, alpha / n)
        results.append((dw, db, dx))
    for got, want in zip(*results):
        _close(got, want, tol, scale=np.sqrt(max(n, n_out)))


@SETTINGS
@given(n=rows, width=widths, act=activations, seed=seeds)
def test_activation_backward(compiled_backend, dtype, tol, n, width, act, seed):
    delta, z = _arrays(seed, dtype, (n, width), (n, width))
    a = np.empty_like(z)
    REFERENCE.linear_forward(a, z, np.eye(width, dtype=dtype), np.zeros(width, dtype), act)
    got, want = delta.copy(), delta.copy()
    compiled_backend.activation_backward(got, a, act)
    REFERENCE.activation_backward(want, a, act)
    _close(got, want, tol)


@SETTINGS
@given(n=rows, k=st.integers(1, 23), seed=seeds, scale=st.sampled_from([0.1, 3.0, 30.0]))
def test_softmax_cross_entropy(compiled_backend, dtype, tol, n, k, seed, scale):
    (logits,) = _arrays(seed, dtype, (n, k), scale=scale)
    y = np.random.default_rng(seed).integers(0, k, n).astype(np.int64)
    out = []
    for impl in (compiled_backend, REFERENCE):
        probs, delta = np.empty_like(logits), np.empty_like(logits)
        loss, hits = impl.softmax_xent_forward(probs, logits, y)
        impl.softmax_xent_backward(delta, probs, y)
        out.append((loss, hits, probs, delta))
    (loss, hits, probs, delta), (r_loss, r_hits, r_probs, r_delta) = out
    assert hits == r_hits
    np.testing.assert_allclose(loss, r_loss, rtol=tol["rtol"] * 10, atol=tol["atol"] * n)
    _close(probs, r_probs, tol)
    _close(delta, r_delta, tol)


@SETTINGS
@given(size=st.integers(1, 5000), seed=seeds, solver=st.sampled_from([ADAM, SGD]),
       nesterov=st.booleans())
def test_optimizer_updates(compiled_backend, dtype, tol, size, seed, solver, nesterov):
    p0, g, m0, v0 = _arrays(seed, dtype, size, size, size, size, scale=0.1)
    v0 = np.abs(v0)
    out = []
    for impl in (compiled_backend, REFERENCE):
        p, m, v = p0.copy(), m0.copy(), v0.copy()
        if solver == ADAM:
            impl.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8)
        else:
            impl.sgd_update(p, g, m, 0.05, 0.9, nesterov)
        out.append((p, m, v))
    for got, want in zip(*out):
        _close(got, want, tol)


def _network(data, n_in):
    hidden = data.draw(st.lists(st.integers(1, 19), min_size=0, max_size=3))
    k = data.draw(st.integers(2, 11))
    return np.array([n_in, *hidden, k], dtype=np.int64)


@SETTINGS
@given(n=rows, n_in=widths, seed=seeds, act=activations, data=st.data())
def test_predict_proba(compiled_backend, dtype, tol, n, n_in, seed, act, data):
    sizes = _network(data, n_in)
    (X,) = _arrays(seed, dtype, (n, n_in), sparse=True)
    (params,) = _arrays(seed + 1, dtype, n_params(sizes), scale=0.3)
    got, want = (np.empty((n, sizes[-1]), dtype) for _ in range(2))
    compiled_backend.predict_proba(got, X, params, sizes, act)
    REFERENCE.predict_proba(want, X, params, sizes, act)
    _close(got, want, tol)


@SETTINGS
@given(n=rows, n_in=widths, seed=seeds, act=activations, data=st.data(),
       alpha=st.sampled_from([0.0, 1e-3]))
def test_loss_and_grad(compiled_backend, dtype, tol, n, n_in, seed, act, data, alpha):
    sizes = _network(data, n_in)
    (X,) = _arrays(seed, dtype, (n, n_in), sparse=True)
    (params,) = _arrays(seed + 1, dtype, n_params(sizes), scale=0.3)
    y = np.random.default_rng(seed).integers(0, sizes[-1], n).astype(np.int64)
    got, want = np.empty_like(params), np.empty_like(params)
    loss = compiled_backend.loss_and_grad(got, params, sizes, act, X, y, alpha)
    r_loss = REFERENCE.loss_and_grad(want, params, sizes, act, X, y, alpha)
    np.testing.assert_allclose(loss, r_loss, rtol=tol["rtol"] * 10, atol=tol["atol"])
    _close(got, want, tol)


@SETTINGS
@given(n=rows, n_in=widths, seed=seeds, act=activations, data=st.data(),
       batch=st.integers(1, 64))
def test_train_epoch_sgd(compiled_backend, dtype, tol, n, n_in, seed, act, data, batch):
    # SGD: unlike Adam, it does not amplify rounding differences in near-zero gradients
    sizes = _network(data, n_in)
    (X,) = _arrays(seed, dtype, (n, n_in), sparse=True)
    (p0,) = _arrays(seed + 1, dtype, n_params(sizes), scale=0.3)
    y = np.random.default_rng(seed).integers(0, sizes[-1], n).astype(np.int64)
    order = np.random.default_rng(seed + 2).permutation(n).astype(np.int64)
    out = []
    for impl in (compiled_backend, REFERENCE):
        p, g, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), p0[:0].copy()
        loss, hits, _ = impl.train_epoch(p, g, m, v, sizes, act, impl.prepare_inputs(X), y,
                                         order, batch, 1e-4,
                                         optimizer_step(SGD, 0.01), 0)
        out.append((loss, hits, p))
    (loss, hits, p), (r_loss, r_hits, r_p) = out
    np.testing.assert_allclose(loss, r_loss, rtol=tol["rtol"] * 10, atol=tol["atol"] * n)
    _close(p, r_p, tol, scale=10)


@SETTINGS
@given(n=rows, n_in=widths, seed=seeds, act=activations, data=st.data(),
       output=st.sampled_from(sorted(OUTPUTS.values())), weighted=st.booleans())
def test_loss_and_grad_every_output(compiled_backend, dtype, tol, n, n_in, seed, act, data,
                                    output, weighted):
    sizes = _network(data, n_in)
    k = int(sizes[-1])
    (X,) = _arrays(seed, dtype, (n, n_in), sparse=True)
    (params,) = _arrays(seed + 1, dtype, n_params(sizes), scale=0.3)
    rng = np.random.default_rng(seed)
    labels, values = np.empty(0, dtype=np.int64), np.empty((0, k), dtype=dtype)
    if output == OUTPUTS["softmax"]:
        labels = rng.integers(0, k, n).astype(np.int64)
    else:
        values = np.ascontiguousarray(rng.poisson(1.0, (n, k)).clip(0, 1)
                                      if output == OUTPUTS["logistic"]
                                      else rng.poisson(1.0, (n, k)), dtype=dtype)
    weights = (rng.uniform(0, 2, n) if weighted else np.empty(0)).astype(dtype)
    target = Target(output, labels, values, weights)
    got, want = np.empty_like(params), np.empty_like(params)
    loss = compiled_backend.loss_and_grad(got, params, sizes, act, X, target, 1e-3)
    r_loss = REFERENCE.loss_and_grad(want, params, sizes, act, X, target, 1e-3)
    np.testing.assert_allclose(loss, r_loss, rtol=tol["rtol"] * 10, atol=tol["atol"])
    _close(got, want, tol)
