"""sample_weight (FastMLP and FastMLPRegressor), class_weight and multilabel classification,
on every available backend."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from fastmlp import FastMLP, FastMLPRegressor

N = 60  # rows of the small problems: a full batch is one batch of "auto" (64)


def _problem(n=N, seed=0):
    """X with a 3-class label and a regression target."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    X[:, 0] += labels
    values = X[:, 0] - X[:, 1] ** 2 + 0.5 * X[:, 2]
    return X, labels, values


def _blobs(n=200, seed=0):
    """Three overlapping classes."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 6))
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.standard_normal((n, 6))).astype(np.float32), y


def _multilabel():
    X, Y = make_multilabel_classification(n_samples=200, n_features=10, n_classes=3,
                                          random_state=0)
    return StandardScaler().fit_transform(X), Y


def _fit(est, X, y, **fit_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # batch_size clamped to the rows
        return est.fit(X, y, **fit_kwargs)


def _full_batch(kind, backend_name, **kwargs):
    """A float64 model trained on full batches in row order, so that fits on the same rows
    see the same batches."""
    params = dict(hidden_layer_sizes=(8,), dtype="float64", shuffle=False, batch_size=10_000,
                  solver="adam", max_iter=20, random_state=0, backend=backend_name)
    params.update(kwargs)
    return FastMLP(**params) if kind == "classifier" else FastMLPRegressor(**params)


def _output(est, X):
    return est.predict_proba(X) if isinstance(est, FastMLP) else est.predict(X)


def _target(kind, labels, values):
    return labels if kind == "classifier" else values


KINDS = pytest.mark.parametrize("kind", ["classifier", "regressor"])


# ------------------------------------------------------------------------- sample_weight


@pytest.mark.float64  # its models are float64 (_full_batch)
@KINDS
def test_zero_weights_equal_dropping_rows(backend_name, kind):
    X, labels, values = _problem()
    y = _target(kind, labels, values)
    keep = (np.arange(N) % 4 != 1).astype(np.float64)
    weighted = _fit(_full_batch(kind, backend_name), X, y, sample_weight=keep)
    dropped = _fit(_full_batch(kind, backend_name), X[keep == 1], y[keep == 1])
    np.testing.assert_allclose(_output(weighted, X), _output(dropped, X), rtol=1e-9)
    # and the weights matter: all rows give another model
    unweighted = _fit(_full_batch(kind, backend_name), X, y)
    assert not np.allclose(_output(unweighted, X), _output(dropped, X), rtol=1e-6)


@pytest.mark.float64  # its models are float64 (_full_batch)
@KINDS
def test_integer_weights_equal_repeating_rows(backend_name, kind):
    X, labels, values = _problem()
    y = _target(kind, labels, values)
    counts = np.random.default_rng(1).integers(0, 4, N)
    weighted = _fit(_full_batch(kind, backend_name), X, y, sample_weight=counts)
    repeated = _fit(_full_batch(kind, backend_name), X.repeat(counts, axis=0),
                    y.repeat(counts))
    np.testing.assert_allclose(_output(weighted, X), _output(repeated, X), rtol=1e-9)
    assert weighted.loss_ == pytest.approx(repeated.loss_, rel=1e-9)


@pytest.mark.float64  # its models are float64 (_full_batch)
@KINDS
def test_scaling_the_weights_scales_only_the_penalty(backend_name, kind):
    X, labels, values = _problem()
    y = _target(kind, labels, values)
    # without the L2 term, the weighted mean loss does not depend on the weights' scale
    scaled = _fit(_full_batch(kind, backend_name, alpha=0.0), X, y,
                  sample_weight=np.full(N, 3.0))
    plain = _fit(_full_batch(kind, backend_name, alpha=0.0), X, y)
    np.testing.assert_allclose(_output(scaled, X), _output(plain, X), rtol=1e-9)
    # as in scikit-learn, the penalty is alpha / (2 sum(w)) ||W||^2: weights of 3 are
    # alpha / 3 (and repeating every row three times), not the unweighted model
    scaled = _fit(_full_batch(kind, backend_name, alpha=0.3), X, y,
                  sample_weight=np.full(N, 3.0))
    third = _fit(_full_batch(kind, backend_name, alpha=0.1), X, y)
    np.testing.assert_allclose(_output(scaled, X), _output(third, X), rtol=1e-9)


def test_weights_change_the_model(backend_name):
    X, y = _blobs()
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=30, random_state=0, backend=backend_name)
    plain = _fit(FastMLP(**kwargs), X, y)
    upweighted = _fit(FastMLP(**kwargs), X, y, sample_weight=np.where(y == 2, 10.0, 1.0))
    before = plain.predict_proba(X)[:, 2].mean()
    after = upweighted.predict_proba(X)[:, 2].mean()
    assert after > before + 0.1
    assert (upweighted.predict(X) == 2).sum() > (plain.predict(X) == 2).sum()


@pytest.mark.parametrize("make", [FastMLP, FastMLPRegressor])
@pytest.mark.parametrize("weights, message", [
    (lambda n: -np.ones(n), "Negative"),
    (lambda n: np.r_[np.nan, np.ones(n - 1)], "NaN"),
    (lambda n: np.ones(n - 1), "shape"),
    (lambda n: np.zeros(n), "non-zero|sum to 0"),
], ids=["negative", "nan", "length", "zeros"])
def test_bad_weights_are_rejected(backend_name, make, weights, message):
    X, labels, values = _problem()
    y = labels if make is FastMLP else values
    est = make(max_iter=2, backend=backend_name)
    with pytest.raises(ValueError, match=message):
        est.fit(X, y, sample_weight=weights(N))
    assert not hasattr(est, "coefs_")
    with pytest.raises(ValueError, match=message):
        if make is FastMLP:
            est.partial_fit(X, y, sample_weight=weights(N), classes=[0, 1, 2])
        else:
            est.partial_fit(X, y, sample_weight=weights(N))


@pytest.mark.float64  # its models are float64 (_full_batch)
@pytest.mark.filterwarnings("ignore:batch_size=10000 is larger")
@KINDS
def test_partial_fit_with_weights(backend_name, kind):
    X, labels, values = _problem()
    y = _target(kind, labels, values)
    extra = {"classes": [0, 1, 2]} if kind == "classifier" else {}
    ones = _full_batch(kind, backend_name)
    plain = _full_batch(kind, backend_name)
    halved = _full_batch(kind, backend_name)
    for _ in range(3):
        ones.partial_fit(X, y, sample_weight=np.ones(N), **extra)
        plain.partial_fit(X, y, **extra)
        halved.partial_fit(X, y, sample_weight=np.where(np.arange(N) < N // 2, 1.0, 0.0),
                           **extra)
    for a, b in zip(ones.coefs_, plain.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert ones.loss_curve_ == pytest.approx(plain.loss_curve_, rel=1e-9)
    # weights of 0 on half the rows leave them out of the update
    assert not np.allclose(halved.coefs_[0], plain.coefs_[0], rtol=1e-6)
    assert halved.t_ == plain.t_ == 3 * N


def test_early_stopping_with_weights(backend_name):
    X, y = _blobs()
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    clf = _fit(FastMLP(hidden_layer_sizes=(8,), early_stopping=True, max_iter=50,
                       random_state=0, backend=backend_name), X, y, sample_weight=weights)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ >= 1
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert clf.best_validation_score_ == max(scores)
    # the validation accuracy is weighted: the accuracies of 20 rows are multiples of 1/20,
    # and a weighted one almost never is
    n_val = 20
    assert any(abs(s * n_val - round(s * n_val)) > 1e-6 for s in scores)


def test_regressor_early_stopping_with_weights(backend_name):
    X, _, values = _problem(n=200)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(values))
    reg = _fit(FastMLPRegressor(hidden_layer_sizes=(8,), early_stopping=True, max_iter=30,
                                random_state=0, backend=backend_name),
               X, values, sample_weight=weights)
    assert len(reg.validation_scores_) == reg.n_iter_ >= 1
    assert all(s <= 1.0 for s in reg.validation_scores_)
    assert reg.best_validation_score_ == max(reg.validation_scores_)


# ------------------------------------------------------------------------- class_weight


@pytest.mark.float64  # its models are float64 (_full_batch)
def test_balanced_class_weight_equals_its_sample_weight(backend_name):
    X, _, _ = _problem()
    y = np.where(np.arange(N) < 35, 0, np.where(np.arange(N) < 50, 1, 2))  # 35, 15, 10
    classes = np.unique(y)
    factors = compute_class_weight("balanced", classes=classes, y=y)
    assert not np.allclose(factors, 1.0)
    balanced = _fit(_full_batch("classifier", backend_name, class_weight="balanced"), X, y)
    weighted = _fit(_full_batch("classifier", backend_name), X, y,
                    sample_weight=factors[np.searchsorted(classes, y)])
    np.testing.assert_allclose(balanced.predict_proba(X), weighted.predict_proba(X),
                               rtol=1e-9)
    plain = _fit(_full_batch("classifier", backend_name), X, y)
    assert not np.allclose(balanced.predict_proba(X), plain.predict_proba(X), rtol=1e-6)


@pytest.mark.float64  # its models are float64 (_full_batch)
def test_dict_class_weight_equals_its_sample_weight(backend_name):
    X, labels, _ = _problem()
    y = np.array(["ant", "bee", "cat"])[labels]
    class_weight = {"cat": 5.0, "ant": 0.5}  # "bee" left out: weight 1
    by_class = _fit(_full_batch("classifier", backend_name, class_weight=class_weight), X, y)
    weighted = _fit(_full_batch("classifier", backend_name), X, y,
                    sample_weight=np.array([class_weight.get(c, 1.0) for c in y]))
    np.testing.assert_allclose(by_class.predict_proba(X), weighted.predict_proba(X),
                               rtol=1e-9)
    assert list(by_class.classes_) == ["ant", "bee", "cat"]


@pytest.mark.float64  # its models are float64 (_full_batch)
def test_class_weight_times_sample_weight(backend_name):
    X, labels, _ = _problem()
    weights = np.random.default_rng(2).uniform(0.2, 3.0, N)
    class_weight = {0: 2.0, 1: 0.25, 2: 1.5}
    both = _fit(_full_batch("classifier", backend_name, class_weight=class_weight), X,
                labels, sample_weight=weights)
    product = _fit(_full_batch("classifier", backend_name), X, labels,
                   sample_weight=weights * np.array([2.0, 0.25, 1.5])[labels])
    np.testing.assert_allclose(both.predict_proba(X), product.predict_proba(X), rtol=1e-9)
    factors = compute_class_weight("balanced", classes=np.arange(3), y=labels[:50])
    both = _fit(_full_batch("classifier", backend_name, class_weight="balanced"), X[:50],
                labels[:50], sample_weight=weights[:50])
    product = _fit(_full_batch("classifier", backend_name), X[:50], labels[:50],
                   sample_weight=weights[:50] * factors[labels[:50]])
    np.testing.assert_allclose(both.predict_proba(X), product.predict_proba(X), rtol=1e-9)


def test_class_weight_errors(backend_name):
    X, labels, _ = _problem()
    with pytest.raises(ValueError, match=r"not classes: \[7\]"):
        FastMLP(class_weight={0: 1.0, 7: 2.0}, backend=backend_name).fit(X, labels)
    with pytest.raises(ValueError, match="balanced.*partial_fit"):
        FastMLP(class_weight="balanced", backend=backend_name).partial_fit(
            X, labels, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="class_weight"):
        FastMLP(class_weight="bogus", backend=backend_name).fit(X, labels)
    # a dict is fine for partial_fit
    clf = FastMLP(class_weight={2: 3.0}, random_state=0, backend=backend_name)
    clf.partial_fit(X, labels, classes=[0, 1, 2])
    assert clf.n_iter_ == 1


# ------------------------------------------------------------------------- multilabel


def test_multilabel_fit_and_predict(backend_name):
    X, Y = _multilabel()
    clf = _fit(FastMLP(max_iter=200, random_state=0, backend=backend_name), X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 3
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.score(X, Y) > 0.85  # subset accuracy; 0.93 on every backend
    pred = clf.predict(X)
    assert pred.shape == (200, 3) and pred.dtype.kind == "i"
    assert set(np.unique(pred)) <= {0, 1}
    proba = clf.predict_proba(X)
    assert proba.shape == (200, 3) and proba.dtype == np.float64
    assert proba.min() > 0.0 and proba.max() < 1.0
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(pred.dtype))
    # a logistic output per label: the rows need not sum to 1
    assert not np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert clf.score(X, Y) == np.mean(np.all(pred == Y, axis=1))


def test_multilabel_partial_fit_needs_no_classes(backend_name):
    X, Y = _multilabel()
    clf = FastMLP(hidden_layer_sizes=(16,), random_state=0, backend=backend_name)
    for _ in range(10):
        clf.partial_fit(X, Y)
    assert clf.out_activation_ == "logistic"
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert len(clf.loss_curve_) == 10 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.predict(X).shape == (200, 3)
    with pytest.raises(ValueError, match="multilabel"):
        clf.partial_fit(X, np.arange(200) % 3)


def test_multilabel_errors(backend_name):
    X, Y = _multilabel()
    clf = _fit(FastMLP(max_iter=2, warm_start=True, random_state=0, backend=backend_name),
               X, Y)
    with pytest.raises(ValueError, match="multilabel"):
        clf.fit(X, np.arange(200) % 3)  # 1-D labels 0..2, the same classes_
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X, Y[:, 0])  # 1-D labels 0..1
    assert clf.out_activation_ == "logistic"
    multioutput = np.array([[0, 2], [1, 3]] * 100)
    with pytest.raises(ValueError, match="multiclass-multioutput"):
        FastMLP(backend=backend_name).fit(X, multioutput)
    for class_weight in ("balanced", {0: 2.0}):
        with pytest.raises(ValueError, match="class_weight is not supported for multilabel"):
            FastMLP(class_weight=class_weight, backend=backend_name).fit(X, Y)


@pytest.mark.float64  # its models are float64 (_full_batch)
def test_multilabel_sample_weight(backend_name):
    X, Y = _multilabel()
    X, Y = X[:N], Y[:N]
    keep = (np.arange(N) % 3 != 0).astype(np.float64)
    weighted = _fit(_full_batch("classifier", backend_name), X, Y, sample_weight=keep)
    dropped = _fit(_full_batch("classifier", backend_name), X[keep == 1], Y[keep == 1])
    np.testing.assert_allclose(weighted.predict_proba(X), dropped.predict_proba(X),
                               rtol=1e-9)


def test_multilabel_early_stopping(backend_name):
    X, Y = _multilabel()
    clf = _fit(FastMLP(early_stopping=True, max_iter=100, random_state=0,
                       backend=backend_name), X, Y)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ >= 1
    # unweighted subset accuracies of a 20-row validation set
    assert all(0.0 <= s <= 1.0 and s * 20 == pytest.approx(round(s * 20)) for s in scores)
    # it improved on the first epoch's score, then stopped (0.25 -> 0.5 in 15 epochs)
    assert clf.best_validation_score_ == max(scores) > scores[0]
    assert clf.n_iter_ < 100
    assert clf.t_ == clf.n_iter_ * 180


def test_multilabel_save_load(backend_name, tmp_path):
    X, Y = _multilabel()
    clf = _fit(FastMLP(hidden_layer_sizes=(16,), max_iter=5, random_state=0,
                       backend=backend_name), X, Y)
    clf.save(tmp_path / "multilabel.npz")
    loaded = FastMLP.load(tmp_path / "multilabel.npz")
    assert loaded.out_activation_ == "logistic"
    np.testing.assert_array_equal(loaded.classes_, [0, 1, 2])
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
