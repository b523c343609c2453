"""``fastmlp compare``: every kernel on every available backend, side by side, against the
machine's fp32 GEMM rate and the NumPy reference; then the MNIST fit against what users
would otherwise pick (scikit-learn's MLPClassifier, and PyTorch when it is installed).

The kernel cases are defined here once; the pytest-benchmark suite in benchmarks/ builds
its rows from the same definitions, so the two report the same measurements.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .backends import AUTO_ORDER, REFERENCE, available_backends, get_backend
from .backends.codes import ADAM, IDENTITY, RELU, optimizer_step
from .backends.layout import n_params
from .threads import blas_info, cpu_count, thread_limit

SIZES = np.array([784, 128, 10], dtype=np.int64)
N_PARAMS = n_params(SIZES)
LEARNING_RATE = 2e-3  # fastmlp's default, used for every library in the fit comparison
BLAS_PAUSE = 0.15  # seconds for OpenBLAS's idle threads to stop spinning (see kernel_rows)


@dataclass
class Case:
    """One kernel call on one shape: ``make(backend)`` returns (run, outputs), where run()
    calls the kernel and outputs() returns the arrays it computed, compared with the
    NumPy backend's on the same inputs."""

    kernel: str
    shape: str
    dtype: str
    batch: int | None
    flops: float | None
    make: Callable = field(repr=False)

    @property
    def group(self):
        batch = f" batch={self.batch}" if self.batch else ""
        return f"{self.kernel} {self.shape} {self.dtype}{batch}"


def _weights(rng, n_in, n_out, dtype):
    return (rng.standard_normal((n_in, n_out)) * 0.05).astype(dtype)


def _params(dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal(N_PARAMS) * 0.05).astype(dtype)


def _linear_forward_case(X, batch, dtype, wide):
    rng = np.random.default_rng(1)
    if wide:
        x, n_in, n_out, act, shape = X[:batch].astype(dtype), 784, 128, RELU, "784x128 relu"
    else:
        x = rng.random((batch, 128)).astype(dtype)
        n_in, n_out, act, shape = 128, 10, IDENTITY, "128x10 identity"
    w = _weights(rng, n_in, n_out, dtype)
    b = rng.standard_normal(n_out).astype(dtype)

    def make(backend):
        out = np.empty((batch, n_out), dtype=dtype)
        return (lambda: backend.linear_forward(out, x, w, b, act)), (lambda: [out])

    return Case("linear_forward", shape, np.dtype(dtype).name, batch,
                2.0 * batch * n_in * n_out, make)


def _linear_backward_case(X, batch, dtype, wide):
    rng = np.random.default_rng(2)
    if wide:
        x, n_in, n_out, shape = X[:batch].astype(dtype), 784, 128, "784x128 no-dx"
        dx_shape = (0, 0)
    else:
        x, n_in, n_out, shape = rng.random((batch, 128)).astype(dtype), 128, 10, "128x10 with-dx"
        dx_shape = (batch, 128)
    w = _weights(rng, n_in, n_out, dtype)
    delta = (rng.standard_normal((batch, n_out)) / batch).astype(dtype)
    alpha_n = 1e-4 / batch
    products = 1 if wide else 2

    def make(backend):
        dw, db = np.empty((n_in, n_out), dtype=dtype), np.empty(n_out, dtype=dtype)
        dx = np.empty(dx_shape, dtype=dtype)
        return ((lambda: backend.linear_backward(dw, db, dx, delta, x, w, alpha_n)),
                (lambda: [dw, db, dx]))

    return Case("linear_backward", shape, np.dtype(dtype).name, batch,
                2.0 * products * batch * n_in * n_out, make)


def _softmax_case(batch, dtype):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((batch, 10)) * 3).astype(dtype)
    y = rng.integers(0, 10, batch).astype(np.int64)

    def make(backend):
        probs, delta = np.empty_like(logits), np.empty_like(logits)

        def run():
            backend.softmax_xent_forward(probs, logits, y)
            backend.softmax_xent_backward(delta, probs, y)

        return run, (lambda: [probs, delta])

    return Case("softmax_xent", f"{batch}x10 fwd+bwd", np.dtype(dtype).name, batch, None, make)


