"""A text-shaped problem: FastMLP against scikit-learn's MLPClassifier (and a linear
model, for scale) on TF-IDF features given as a SciPy sparse matrix.

    python benchmarks/text_benchmark.py                        # 11,000 x 100,000, 2 epochs
    python benchmarks/text_benchmark.py --train 1000 --test 500 --terms 5000   # a smoke run

The data come from fastmlp.datasets.make_text_classification (20 classes, a Zipf
vocabulary, about 120 distinct terms a document, rows of unit norm; deterministic).
Every fit is the same network (one hidden layer of --hidden ReLU units), Adam at
MLPClassifier's default rate, batch --batch, --epochs epochs, no early stopping. Each
row: wall time of the fit, the peak of the memory it allocated (tracemalloc, which sees
NumPy's and SciPy's allocations: the data given to the fit are not counted), and test
accuracy.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

from fastmlp import FastMLP
from fastmlp.datasets import make_text_classification
from fastmlp.threads import cpu_count, thread_limit


def _measured(fit, score):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracemalloc.start()
        start = time.perf_counter()
        try:
            fit()
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return seconds, peak / 2**20, score()


def run(args):
    (X, y), (X_test, y_test) = make_text_classification(
        args.train, args.test, n_terms=args.terms, random_state=args.seed)
    rows = []
    common = dict(hidden_layer_sizes=(args.hidden,), batch_size=args.batch, solver="adam",
                  max_iter=args.epochs, random_state=args.seed, n_iter_no_change=10**6)
    engines = [f"fastmlp[{name}]" for name in args.backends.split(",")]
    engines += ["scikit-learn MLPClassifier", "linear (SGDClassifier, log loss)"]
    for engine in engines:
        if engine.startswith("fastmlp"):
            model = FastMLP(**common, backend=engine[8:-1], n_jobs=args.threads)
            model.fit(X[:64], y[:64])  # compile, outside the measurement
        elif engine.startswith("scikit-learn"):
            from sklearn.neural_network import MLPClassifier
            model = MLPClassifier(**common)
        else:
            from sklearn.linear_model import SGDClassifier
            model = SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=20, tol=None,
                                  random_state=args.seed)
        with thread_limit(args.threads):
            seconds, peak, accuracy = _measured(lambda: model.fit(X, y),
                                                lambda: model.score(X_test, y_test))
        rows.append((engine, seconds, peak, accuracy))
        print(f"{engine}: {seconds:.2f} s", flush=True)
    return (X, X_test), rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=11_000)
    parser.add_argument("--test", type=int, default=7_500)
    parser.add_argument("--terms", type=int, default=100_000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--backends", default="numba,cython,numpy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (X, _), rows = run(args)
    sk = next(r for r in rows if r[0].startswith("scikit-learn"))
    print(f"\n{X.shape[0]} x {X.shape[1]} TF-IDF, {X.nnz / X.shape[0]:.0f} terms a row, "
          f"{args.hidden} hidden, batch {args.batch}, {args.epochs} epochs, "
          f"{args.threads} threads")
    print(f"{'engine':36s} {'seconds':>8s} {'vs MLPClassifier':>17s} {'peak MiB':>9s} "
          f"{'accuracy':>9s}")
    for engine, seconds, peak, accuracy in rows:
        print(f"{engine:36s} {seconds:8.2f} {sk[1] / seconds:16.1f}x {peak:9.0f} "
              f"{accuracy:9.2%}")
    return rows


if __name__ == "__main__":
    main()
