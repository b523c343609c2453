"""How much results differ across thread counts and backends for the same seed.

    python benchmarks/determinism.py [--rows 60000] [--epochs 5]

Fits MNIST 784-128-10 (batch 64, Adam, float32, random_state=0) with every available
backend at 1 and at 2 threads, and prints, for each pair, the largest difference between
their weights and the share of test rows whose predicted class differs. The same seed,
backend and thread count always give the same bits (tested in tests/); this shows what
changes when the thread count or the backend does.
"""

import argparse
import itertools
import warnings

import numpy as np

from fastmlp import FastMLP, available_backends, load_mnist


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    (X, y), (X_test, y_test) = load_mnist()
    X, y = X[: args.rows], y[: args.rows]
    models = {}
    for name in available_backends():
        for threads in (1, 2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf = FastMLP(max_iter=args.epochs, n_iter_no_change=args.epochs + 1,
                              random_state=0, backend=name, n_jobs=threads).fit(X, y)
            models[(name, threads)] = (clf._params.copy(), clf.predict(X_test),
                                       clf.score(X_test, y_test))
            print(f"{name:6s} {threads} thread(s): test accuracy {models[(name, threads)][2]:.2%}")
    print(f"\n{'pair':34s} {'max |dW|':>10s} {'predictions differ':>19s}")
    for a, b in itertools.combinations(models, 2):
        if a[0] != b[0] and a[1] != b[1]:
            continue  # one change at a time: the thread count, or the backend
        pa, pred_a, _ = models[a]
        pb, pred_b, _ = models[b]
        label = f"{a[0]}/{a[1]}t vs {b[0]}/{b[1]}t"
        print(f"{label:34s} {np.max(np.abs(pa - pb)):10.2e} {np.mean(pred_a != pred_b):18.2%}")


if __name__ == "__main__":
    main()
