"""Hashes of the weights after fixed fits: the guard that a refactor changes no result.

Every backend fits the same small problems (the first 3,000 MNIST training images, two
epochs) for each combination of network (784-128-10 and 784-100-50-30-10), solver (Adam,
SGD), dtype (float32, float64) and thread count (1, 2), and the SHA-256 of the fitted
parameter vector is compared with the one recorded in ``data/weight_hashes.json``.

Bits depend on the CPU (vector width, FMA) and on the BLAS build, so hashes are recorded
per platform key (see ``platform_key``); a platform with none recorded skips the test
with a message saying how to record them (on a commit known to be right):

    python -m tests.weight_hashes --record

A key with a forced numba target (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES) and OpenBLAS
kernel (OPENBLAS_CORETYPE) keeps the numba backend's hashes only: numba's machine code
and OpenBLAS's kernels are then the same on every x86-64 CPU that runs them, while the
extension (built with -march=native) and NumPy's own vector loops follow the host. CI
runs the suite's hash test under the Haswell key on whatever machine it has, so the
hashes are checked beyond the machines they were recorded on:

    OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= \
        python -m tests.weight_hashes --record --backends numba
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import warnings
from pathlib import Path

import numpy as np

HASH_FILE = Path(__file__).parent / "data" / "weight_hashes.json"
NETWORKS = {"784-128-10": (128,), "784-100-50-30-10": (100, 50, 30)}
SOLVERS = ("adam", "sgd")
DTYPES = ("float32", "float64")
THREADS = (1, 2)
N_ROWS = 3000
EPOCHS = 2


def platform_key() -> str:
    """What the bits of a fit depend on beyond the code: the CPU the compiled kernels are
    built for (numba's target: NUMBA_CPU_NAME and NUMBA_CPU_FEATURES where they force one,
    else the host's), and the BLAS library with the kernel it picked (OPENBLAS_CORETYPE
    where it forces one)."""
    import llvmlite.binding as llvm
    import numba
    import threadpoolctl

    # the BLAS libraries a fit loads (scikit-learn's and SciPy's), so that the key is the
    # same in the test as when the hashes are recorded
    import fastmlp.estimator  # noqa: F401

    blas = [f"{i.get('internal_api')}-{i.get('version')}-{i.get('architecture')}"
            for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    cpu = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    if numba.config.CPU_FEATURES is not None:
        cpu += f"[{numba.config.CPU_FEATURES}]"
    return f"{cpu}/{'+'.join(sorted(set(blas))) or 'noblas'}"


def cases():
    """(case id, FastMLP keyword arguments) of every fixed fit, backend excluded."""
    for (net, hidden), solver, dtype, threads in itertools.product(
            NETWORKS.items(), SOLVERS, DTYPES, THREADS):
        kwargs = dict(hidden_layer_sizes=hidden, solver=solver, dtype=dtype, n_jobs=threads,
                      max_iter=EPOCHS, random_state=0, n_iter_no_change=EPOCHS + 1)
        yield f"{net}/{solver}/{dtype}/{threads}t", kwargs


def fit_hash(backend: str, kwargs: dict, X=None, y=None) -> str:
    from sklearn.exceptions import ConvergenceWarning

    from fastmlp import FastMLP, load_mnist

    if X is None:
        (X, y), _ = load_mnist()
        X, y = X[:N_ROWS], y[:N_ROWS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastMLP(backend=backend, **kwargs).fit(X, y)
    params = np.concatenate([np.ravel(a) for pair in zip(clf.coefs_, clf.intercepts_)
                             for a in pair])
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()


def recorded() -> dict:
    if HASH_FILE.exists():
        return json.loads(HASH_FILE.read_text())
    return {}


def record(backends) -> dict:
    from fastmlp import load_mnist

    (X, y), _ = load_mnist()
    X, y = X[:N_ROWS], y[:N_ROWS]
    table = recorded()
    mine = table.setdefault(platform_key(), {})
    for backend in backends:
        for case, kwargs in cases():
            mine[f"{backend}/{case}"] = fit_hash(backend, kwargs, X, y)
    HASH_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return mine


def main():
    from fastmlp import available_backends

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true",
                        help="record this platform's hashes (overwrites them)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends to record (default: all available)")
    args = parser.parse_args()
    if args.record:
        mine = record(args.backends.split(",") if args.backends else available_backends())
        print(f"recorded {len(mine)} hashes for {platform_key()} in {HASH_FILE}")
    else:
        print(platform_key())


if __name__ == "__main__":
    main()