def _update_case(solver, dtype):
    grad = (np.random.default_rng(4).standard_normal(N_PARAMS) * 1e-2).astype(dtype)

    def make(backend):
        param, m, v = _params(dtype), np.zeros(N_PARAMS, dtype), np.zeros(N_PARAMS, dtype)
        if solver == "adam":
            def run():
                backend.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8)
        else:
            def run():
                backend.sgd_update(param, grad, m, 1e-2, 0.9, True)
        # outputs compare the first step from the same start (the timed calls go on)
        first = _params(dtype), np.zeros(N_PARAMS, dtype), np.zeros(N_PARAMS, dtype)
        if solver == "adam":
            backend.adam_update(first[0], grad, first[1], first[2], 1e-3, 0.9, 0.999, 1e-8)
        else:
            backend.sgd_update(first[0], grad, first[1], 1e-2, 0.9, True)
        return run, (lambda: [first[0]])

    return Case(f"{solver}_update", f"{N_PARAMS} params", np.dtype(dtype).name, None, None,
                make)


def _epoch_case(X, y, batch, dtype):
    # X already of dtype (shared by the cases of one dtype: MNIST is 188 MB in float32)
    n = X.shape[0]
    order = np.random.default_rng(5).permutation(n).astype(np.int64)
    # forward (both layers), both weight gradients, the second layer's input gradient
    flops = 2.0 * n * (2 * (784 * 128 + 128 * 10) + 128 * 10)

    def make(backend):
        data = backend.prepare_inputs(X)  # once per fit, outside the timing

        def epoch(state):
            p, g, m, v = state
            backend.train_epoch(p, g, m, v, SIZES, RELU, data, y, order, batch, 1e-4,
                                optimizer_step(ADAM, LEARNING_RATE), 0)

        first = [_params(dtype)] + [np.zeros(N_PARAMS, dtype) for _ in range(3)]
        epoch(first)
        state = [_params(dtype)] + [np.zeros(N_PARAMS, dtype) for _ in range(3)]
        return (lambda: epoch(state)), (lambda: [first[0]])

    return Case("train_epoch", f"MNIST {n} rows 784-128-10 adam", np.dtype(dtype).name, batch,
                flops, make)


def _predict_case(X_test, dtype):
    params = _params(dtype)
    n = X_test.shape[0]

    def make(backend):
        out = np.empty((n, 10), dtype=dtype)
        return (lambda: backend.predict_proba(out, X_test, params, SIZES, RELU)), (lambda: [out])

    return Case("predict_proba", f"{n} rows 784-128-10", np.dtype(dtype).name, None,
                2.0 * n * (784 * 128 + 128 * 10), make)


def kernel_cases(X, y, X_test, batches=(64, 256, 1024), dtypes=("float32", "float64"),
                 epoch_rows=None):
    """The kernel matrix: every kernel and shape, per dtype and batch size."""
    cases = []
    epoch_X, epoch_y = (X, y) if epoch_rows is None else (X[:epoch_rows], y[:epoch_rows])
    for dtype in map(np.dtype, dtypes):
        epoch_Xd = np.ascontiguousarray(epoch_X, dtype=dtype)
        test_Xd = np.ascontiguousarray(X_test, dtype=dtype)
        for batch in batches:
            cases += [_linear_forward_case(X, batch, dtype, True),
                      _linear_forward_case(X, batch, dtype, False),
                      _linear_backward_case(X, batch, dtype, True),
                      _linear_backward_case(X, batch, dtype, False),
                      _softmax_case(batch, dtype)]
        cases += [_update_case("adam", dtype), _update_case("sgd", dtype)]
        cases += [_epoch_case(epoch_Xd, epoch_y, batch, dtype) for batch in batches]
        cases.append(_predict_case(test_Xd, dtype))
    return cases


def max_abs_error(outputs, reference):
    """Largest absolute difference between two lists of arrays (0 for empty arrays)."""
    worst = 0.0
    for a, b in zip(outputs, reference):
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return worst


