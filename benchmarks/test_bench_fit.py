"""End-to-end benchmarks: the whole MNIST fit and prediction, one row per backend.

Run: pytest benchmarks --benchmark-only --benchmark-group-by=group
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, FastMLPRegressor, load_mnist

from .conftest import BACKENDS, record

EPOCHS = 5


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def _fit(backend_name, X, y, epochs=EPOCHS):
    clf = FastMLP(hidden_layer_sizes=(128,), batch_size=64, solver="adam", max_iter=epochs,
                  n_iter_no_change=epochs + 1, random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


@pytest.fixture(scope="module")
def fitted(mnist):
    (X, y), _ = mnist
    return {name: _fit(name, X[:2000], y[:2000], epochs=2) for name in BACKENDS}


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_fit_mnist(benchmark, mnist, backend_name):
    """784-128-10, batch 64, Adam, 5 epochs on the 60,000 training rows."""
    (X, y), (X_test, y_test) = mnist
    _fit(backend_name, X[:256], y[:256], epochs=1)  # warm up: compile, fault in pages
    benchmark.group = "fit MNIST 784-128-10 adam batch=64 5 epochs"
    clf = benchmark.pedantic(_fit, args=(backend_name, X, y), rounds=5, iterations=1)
    record(benchmark, dtype=np.float32, test_accuracy=clf.score(X_test, y_test))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_predict_mnist_test_set(benchmark, mnist, fitted, backend_name):
    _, (X_test, _) = mnist
    clf = fitted[backend_name]
    reference = fitted["numpy"].predict_proba(X_test)
    clf.predict(X_test)
    benchmark.group = "predict MNIST test set (10,000 rows)"
    benchmark(clf.predict, X_test)
    # all backends fitted identically from the same seed, so outputs are comparable
    record(benchmark, dtype=np.float32,
           max_error=float(np.abs(clf.predict_proba(X_test) - reference).max()))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_predict_one_row(benchmark, mnist, fitted, backend_name):
    _, (X_test, _) = mnist
    clf = fitted[backend_name]
    row = X_test[:1]
    clf.predict(row)
    benchmark.group = "predict one row through FastMLP.predict"
    benchmark(clf.predict, row)
    record(benchmark, dtype=np.float32)


HEADS = {
    "softmax": (FastMLP, {}, "labels", False),
    "softmax+weights": (FastMLP, {}, "labels", True),
    "multilabel": (FastMLP, {}, "onehot", False),
    "squared_error": (FastMLPRegressor, {}, "onehot", False),
    "poisson": (FastMLPRegressor, {"loss": "poisson"}, "onehot", False),
}


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_fit_mnist_every_head(benchmark, mnist, backend_name, head):
    """The reference fit with each output function (y one-hot for the multilabel and
    regression heads) and with row weights: what a head costs in a whole fit."""
    (X, y), _ = mnist
    cls, params, kind, weighted = HEADS[head]
    target = np.eye(10, dtype=np.float32)[y] if kind == "onehot" else y
    if cls is FastMLP and kind == "onehot":
        target = target.astype(np.int64)
    sample_weight = np.where(y == 3, 2.0, 1.0) if weighted else None

    def fit():
        est = cls(max_iter=EPOCHS, n_iter_no_change=EPOCHS + 1, random_state=0,
                  backend=backend_name, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return est.fit(X, target, sample_weight=sample_weight)

    benchmark.group = "fit MNIST 784-128-10 adam batch=64 5 epochs, by output head"
    est = benchmark.pedantic(fit, rounds=3, iterations=1)
    record(benchmark, dtype=np.float32, head=head, final_loss=float(est.loss_))


# --------------------------------------------------------------------- sparse text input

# a reduced text problem, so the suite stays quick; benchmarks/text_benchmark.py runs the
# full 11,000 x 100,000 one
TEXT = dict(n_train=2_000, n_test=1_000, n_terms=20_000)


@pytest.fixture(scope="module")
def text():
    from fastmlp.datasets import make_text_classification

    return make_text_classification(**TEXT)


@pytest.mark.parametrize("engine", [*BACKENDS, "auto lazy_adam", "MLPClassifier"])
def test_fit_text_sparse(benchmark, text, engine):
    """TF-IDF rows as a SciPy CSR matrix, 20,000-128-20, batch 64, Adam at rate 1e-3, 2
    epochs: each backend (and lazy Adam on the default one) against scikit-learn's
    MLPClassifier on the same sparse input."""
    from sklearn.neural_network import MLPClassifier

    (X, y), (X_test, y_test) = text
    common = dict(hidden_layer_sizes=(128,), batch_size=64, max_iter=2,
                  n_iter_no_change=10**6, random_state=0, learning_rate_init=1e-3)
    backend, _, solver = engine.partition(" ")

    def fit():
        model = (MLPClassifier(**common, solver="adam") if engine == "MLPClassifier"
                 else FastMLP(**common, backend=backend, solver=solver or "adam"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(X, y)

    benchmark.group = "fit text TF-IDF (sparse) 20,000-128-20 batch=64 2 epochs"
    fit()  # compile outside the timing
    model = benchmark.pedantic(fit, rounds=3, iterations=1)
    accuracy = model.score(X_test, y_test)
    record(benchmark, dtype=np.float32 if engine != "MLPClassifier" else np.float64,
           test_accuracy=accuracy)
    assert accuracy > 0.5  # 20 classes: chance is 5 %
