"""The text-shaped comparison: FastMLP against scikit-learn's MLPClassifier, PyTorch with
sparse input (when installed) and a linear model, on TF-IDF features given as a SciPy
sparse matrix. ``fastmlp compare --text`` and ``benchmarks/text_benchmark.py`` run it.

The data come from ``fastmlp.datasets.make_text_classification`` (20 classes, a Zipf
vocabulary, about 120 distinct terms a document, rows of unit norm; deterministic). Every
network is the same (one hidden layer of ``hidden`` ReLU units), trained with Adam at
MLPClassifier's default rate (1e-3), batch ``batch``, ``epochs`` epochs, no early
stopping. FastMLP runs exact Adam on each backend, then ``solver="lazy_adam"`` on the
default backend. Each row: wall time of the fit, the peak of the memory it allocated
(tracemalloc, which sees NumPy's and SciPy's allocations but not PyTorch's; the data
given to the fit are not counted) and test accuracy.
"""

from __future__ import annotations

import time
import tracemalloc
import warnings
from dataclasses import dataclass

import numpy as np

from .threads import thread_limit

TEXT_LEARNING_RATE = 1e-3  # MLPClassifier's default, used by every engine here


@dataclass(frozen=True)
class TextProblem:
    """The sizes of the text problem and of its network."""

    train: int = 11_000
    test: int = 7_500
    terms: int = 100_000
    hidden: int = 128
    batch: int = 64
    epochs: int = 2
    seed: int = 0


QUICK_TEXT = TextProblem(train=1_000, test=500, terms=5_000)


