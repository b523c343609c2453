"""Per-kernel benchmarks: one group per kernel and shape, one row per backend.

Run: pytest benchmarks --benchmark-only --benchmark-group-by=group
"""

import numpy as np
import pytest

from fastmlp.backends import get_backend
from fastmlp.backends._common import ADAM, IDENTITY, RELU, n_params

from .conftest import record

BATCHES = [64, 256]
SIZES = np.array([784, 128, 10], dtype=np.int64)
P = n_params(SIZES)


@pytest.fixture(scope="module")
def mnist_rows():
    from fastmlp import load_mnist

    (X, y), _ = load_mnist()
    return X[:1024].copy(), y[:1024].copy()


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(P) * 0.05).astype(dtype)


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layer", ["784x128-relu", "128x10-identity"])
def test_linear_forward(benchmark, backend, mnist_rows, gemm_gflops, batch, layer):
    dtype = np.float32
    rng = np.random.default_rng(1)
    if layer.startswith("784"):
        x = mnist_rows[0][:batch]
        n_in, n_out, act = 784, 128, RELU
    else:
        x = rng.random((batch, 128), dtype=np.float32)
        n_in, n_out, act = 128, 10, IDENTITY
    w = (rng.standard_normal((n_in, n_out)) * 0.05).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    out = np.empty((batch, n_out), dtype=dtype)
    ref = np.empty_like(out)
    get_backend("numpy").linear_forward(ref, x, w, b, act)
    backend.linear_forward(out, x, w, b, act)  # warm up (compiles JIT backends)
    benchmark.group = f"linear_forward {layer} batch={batch}"
    benchmark(backend.linear_forward, out, x, w, b, act)
    record(benchmark, dtype=dtype, flops=2 * batch * n_in * n_out, gemm=gemm_gflops,
           max_error=_max_err(out, ref))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layer", ["784x128-no-dx", "128x10-with-dx"])
def test_linear_backward(benchmark, backend, mnist_rows, gemm_gflops, batch, layer):
    dtype = np.float32
    rng = np.random.default_rng(2)
    if layer.startswith("784"):
        x, n_in, n_out = mnist_rows[0][:batch], 784, 128
        dx = np.empty((0, 0), dtype=dtype)
    else:
        x, n_in, n_out = rng.random((batch, 128), dtype=np.float32), 128, 10
        dx = np.empty((batch, 128), dtype=dtype)
    w = (rng.standard_normal((n_in, n_out)) * 0.05).astype(dtype)
    delta = (rng.standard_normal((batch, n_out)) / batch).astype(dtype)
    dw, db = np.empty((n_in, n_out), dtype=dtype), np.empty(n_out, dtype=dtype)
    ref_dw, ref_db, ref_dx = np.empty_like(dw), np.empty_like(db), np.empty_like(dx)
    get_backend("numpy").linear_backward(ref_dw, ref_db, ref_dx, delta, x, w, 1e-4 / batch)
    backend.linear_backward(dw, db, dx, delta, x, w, 1e-4 / batch)
    benchmark.group = f"linear_backward {layer} batch={batch}"
    benchmark(backend.linear_backward, dw, db, dx, delta, x, w, 1e-4 / batch)
    products = 1 if dx.size == 0 else 2
    err = max(_max_err(dw, ref_dw), _max_err(db, ref_db), _max_err(dx, ref_dx) if dx.size else 0)
    record(benchmark, dtype=dtype, flops=2 * products * batch * n_in * n_out, gemm=gemm_gflops,
           max_error=err)


@pytest.mark.parametrize("batch", BATCHES)
def test_softmax_xent(benchmark, backend, batch):
    dtype = np.float32
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((batch, 10)) * 3).astype(dtype)
    y = rng.integers(0, 10, batch).astype(np.int64)
    probs, delta = np.empty_like(logits), np.empty_like(logits)
    ref_p, ref_d = np.empty_like(logits), np.empty_like(logits)
    numpy_backend = get_backend("numpy")
    numpy_backend.softmax_xent_forward(ref_p, logits, y)
    numpy_backend.softmax_xent_backward(ref_d, ref_p, y)

    def step():
        backend.softmax_xent_forward(probs, logits, y)
        backend.softmax_xent_backward(delta, probs, y)

    step()
    benchmark.group = f"softmax_xent forward+backward batch={batch}"
    benchmark(step)
    record(benchmark, dtype=dtype, max_error=max(_max_err(probs, ref_p), _max_err(delta, ref_d)))


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_optimizer_update(benchmark, backend, solver):
    dtype = np.float32
    rng = np.random.default_rng(4)
    param0 = _params(dtype)
    grad = (rng.standard_normal(P) * 1e-2).astype(dtype)
    states = {}
    for impl in (get_backend("numpy"), backend):
        param, m, v = param0.copy(), np.zeros(P, dtype), np.zeros(P, dtype)
        if solver == "adam":
            impl.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8)
        else:
            impl.sgd_update(param, grad, m, 1e-2, 0.9, True)
        states[impl.NAME] = param
    param, m, v = param0.copy(), np.zeros(P, dtype), np.zeros(P, dtype)
    benchmark.group = f"{solver}_update 784-128-10 ({P} parameters)"
    if solver == "adam":
        benchmark(backend.adam_update, param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8)
    else:
        benchmark(backend.sgd_update, param, grad, m, 1e-2, 0.9, True)
    record(benchmark, dtype=dtype,
           max_error=_max_err(states[backend.NAME], states["numpy"]))


@pytest.mark.parametrize("batch", BATCHES)
def test_train_epoch(benchmark, backend, mnist, gemm_gflops, batch):
    """One MNIST epoch (60,000 rows) of 784-128-10 with Adam."""
    (X, y), _ = mnist
    dtype = np.float32
    order = np.random.default_rng(5).permutation(X.shape[0]).astype(np.int64)

    def fresh():
        p = _params(dtype)
        return (p, np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)), {}

    data = backend.prepare_inputs(X)  # once per fit, outside the timed epoch

    def run(p, g, m, v):
        return backend.train_epoch(p, g, m, v, SIZES, RELU, data, y, order, batch, 1e-4, ADAM,
                                   2e-3, 0.9, True, 0.9, 0.999, 1e-8, 0)

    run(*fresh()[0])  # warm up
    benchmark.group = f"train_epoch MNIST 784-128-10 adam batch={batch}"
    result = benchmark.pedantic(run, setup=fresh, rounds=5, iterations=1)
    # forward (2 products), dW of both layers, dX of the second: 2 flops per multiply-add
    flops = 2 * X.shape[0] * (784 * 128 + 128 * 10) * 2 + 2 * X.shape[0] * 128 * 10
    record(benchmark, dtype=dtype, flops=flops, gemm=gemm_gflops,
           train_loss=result[0] / X.shape[0], train_accuracy=result[1] / X.shape[0])


@pytest.fixture(scope="session")
def mnist():
    from fastmlp import load_mnist

    return load_mnist()