def median_time(run, min_time=0.2, min_repeats=3, max_repeats=200):
    """Median seconds of run() over repeats totalling at least min_time (after one
    unmeasured call, which compiles JIT backends and faults memory in)."""
    run()
    times = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < min_time):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gemm_gflops(n=2048, repeats=5):
    """fp32 GFLOP/s of an n x n NumPy matmul with the current thread settings."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------ the MNIST fits


def _fit_fastmlp(name, data, epochs, threads, hidden=(128,), batch=64, predict_repeats=0,
                 regression=False):
    """(seconds of the fit, test accuracy or R^2), or with predict_repeats (seconds of
    the fit, median seconds of predict_proba, or predict, on the test rows)."""
    from .estimator import FastMLP
    from .regressor import FastMLPRegressor
    (X, y), (X_test, y_test) = data
    estimator = FastMLPRegressor if regression else FastMLP
    clf = estimator(hidden_layer_sizes=hidden, batch_size=batch, solver="adam",
                    max_iter=epochs, learning_rate_init=LEARNING_RATE,
                    n_iter_no_change=epochs + 1, random_state=0, backend=name,
                    n_jobs=threads)
    estimator(hidden_layer_sizes=hidden, max_iter=1, backend=name,
              n_jobs=threads).fit(X[:256], y[:256])  # compile, fault in pages
    start = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - start
    if predict_repeats:
        method = clf.predict if regression else clf.predict_proba
        return seconds, _predict_seconds(lambda: method(X_test), predict_repeats)
    return seconds, clf.score(X_test, y_test)


def _predict_seconds(predict, repeats):
    """Median seconds of ``predict`` over ``repeats`` calls after one not timed."""
    predict()
    return statistics.median(_timed(predict) for _ in range(repeats))


def _fit_sklearn(data, epochs, threads):
    from sklearn.neural_network import MLPClassifier
    (X, y), (X_test, y_test) = data
    clf = MLPClassifier(hidden_layer_sizes=(128,), batch_size=64, solver="adam",
                        max_iter=epochs, learning_rate_init=LEARNING_RATE,
                        n_iter_no_change=epochs + 1, random_state=0)
    with thread_limit(threads):
        start = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - start
        return seconds, clf.score(X_test, y_test)


def _fit_torch(torch, data, epochs, threads, hidden=(128,), batch=64, predict_repeats=0,
               regression=False):
    (X, y), (X_test, y_test) = data
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        sizes = [X.shape[1], *hidden, 1 if regression else int(y.max()) + 1]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers[:-1])
        opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        X_t = torch.from_numpy(X)
        y_t = (torch.from_numpy(y.astype(np.float32)).reshape(-1, 1) if regression
               else torch.from_numpy(y.astype(np.int64)))
        loss_fn = (torch.nn.functional.mse_loss if regression
                   else torch.nn.functional.cross_entropy)
        start = time.perf_counter()
        for _ in range(epochs):
            perm = torch.randperm(X_t.shape[0])
            for i in range(0, X_t.shape[0], batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss = loss_fn(model(X_t[idx]), y_t[idx])
                loss.backward()
                opt.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            X_test_t = torch.from_numpy(X_test)
            if predict_repeats:
                out = ((lambda: model(X_test_t).numpy()) if regression
                       else (lambda: torch.softmax(model(X_test_t), 1).numpy()))
                return seconds, _predict_seconds(out, predict_repeats)
            if regression:
                return seconds, _r2(y_test, model(X_test_t).numpy().ravel())
            pred = model(X_test_t).argmax(1).numpy()
        return seconds, float(np.mean(pred == y_test))
    finally:
        torch.set_num_threads(previous)


def _r2(y, predicted):
    return float(1.0 - np.sum((y - predicted) ** 2) / np.sum((y - np.mean(y)) ** 2))


def _fit_jax(data, epochs, hidden=(128,), batch=64, predict_repeats=0, regression=False):
    """JAX as the strongest CPU peer: the whole epoch one XLA program (``jax.jit`` over a
    ``lax.scan`` of the mini-batches), optax's Adam, float32. Returns (seconds of the
    fit, test accuracy or R^2, or median seconds of the prediction, seconds of the
    compile); the compile (of the epoch and of the prediction) is timed apart, not in
    the fit. The scan needs batches of one shape, so each epoch drops its last
    ``rows % batch`` rows (fewer than a batch). XLA runs on threads of its own, all the
    process's cores: the ``threads`` of the other engines do not apply to it."""
    import jax
    import jax.numpy as jnp
    import optax

    (X, y), (X_test, y_test) = data
    n_out = 1 if regression else int(y.max()) + 1
    sizes = [X.shape[1], *hidden, n_out]
    key = jax.random.PRNGKey(0)
    params = []
    for n_in, n_o in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        bound = float(np.sqrt(6.0 / (n_in + n_o)))
        params.append((jax.random.uniform(sub, (n_in, n_o), jnp.float32, -bound, bound),
                       jnp.zeros(n_o, jnp.float32)))
    opt = optax.adam(LEARNING_RATE)

    def forward(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    def loss(params, x, t):
        out = forward(params, x)
        if regression:
            return jnp.mean((out[:, 0] - t) ** 2)
        return optax.softmax_cross_entropy_with_integer_labels(out, t).mean()

    def epoch(params, opt_state, X, y, order):
        def step(carry, idx):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss)(params, X[idx], y[idx])
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), values = jax.lax.scan(step, (params, opt_state), order)
        return params, opt_state, values.mean()

    def predict(params, x):
        out = forward(params, x)
        return out[:, 0] if regression else jax.nn.softmax(out, axis=1)

    X_d = jnp.asarray(X, jnp.float32)
    y_d = jnp.asarray(y, jnp.float32 if regression else jnp.int32)
    X_test_d = jnp.asarray(X_test, jnp.float32)
    n_batches = X.shape[0] // batch
    orders = [jnp.asarray(np.random.default_rng(e).permutation(X.shape[0])
                          [:n_batches * batch].reshape(n_batches, batch).astype(np.int32))
              for e in range(epochs)]
    opt_state = opt.init(params)
    start = time.perf_counter()
    epoch_c = jax.jit(epoch).lower(params, opt_state, X_d, y_d, orders[0]).compile()
    predict_c = jax.jit(predict).lower(params, X_test_d).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for order in orders:
        params, opt_state, _ = epoch_c(params, opt_state, X_d, y_d, order)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    if predict_repeats:
        return seconds, _predict_seconds(
            lambda: predict_c(params, X_test_d).block_until_ready(), predict_repeats), \
            compile_seconds
    out = np.asarray(predict_c(params, X_test_d))
    quality = (_r2(y_test, out) if regression
               else float(np.mean(out.argmax(axis=1) == y_test)))
    return seconds, quality, compile_seconds