def _measured(fit, score, traced=True):
    """(seconds of fit(), peak MiB it allocated or None, score())."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if traced:
            tracemalloc.start()
        start = time.perf_counter()
        try:
            fit()
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else None
        finally:
            if traced:
                tracemalloc.stop()
        return seconds, peak, score()


class _TorchSparseMLP:
    """The same network in PyTorch: the first layer a product of the batch's sparse CSR
    rows with a dense W (torch.sparse.mm), Adam over every parameter."""

    def __init__(self, torch, problem: TextProblem, n_classes: int):
        self.torch, self.problem, self.n_classes = torch, problem, n_classes

    def _batch(self, X, rows):
        part = X[rows]
        t = self.torch
        return t.sparse_csr_tensor(t.from_numpy(part.indptr.astype(np.int64)),
                                   t.from_numpy(part.indices.astype(np.int64)),
                                   t.from_numpy(part.data.astype(np.float32)),
                                   size=part.shape)

    def _forward(self, xb):
        t = self.torch
        hidden = t.relu(t.sparse.mm(xb, self.w1) + self.b1)
        return self.out(hidden)

    def fit(self, X, y):
        t, p = self.torch, self.problem
        t.manual_seed(p.seed)
        first = t.nn.Linear(X.shape[1], p.hidden)
        self.w1 = t.nn.Parameter(first.weight.detach().T.contiguous())
        self.b1 = t.nn.Parameter(first.bias.detach())
        self.out = t.nn.Linear(p.hidden, self.n_classes)
        opt = t.optim.Adam([self.w1, self.b1, *self.out.parameters()], lr=TEXT_LEARNING_RATE)
        y_t = t.from_numpy(np.asarray(y, dtype=np.int64))
        rng = np.random.default_rng(p.seed)
        for _ in range(p.epochs):
            order = rng.permutation(X.shape[0])
            for i in range(0, X.shape[0], p.batch):
                rows = order[i:i + p.batch]
                opt.zero_grad()
                loss = t.nn.functional.cross_entropy(self._forward(self._batch(X, rows)),
                                                     y_t[rows])
                loss.backward()
                opt.step()
        return self

    def score(self, X, y):
        with self.torch.no_grad():
            pred = self._forward(self._batch(X, np.arange(X.shape[0]))).argmax(1).numpy()
        return float(np.mean(pred == np.asarray(y)))


def text_engines(backends, default_backend, torch):
    """The engine names of a text comparison, in the order they run."""
    engines = [f"fastmlp[{name}]" for name in backends]
    engines.append(f"fastmlp[{default_backend}] lazy_adam")
    engines.append("scikit-learn MLPClassifier")
    if torch is not None:
        engines.append(f"PyTorch {torch.__version__} sparse")
    engines.append("linear (SGDClassifier, log loss)")
    return engines


def _model(engine, problem, threads, torch, n_classes, X, y):
    common = dict(hidden_layer_sizes=(problem.hidden,), batch_size=problem.batch,
                  max_iter=problem.epochs, random_state=problem.seed,
                  n_iter_no_change=10**6, learning_rate_init=TEXT_LEARNING_RATE)
    if engine.startswith("fastmlp["):
        from .estimator import FastMLP
        backend, _, solver = engine[8:].partition("]")
        model = FastMLP(**common, solver=solver.strip() or "adam", backend=backend,
                        n_jobs=threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X[:64], y[:64])  # compile, outside the measurement
        return model
    if engine.startswith("scikit-learn"):
        from sklearn.neural_network import MLPClassifier
        return MLPClassifier(**common, solver="adam")
    if engine.startswith("PyTorch"):
        return _TorchSparseMLP(torch, problem, n_classes)
    from sklearn.linear_model import SGDClassifier
    return SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=20, tol=None,
                         random_state=problem.seed)


def text_rows(problem: TextProblem, threads: int, backends, default_backend,
              progress=print):
    """Fit every engine on the text problem; returns (X_train, rows), each row a dict of
    engine, seconds, peak_mib (None where not measured), accuracy and vs_sklearn (the
    MLPClassifier's seconds over the engine's)."""
    from .datasets import make_text_classification
    try:
        import torch
    except ImportError:
        torch = None
    (X, y), (X_test, y_test) = make_text_classification(
        problem.train, problem.test, n_terms=problem.terms, random_state=problem.seed)
    n_classes = int(np.max(y)) + 1
    rows = []
    previous = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None:
            torch.set_num_threads(threads)
        for engine in text_engines(backends, default_backend, torch):
            model = _model(engine, problem, threads, torch, n_classes, X, y)
            with thread_limit(threads):
                seconds, peak, accuracy = _measured(
                    lambda: model.fit(X, y), lambda: model.score(X_test, y_test),
                    traced=not engine.startswith("PyTorch"))
            rows.append({"engine": engine, "seconds": seconds, "peak_mib": peak,
                         "accuracy": accuracy})
            progress(f"{engine}: {seconds:.2f} s")
    finally:
        if torch is not None:
            torch.set_num_threads(previous)
    sk = next(r["seconds"] for r in rows if r["engine"].startswith("scikit-learn"))
    for row in rows:
        row["vs_sklearn"] = sk / row["seconds"]
    return X, rows


def format_text_table(X, rows, problem: TextProblem, threads: int) -> str:
    lines = [f"{X.shape[0]} x {X.shape[1]} TF-IDF, {X.nnz / X.shape[0]:.0f} terms a row, "
             f"{problem.hidden} hidden, batch {problem.batch}, {problem.epochs} epochs, "
             f"Adam lr {TEXT_LEARNING_RATE:g}, {threads} threads",
             f"{'engine':36s} {'seconds':>8s} {'vs MLPClassifier':>17s} {'peak MiB':>9s} "
             f"{'accuracy':>9s}"]
    for r in rows:
        peak = f"{r['peak_mib']:9.0f}" if r["peak_mib"] is not None else f"{'n/a':>9s}"
        lines.append(f"{r['engine']:36s} {r['seconds']:8.2f} {r['vs_sklearn']:16.1f}x "
                     f"{peak} {r['accuracy']:9.2%}")
    return "\n".join(lines)


__all__ = ["TextProblem", "QUICK_TEXT", "text_engines", "text_rows", "format_text_table"]
