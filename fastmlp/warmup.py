"""Compiling a backend's kernels ahead of use: ``fastmlp warmup`` (in the foreground, with
progress) and the background process that ``auto`` starts (``--background``).

A warm-up runs small fits and predictions that take every path a fit or predict of one
dtype compiles: dense float input, SciPy sparse input, uint8 input with ``input_scale``,
hidden layers narrow and wide (the wide first layer sums its gradient by columns) and
deep (dense layers), every output (softmax, logistic per label, identity, exponential),
both stochastic solvers and L-BFGS, then marks the backend ready for that dtype
(``backends.jit_cache``). The heads, solvers and schedules are run-time codes in one
compiled epoch, so they add little; what compiles is the epoch, the input preparation per
stored dtype, and prediction.

    python -m fastmlp.warmup [--backend numba] [--dtype float32] [--background]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings

import numpy as np


def _problem(rng, n, d, dtype):
    X = rng.random((n, d)).astype(dtype)
    X[X < 0.6] = 0  # mostly zero, as images are
    return X


def _steps(backend, dtype):
    """(label, function) of each part of a warm-up."""
    import scipy.sparse as sp

    from .estimator import FastMLP
    from .regressor import FastMLPRegressor

    rng = np.random.default_rng(0)
    n, d = 96, 48
    X = _problem(rng, n, d, dtype)
    y = np.arange(n) % 3
    kw = dict(backend=backend, dtype=dtype, max_iter=2, random_state=0, n_jobs=None)

    def dense():
        model = FastMLP(hidden_layer_sizes=(16,), **kw).fit(X, y)
        model.predict_proba(X)
        model.predict(X[:1])

    def sparse_input():
        Xs = sp.csr_matrix(X)
        FastMLP(hidden_layer_sizes=(16,), **kw).fit(Xs, y).predict_proba(Xs)

    def stored_uint8():
        pixels = (X * 255).astype(np.uint8)
        model = FastMLP(hidden_layer_sizes=(16,), input_scale=1 / 255, **kw).fit(pixels, y)
        model.predict_proba(pixels)

    def wide_and_deep():
        wide = _problem(rng, 256, 200, dtype)
        FastMLP(hidden_layer_sizes=(256,), batch_size=128, **kw).fit(
            wide, np.arange(256) % 3).predict_proba(wide)
        FastMLP(hidden_layer_sizes=(32, 32), **kw).fit(X, y).predict_proba(X)

    def other_outputs():
        labels = np.stack([y == 0, y == 1], axis=1).astype(int)
        FastMLP(hidden_layer_sizes=(8,), **kw).fit(X, labels).predict_proba(X)
        target = X[:, 0] + 1.0
        FastMLPRegressor(hidden_layer_sizes=(8,), **kw).fit(X, target).predict(X)
        FastMLPRegressor(hidden_layer_sizes=(8,), loss="poisson", **kw).fit(X, target)

    def large_input():
        # a large X: the fit checks its finiteness in a parallel pass, and predicting
        # many rows splits them between threads and reads the first layer by panels
        big = _problem(rng, 1100, 1000, dtype)
        labels = np.arange(1100) % 3
        model = FastMLP(hidden_layer_sizes=(64,), batch_size=256, **dict(kw, max_iter=1))
        model.fit(big, labels).predict_proba(big)
        FastMLP(hidden_layer_sizes=(64, 16), batch_size=256, **dict(kw, max_iter=1)).fit(
            big[:300], labels[:300]).predict_proba(big)

    def large_model():
        # a model of more than 16 MiB trains in its own arrays, with no working copies
        # (numba_backend.workspace.IN_PLACE_BYTES)
        inputs = _problem(rng, 32, 4200, dtype)
        FastMLP(hidden_layer_sizes=(1024,), **dict(kw, max_iter=1)).fit(inputs, y[:32])

    def solvers():
        FastMLP(hidden_layer_sizes=(8,), solver="sgd", **kw).fit(X, y)
        FastMLP(hidden_layer_sizes=(8,), solver="lbfgs", **kw).fit(X, y)
        FastMLP(hidden_layer_sizes=(8,), early_stopping=True, **kw).fit(X, y)

    return [("dense input", dense), ("sparse input", sparse_input),
            ("uint8 input", stored_uint8), ("wide and deep layers", wide_and_deep),
            ("other outputs", other_outputs), ("solvers", solvers),
            ("large input", large_input), ("large model", large_model)]


def warm_up(backend="numba", dtype="float32", progress=None):
    """Compile (or load from the cache) every kernel a fit and a predict of ``dtype`` use
    on ``backend``, then record it as ready. ``progress(text)`` is called before and
    after each step. Returns the seconds taken."""
    from .backends import get_backend, jit_cache

    dtype = np.dtype(dtype).name
    get_backend(backend)  # an ImportError that says why, before any work
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = _steps(backend, dtype)
        for i, (label, step) in enumerate(steps, 1):
            t0 = time.perf_counter()
            if progress is not None:
                progress(f"[{i}/{len(steps)}] {backend} {dtype}: {label} ...")
            step()
            if progress is not None:
                progress(f"[{i}/{len(steps)}] {backend} {dtype}: {label}: "
                         f"{time.perf_counter() - t0:.1f} s")
    jit_cache.mark_ready(backend, dtype)
    return time.perf_counter() - start


def _background(backend, dtype) -> int:
    """The background compile: at the lowest priority, one process per backend and dtype
    (the others find the lock held and leave); a failure is recorded, never raised."""
    from .backends import jit_cache

    jit_cache.lower_priority()
    with jit_cache.compile_lock(backend, dtype, wait=False) as held:
        if not held or jit_cache.ready(backend, dtype):
            return 0
        try:
            seconds = warm_up(backend, dtype, progress=print)
        except BaseException:  # noqa: BLE001 - recorded for fastmlp info and warmup
            jit_cache.mark_failed(backend, dtype, traceback.format_exc())
            traceback.print_exc()
            return 1
        print(f"{backend} {dtype}: compiled in {seconds:.1f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmlp.warmup",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--background", action="store_true",
                        help="at the lowest priority, and only if no other process is "
                             "compiling the same backend and dtype")
    args = parser.parse_args(argv)
    if args.background:
        return _background(args.backend, args.dtype)
    seconds = warm_up(args.backend, args.dtype, progress=print)
    print(f"{args.backend} {args.dtype}: ready in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