def fit_rows(data, epochs, threads, progress):
    """The MNIST fit (784-128-10, batch 64, Adam) with each backend and each library."""
    rows = []
    engines = [(f"fastmlp[{name}]", lambda name=name: _fit_fastmlp(name, data, epochs, threads))
               for name in available_backends()]
    engines.append(("scikit-learn MLPClassifier", lambda: _fit_sklearn(data, epochs, threads)))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        engines.append((f"PyTorch {torch.__version__}",
                        lambda: _fit_torch(torch, data, epochs, threads)))
    for label, fit in engines:
        progress(f"MNIST fit, {epochs} epochs: {label}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds, accuracy = fit()
        rows.append({"engine": label, "epochs": epochs, "threads": threads,
                     "seconds": seconds, "test_accuracy": accuracy})
    note = None if torch is not None else "PyTorch is not installed: its row is skipped"
    return rows, note


# ------------------------------------------------------------------------ the shape grid

# name -> (hidden layers, batch size, epochs), on MNIST
SHAPES = {
    "784-128-10": ((128,), 64, 5),
    "784-512-512-10": ((512, 512), 128, 1),
    "784-1024-10": ((1024,), 256, 1),
    "784-256-256-256-256-10": ((256, 256, 256, 256), 64, 1),
}
# name -> (data, hidden layers, batch size, epochs), on synthetic tabular data from
# scikit-learn's generators (no download; see tabular_data): the small dense networks
# most tabular problems get
TABULAR_SHAPES = {
    "friedman 40-64-64-1": ("friedman", (64, 64), 128, 10),
    "classification 100-256-256-2": ("classification", (256, 256), 256, 5),
}
TABULAR_ROWS = 200_000


def tabular_data(kind, rows=TABULAR_ROWS, test_rows=10_000):
    """((X, y), (X_test, y_test)) float32 of a synthetic problem: ``friedman``
    (make_friedman1, 40 features, a regression) or ``classification``
    (make_classification, 100 features, 30 informative, 2 classes); X standardised with
    the training rows' mean and deviation."""
    n = rows + test_rows
    if kind == "friedman":
        from sklearn.datasets import make_friedman1
        X, y = make_friedman1(n_samples=n, n_features=40, random_state=0)
        y = y.astype(np.float32)
    elif kind == "classification":
        from sklearn.datasets import make_classification
        X, y = make_classification(n_samples=n, n_features=100, n_informative=30,
                                   random_state=0)
    else:
        raise ValueError(f"unknown tabular data {kind!r}; use friedman or classification")
    X = X.astype(np.float32)
    mean, std = X[:rows].mean(axis=0), X[:rows].std(axis=0) + np.float32(1e-6)
    X = (X - mean) / std
    return (X[:rows], y[:rows]), (X[rows:], y[rows:])


def all_shapes():
    """Every shape of the grid: MNIST's, then the tabular ones."""
    return (*SHAPES, *TABULAR_SHAPES)


def _peers():
    """The peer libraries that are installed: (PyTorch module or None, whether JAX and
    optax are)."""
    try:
        import torch
    except ImportError:
        torch = None
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
        jax_ok = True
    except ImportError:
        jax_ok = False
    return torch, jax_ok


def needed_flops(X, sizes):
    """Floating-point operations one epoch over X needs through layers ``sizes``: the
    first layer's forward and weight gradient on X's non-zero inputs only (2 each per
    non-zero and unit; no gradient with respect to X), every other layer's forward and
    two backward products in full (6 per row, input and output)."""
    nonzeros = X.nnz if sp.issparse(X) else np.count_nonzero(X)
    first = 4.0 * nonzeros * sizes[1]
    return first + 6.0 * X.shape[0] * sum(i * o for i, o in zip(sizes[1:-1], sizes[2:]))


def shape_rows(data, threads, repeats, progress, shapes=tuple(SHAPES), predict_repeats=5,
               tabular_rows=TABULAR_ROWS, peers=True):
    """Fit time of every backend on ``threads`` threads, ``auto`` on its default threads
    (what a user gets) and (when installed, and ``peers``) PyTorch and JAX on each
    network shape: medians of ``repeats`` fits measured in alternating
    order, each after a warm-up fit on a few rows (JAX: its compile timed apart, in
    ``compile_seconds``); and after each fit, the median time of predict_proba (predict,
    for the regression) on the test rows over ``predict_repeats`` calls. MNIST's shapes
    train on ``data``, the tabular ones on ``tabular_rows`` rows of tabular_data.
    GFLOP/s counts the arithmetic each shape needs (needed_flops), the same for every
    engine."""
    torch, jax_ok = _peers() if peers else (None, False)
    engines = {name: name for name in available_backends()}
    engines["auto"] = "auto"
    rows = []
    tabular = {}
    for shape in shapes:
        if shape in TABULAR_SHAPES:
            kind, hidden, batch, epochs = TABULAR_SHAPES[shape]
            if kind not in tabular:
                tabular[kind] = tabular_data(kind, tabular_rows)
            shape_data, regression = tabular[kind], kind == "friedman"
        else:
            hidden, batch, epochs = SHAPES[shape]
            shape_data, regression = data, False

        def fit(engine, epochs=epochs, hidden=hidden, batch=batch, shape_data=shape_data,
                regression=regression):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if engine == "pytorch":
                    return _fit_torch(torch, shape_data, epochs, threads, hidden, batch,
                                      predict_repeats, regression)
                if engine == "jax":
                    return _fit_jax(shape_data, epochs, hidden, batch, predict_repeats,
                                    regression)
                # auto as a user gets it: its own threads for the work (n_jobs=None)
                return _fit_fastmlp(engine, shape_data, epochs,
                                    None if engine == "auto" else threads, hidden, batch,
                                    predict_repeats, regression)

        runners = ([*engines] + (["pytorch"] if torch is not None else [])
                   + (["jax"] if jax_ok else []))
        progress(f"shape {shape}: {', '.join(runners)}")
        times = {name: [] for name in runners}
        predict_times = {name: [] for name in runners}
        compiles = []
        for _ in range(repeats):
            for name in runners:
                fit_s, predict_s, *compile_s = fit(name)
                times[name].append(fit_s)
                predict_times[name].append(predict_s)
                compiles += compile_s
        n_rows = shape_data[0][0].shape[0]
        sizes = [shape_data[0][0].shape[1], *hidden,
                 1 if regression else int(shape_data[0][1].max()) + 1]
        flops = epochs * needed_flops(shape_data[0][0], sizes)
        medians = {name: statistics.median(t) for name, t in times.items()}
        predicts = {name: statistics.median(t) if predict_repeats else None
                    for name, t in predict_times.items()}
        for name, seconds in medians.items():
            rows.append({"shape": shape, "batch": batch, "epochs": epochs, "engine": name,
                         "threads": threads, "rows": n_rows, "seconds": seconds,
                         "gflops": flops / seconds / 1e9,
                         "vs_numpy": medians["numpy"] / seconds,
                         "vs_pytorch": (medians["pytorch"] / seconds
                                        if "pytorch" in medians else None),
                         "vs_jax": medians["jax"] / seconds if "jax" in medians else None,
                         "compile_seconds": (statistics.median(compiles)
                                             if name == "jax" else None),
                         "predict_seconds": predicts[name],
                         "predict_vs_numpy": (predicts[name] / predicts["numpy"]
                                              if predict_repeats else None)})
    missing = ([] if torch is not None else ["PyTorch"]) + ([] if jax_ok else ["JAX"])
    note = (f"{' and '.join(missing)} not installed: {'its' if len(missing) == 1 else 'their'}"
            " rows are skipped" if missing and peers else None)
    if jax_ok:
        jax_note = ("JAX runs on XLA's own threads (every core of the process), whatever "
                    "the threads of the other engines; its compile is not in its seconds")
        note = f"{note}; {jax_note}" if note else jax_note
    return rows, note


def format_shape_table(rows, gemm):
    """The grid as text: fit seconds, GFLOP/s and their share of the GEMM rate, speed-up
    over the numpy backend, PyTorch and JAX (JAX's compile apart); predict milliseconds
    and their ratio to the numpy backend's (below 1 is faster)."""
    lines = [f"{'shape':28s} {'batch':>5s} {'ep':>3s} {'engine':8s} {'seconds':>8s} "
             f"{'GFLOP/s':>8s} {'of GEMM':>8s} {'x numpy':>8s} {'x torch':>8s} "
             f"{'x jax':>8s} {'pred ms':>8s} {'/ numpy':>8s}"]
    for r in rows:
        ratios = " ".join(f"{r[k]:8.2f}" if r.get(k) is not None else " " * 8
                          for k in ("vs_pytorch", "vs_jax"))
        predict = (f"{r['predict_seconds'] * 1e3:8.1f} {r['predict_vs_numpy']:8.2f}"
                   if r.get("predict_seconds") is not None else "")
        compile_note = (f"  (compile {r['compile_seconds']:.2f} s, not counted)"
                        if r.get("compile_seconds") is not None else "")
        lines.append(f"{r['shape']:28s} {r['batch']:5d} {r['epochs']:3d} {r['engine']:8s} "
                     f"{r['seconds']:8.3f} {r['gflops']:8.1f} {r['gflops'] / gemm:8.1%} "
                     f"{r['vs_numpy']:8.2f} {ratios} {predict}".rstrip() + compile_note)
    return "\n".join(lines)


# ------------------------------------------------------------------------ the report


def machine_info(threads):
    info = {"cpu_model": _cpu_model(), "cpus": cpu_count(), "threads": threads,
            "python": platform.python_version(), "platform": platform.platform()}
    versions = {}
    for module in ("fastmlp", "numpy", "scipy", "sklearn", "numba", "threadpoolctl", "torch"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    info["versions"] = versions
    info["blas"] = [{k: v for k, v in entry.items() if k != "filepath"} for entry in blas_info()]
    info["backends"] = available_backends()
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def kernel_rows(cases, backends, thread_counts, min_time, progress):
    """Time every case on every backend at every thread count, with each row's speed-up
    over numpy and its largest difference from numpy's result on the same inputs.

    Every measurement is followed by a short pause: OpenBLAS's threads keep spinning for
    about 0.1 s after a call (and this process may hold two OpenBLAS copies, NumPy's and
    SciPy's), and a parallel kernel measured while they spin shares the cores with them
    (docs/archive/performance-log.md). numpy runs last for each case."""
    rows, gemm = [], {}
    numpy_backend = get_backend("numpy")
    order = [name for name in backends if name != "numpy"] + ["numpy"]
    total = len(cases) * len(order) * len(thread_counts)
    done = 0
    references = []
    for case in cases:
        ref_run, ref_out = case.make(numpy_backend)
        ref_run()
        references.append([a.astype(np.float64) for a in ref_out()])
    for threads in thread_counts:
        with thread_limit(threads):
            gemm[threads] = gemm_gflops()
        time.sleep(BLAS_PAUSE)
        for case, reference in zip(cases, references):
            times = {}
            for name in order:
                done += 1
                progress(f"[{done}/{total}] {case.group}, {name}, {threads} thread(s)")
                backend = get_backend(name)
                with thread_limit(threads, backend):
                    run, outputs = case.make(backend)
                    run()
                    error = max_abs_error(outputs(), reference) if name != "numpy" else 0.0
                    times[name] = median_time(run, min_time=min_time)
                time.sleep(BLAS_PAUSE)
                gflops = case.flops / times[name] / 1e9 if case.flops else None
                rows.append({"kernel": case.kernel, "shape": case.shape, "dtype": case.dtype,
                             "batch": case.batch, "threads": threads, "backend": name,
                             "median_s": times[name], "gflops": gflops,
                             "fraction_of_gemm": gflops / gemm[threads] if gflops else None,
                             "max_abs_error": error})
            for row in rows[-len(order):]:
                row["speedup_vs_numpy"] = times["numpy"] / row["median_s"]
    return rows, gemm


def format_kernel_table(rows, gemm):
    lines = ["fp32 GEMM (NumPy 2048x2048): " + ", ".join(
        f"{g:.0f} GFLOP/s at {t} thread(s)" for t, g in gemm.items())]
    header = (f"{'kernel':15s} {'shape':32s} {'dtype':7s} {'batch':>5s} {'thr':>3s} "
              f"{'backend':7s} {'median':>10s} {'GFLOP/s':>8s} {'%GEMM':>6s} {'x numpy':>8s} "
              f"{'max err':>8s}")
    lines += [header, "-" * len(header)]
    previous = None
    for r in rows:
        key = (r["kernel"], r["shape"], r["dtype"], r["batch"], r["threads"])
        if previous is not None and key != previous:
            lines.append("")
        previous = key
        gf = f"{r['gflops']:.1f}" if r["gflops"] else "-"
        share = f"{r['fraction_of_gemm']:.0%}" if r["fraction_of_gemm"] else "-"
        lines.append(f"{r['kernel']:15s} {r['shape']:32s} {r['dtype']:7s} "
                     f"{r['batch'] or '-':>5} {r['threads']:>3d} {r['backend']:7s} "
                     f"{_fmt_time(r['median_s']):>10s} {gf:>8s} {share:>6s} "
                     f"{r['speedup_vs_numpy']:7.2f}x {r['max_abs_error']:8.1e}")
    return "\n".join(lines)


def format_fit_table(rows):
    header = f"{'engine':32s} {'epochs':>6s} {'thr':>3s} {'time':>9s} {'test acc':>8s}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['engine']:32s} {r['epochs']:6d} {r['threads']:3d} "
                     f"{r['seconds']:8.2f}s {r['test_accuracy']:8.2%}")
    return "\n".join(lines)


def _sort_rows(rows):
    # kernel rows grouped by kernel, shape, dtype, batch, then threads
    order = {}
    for r in rows:
        order.setdefault((r["kernel"], r["shape"]), len(order))
    # the reference first, then the backends in auto's order of preference
    rank = {name: i for i, name in enumerate(dict.fromkeys((REFERENCE, *AUTO_ORDER)))}
    return sorted(rows, key=lambda r: (order[(r["kernel"], r["shape"])], r["dtype"],
                                       r["batch"] or 0, r["threads"],
                                       rank.get(r["backend"], 9)))


def plot(path, kernel_rows_, fit_rows_, threads):
    """A PNG: speed-up over numpy per kernel (float32, all threads), and the fit times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in kernel_rows_ if r["dtype"] == "float32" and r["threads"] == threads
              and r["batch"] in (None, 64) and r["backend"] != "numpy"]
    labels = list(dict.fromkeys(f"{r['kernel']}\n{r['shape']}" for r in chosen))
    backends = list(dict.fromkeys(r["backend"] for r in chosen))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6),
                                   gridspec_kw={"width_ratios": [2.2, 1]})
    width = 0.8 / max(1, len(backends))
    for i, name in enumerate(backends):
        values = [next((r["speedup_vs_numpy"] for r in chosen if r["backend"] == name
                        and f"{r['kernel']}\n{r['shape']}" == label), 0) for label in labels]
        ax1.bar(np.arange(len(labels)) + i * width, values, width, label=name)
    ax1.axhline(1.0, color="black", linewidth=0.8)
    ax1.set_xticks(np.arange(len(labels)) + width * (len(backends) - 1) / 2)
    ax1.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax1.set_ylabel("speed-up over the numpy backend")
    ax1.set_title(f"kernels, float32, batch 64, {threads} thread(s)")
    ax1.legend()
    names = [r["engine"] for r in fit_rows_]
    ax2.barh(names, [r["seconds"] for r in fit_rows_], color="tab:gray")
    for i, r in enumerate(fit_rows_):
        ax2.text(r["seconds"], i, f" {r['test_accuracy']:.2%}", va="center", fontsize=8)
    ax2.set_xlabel("seconds (test accuracy at the bar's end)")
    ax2.set_title(f"MNIST 784-128-10 fit, {fit_rows_[0]['epochs'] if fit_rows_ else 0} epochs")
    ax2.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args) -> int:
    """Run the comparison for the parsed ``fastmlp compare`` arguments."""
    from .datasets import load_mnist

    threads = cpu_count() if args.threads is None else args.threads
    if threads < 1:
        print("fastmlp compare: --threads must be at least 1", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            matplotlib = None
    thread_counts = sorted({1, threads})
    quick = args.quick

    def progress(message):
        print(message, file=sys.stderr, flush=True)

    backends = available_backends()
    if getattr(args, "text", False):
        return _text_report(args, backends, threads, progress)
    (X, y), (X_test, y_test) = load_mnist()
    if getattr(args, "shapes", False):
        return _shape_report(args, (X, y), (X_test, y_test), threads, progress)
    if quick:
        cases = kernel_cases(X, y, X_test, batches=(64, 256), dtypes=("float32",),
                             epoch_rows=10_000)
        min_time, epochs = 0.05, 1
    else:
        cases = kernel_cases(X, y, X_test)
        min_time, epochs = 0.2, 5
    rows, gemm = kernel_rows(cases, backends, thread_counts, min_time, progress)
    rows = _sort_rows(rows)
    fits, fit_note = fit_rows(((X, y), (X_test, y_test)), epochs, threads, progress)

    info = machine_info(threads)
    print(f"\nfastmlp compare on {info['cpu_model']} ({info['cpus']} CPUs), thread counts "
          f"{thread_counts}, backends {', '.join(backends)}")
    print(format_kernel_table(rows, gemm))
    print(f"\nMNIST 784-128-10, batch 64, Adam (lr {LEARNING_RATE}), {epochs} epoch(s), "
          f"{threads} thread(s):")
    print(format_fit_table(fits))
    if fit_note:
        print(f"note: {fit_note}")
    if args.json:
        report = {"machine": info, "gemm_gflops_fp32": gemm, "quick": quick,
                  "kernels": rows, "fits": fits,
                  "notes": [fit_note] if fit_note else []}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        if matplotlib is None:
            print("note: --plot needs matplotlib, which is not installed; install it with "
                  "pip install 'fastmlp[plot]'. The table above is complete; no chart was "
                  "written.")
        else:
            plot(args.plot, rows, fits, threads)
            print(f"wrote {args.plot}")
    return 0


def _shape_report(args, train, test, threads, progress):
    """``fastmlp compare --shapes``: the network-shape grid alone."""
    if args.quick:  # a smoke run: 2,000 rows, one fit each
        train = (train[0][:2000], train[1][:2000])
    rows, note = shape_rows((train, test), threads, 1 if args.quick else 3, progress,
                            shapes=all_shapes(),
                            tabular_rows=2000 if args.quick else TABULAR_ROWS)
    gemm = gemm_gflops()
    info = machine_info(threads)
    print(f"\nfastmlp compare --shapes on {info['cpu_model']} ({info['cpus']} CPUs), "
          f"{threads} thread(s), {train[0].shape[0]} rows, Adam, float32; auto picks "
          f"{get_backend('auto').NAME}; float32 GEMM {gemm:.0f} GFLOP/s")
    print(format_shape_table(rows, gemm))
    if note:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "gemm_gflops_fp32": gemm, "shapes": rows,
                       "notes": [note] if note else []}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _text_report(args, backends, threads, progress):
    """``fastmlp compare --text``: the sparse text problem alone."""
    from .compare_text import QUICK_TEXT, TextProblem, format_text_table, text_rows
    problem = QUICK_TEXT if args.quick else TextProblem()
    X, rows = text_rows(problem, threads, backends[::-1], get_backend("auto").NAME, progress)
    info = machine_info(threads)
    print(f"\nfastmlp compare --text on {info['cpu_model']} ({info['cpus']} CPUs)")
    print(format_text_table(X, rows, problem, threads))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "text": rows, "problem": vars(problem)}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


__all__ = ["Case", "SHAPES", "TABULAR_SHAPES", "all_shapes", "tabular_data", "shape_rows",
           "format_shape_table", "kernel_cases", "median_time", "gemm_gflops",
           "max_abs_error", "main"]
