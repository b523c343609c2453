"""FastMLP as a scikit-learn classifier, on every available backend."""

import pickle
import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastmlp import FastMLP, FastMLPRegressor, available_backends

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([0, 1, 1, 0])


def _blobs(n=200, n_features=6, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, n_features)) * 3
    y = rng.integers(0, n_classes, n)
    X = centers[y] + rng.standard_normal((n, n_features))
    return X.astype(np.float32), y


def _expected_failed_checks(estimator):
    if estimator.dtype == "float32":
        why = ("float32 arithmetic: the weighted and the repeated rows fit the same model "
               "to about 1e-6 (relative), and the check asks for 1e-7; in float64 it passes")
        failing = {"check_sample_weight_equivalence_on_dense_data": why,
                   "check_sample_weight_equivalence_on_sparse_data": why}
        if isinstance(estimator, FastMLPRegressor):
            # the dense layers' products go through BLAS, which may round a row's product
            # differently with the number of rows beside it (OpenBLAS's Haswell kernels do);
            # the check asks for 1e-7 on outputs near 3, about one float32 step. What does
            # hold is tested in test_a_row_predicts_the_same_alone_and_among_others
            failing["check_methods_subset_invariance"] = (
                "float32 outputs of one row alone and among others agree to a few units "
                "in the last place, not to the check's 1e-7")
        return failing
    return {}


# scikit-learn's checks test the estimators' API, the same on every backend: the quick
# suite runs them on the defaults (auto: the extension, or numba once compiled) and on
# numba by name; every other setting (most of the suite's time) with -m exhaustive
_QUICK_CHECKS = [FastMLP(), FastMLPRegressor()] + [
    FastMLP(backend=name) for name in ("numba",) if name in available_backends()]
_EXHAUSTIVE_CHECKS = (
    [FastMLP(backend=name) for name in available_backends() if name != "numba"]
    + [FastMLPRegressor(backend=name) for name in available_backends()]
    + [FastMLP(solver="lbfgs", backend="numpy"), FastMLP(dtype="float64"),
       FastMLPRegressor(dtype="float64"), FastMLPRegressor(solver="lbfgs", dtype="float64")])


@parametrize_with_checks(_QUICK_CHECKS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.exhaustive
@parametrize_with_checks(_EXHAUSTIVE_CHECKS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks_of_every_setting(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float64", 1e-13)])
@pytest.mark.parametrize("estimator", [FastMLP, FastMLPRegressor])
def test_a_row_predicts_the_same_alone_and_among_others(backend_name, estimator, dtype,
                                                        rtol):
    # what scikit-learn's check_methods_subset_invariance asks, with the tolerance that
    # holds on every CPU and BLAS: each row alone, in blocks of 7, and all at once
    X, y = _blobs(n=300)
    target = y if estimator is FastMLP else X[:, 0] * 3 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = estimator(hidden_layer_sizes=(32, 16), max_iter=3, random_state=0,
                          dtype=dtype, backend=backend_name).fit(X, target)
    method = model.predict_proba if estimator is FastMLP else model.predict
    whole = method(X)
    alone = np.concatenate([method(X[i:i + 1]) for i in range(X.shape[0])])
    blocks = np.concatenate([method(X[i:i + 7]) for i in range(0, X.shape[0], 7)])
    scale = np.abs(whole).max()
    np.testing.assert_allclose(alone, whole, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(blocks, whole, rtol=rtol, atol=rtol * scale)
    if estimator is FastMLP:
        np.testing.assert_array_equal(model.predict(X[:1]), model.predict(X)[:1])


def test_xor_needs_a_hidden_layer(backend_name):
    linear = FastMLP(hidden_layer_sizes=(), max_iter=300, learning_rate_init=0.05,
                     random_state=0, backend=backend_name, batch_size=4)
    deep = FastMLP(hidden_layer_sizes=(8,), activation="tanh", max_iter=500,
                   learning_rate_init=0.05, random_state=0, backend=backend_name, batch_size=4,
                   tol=0, n_iter_no_change=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert linear.fit(XOR_X, XOR_Y).score(XOR_X, XOR_Y) <= 0.75
        assert deep.fit(XOR_X, XOR_Y).score(XOR_X, XOR_Y) == 1.0


@pytest.mark.reference_exhaustive
def test_mnist_accuracy(backend_name, mnist):
    (X, y), (X_test, y_test) = mnist
    clf = FastMLP(max_iter=5, n_iter_no_change=99, random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y, eval_set=(X_test, y_test))
    assert clf.n_iter_ == 5
    assert clf.t_ == 5 * 60000
    assert len(clf.eval_scores_) == 5
    assert clf.eval_scores_[-1] == clf.score(X_test, y_test)
    assert clf.score(X_test, y_test) >= 0.97
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_fitted_attributes(backend_name):
    X, y = _blobs()
    clf = FastMLP(hidden_layer_sizes=(10, 7), max_iter=3, backend=backend_name, random_state=0)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        clf.fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(6, 10), (10, 7), (7, 3)]
    assert [b.shape for b in clf.intercepts_] == [(10,), (7,), (3,)]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.out_activation_ == "softmax"
    assert clf.n_features_in_ == 6 and clf.n_iter_ == 3 and clf.t_ == 600
    assert clf.backend_ == backend_name
    assert len(clf.loss_curve_) == 3 and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.coefs_[0].dtype == np.float32
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])


@pytest.mark.numba  # auto's pick follows numba's compile
def test_auto_backend_records_choice():
    X, y = _blobs(n=50)
    clf = FastMLP(max_iter=2).fit(X, y)
    from fastmlp.backends import auto_candidates

    expected = next(name for name in auto_candidates("float32")
                    if name in available_backends())
    assert clf.backend_ == expected


def test_string_labels_and_binary(backend_name):
    X, y = _blobs(n_classes=2)
    labels = np.array(["spam", "ham"])[y]
    clf = FastMLP(max_iter=50, random_state=0, backend=backend_name).fit(X, labels)
    assert list(clf.classes_) == ["ham", "spam"]
    assert clf.predict_proba(X).shape == (200, 2)
    assert clf.score(X, labels) > 0.95
    assert set(clf.predict(X)) <= {"ham", "spam"}


def test_float64_dtype(backend_name):
    X, y = _blobs()
    clf = FastMLP(max_iter=20, dtype="float64", random_state=0, backend=backend_name).fit(X, y)
    assert clf.coefs_[0].dtype == np.float64
    assert clf.predict_proba(X).dtype == np.float64
    assert clf.score(X, y) > 0.9


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_every_activation_and_solver_learns(backend_name, activation, solver):
    X, y = _blobs()
    clf = FastMLP(hidden_layer_sizes=(16,), activation=activation, solver=solver,
                  learning_rate_init=0.01, max_iter=40, random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.score(X, y) > 0.9
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive"])
def test_learning_rate_schedules(backend_name, schedule):
    X, y = _blobs()
    clf = FastMLP(solver="sgd", learning_rate=schedule, learning_rate_init=0.05, max_iter=30,
                  random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    lr = clf._optimizer.learning_rate
    if schedule == "invscaling":
        assert lr == pytest.approx(0.05 / (clf.t_ + 1) ** 0.5)
    elif schedule == "constant":
        assert lr == 0.05
    assert clf.score(X, y) > 0.9


def test_adaptive_schedule_divides_learning_rate(backend_name):
    X, y = _blobs()
    clf = FastMLP(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=10.0,
                  n_iter_no_change=2, max_iter=20, random_state=0, backend=backend_name).fit(X, y)
    # tol=10 means no epoch after the first counts as an improvement: the rate drops 5x at
    # epochs 4, 7, 10, ... (each time the count exceeds n_iter_no_change=2, then resets).
    assert clf.n_iter_ == 20
    assert clf._optimizer.learning_rate == pytest.approx(0.05 / 5 ** ((clf.n_iter_ - 1) // 3))
    assert clf._optimizer.learning_rate < 0.05


def test_convergence_stops_early(backend_name):
    X, y = _blobs()
    clf = FastMLP(max_iter=500, tol=1.0, n_iter_no_change=2, random_state=0,
                  backend=backend_name).fit(X, y)
    # As in scikit-learn: the first epoch sets the best loss, then training stops once the
    # count of epochs without an improvement of tol exceeds n_iter_no_change (2 < 3).
    assert clf.n_iter_ == 4


def test_early_stopping(backend_name):
    X, y = _blobs(n=400)
    clf = FastMLP(early_stopping=True, validation_fraction=0.25, n_iter_no_change=3,
                  max_iter=200, random_state=0, backend=backend_name).fit(X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_ < 200
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.t_ == clf.n_iter_ * 300


def test_partial_fit(backend_name):
    X, y = _blobs()
    clf = FastMLP(random_state=0, backend=backend_name)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    first = clf.coefs_[0].copy()
    assert clf.n_iter_ == 1 and clf.t_ == 100
    clf.partial_fit(X[100:], y[100:])
    # as in scikit-learn: n_iter_ counts this call's epochs, t_ every sample seen
    assert clf.n_iter_ == 1 and clf.t_ == 200 and len(clf.loss_curve_) == 2
    assert not np.array_equal(first, clf.coefs_[0])
    for _ in range(20):
        clf.partial_fit(X, y)
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not seen"):
        clf.partial_fit(X[:3], np.array([0, 1, 7]))


def test_partial_fit_equals_fit_one_epoch(backend_name):
    X, y = _blobs()
    a = FastMLP(max_iter=1, random_state=3, shuffle=False, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a.fit(X, y)
    b = FastMLP(random_state=3, shuffle=False, backend=backend_name).partial_fit(
        X, y, classes=np.unique(y))
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


def test_warm_start(backend_name):
    X, y = _blobs()
    kwargs = dict(max_iter=2, random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cold = FastMLP(**kwargs).fit(X, y)
        cold_again = clone(cold).fit(X, y)
        warm = FastMLP(warm_start=True, **kwargs).fit(X, y)
        start = warm.coefs_[0].copy()
        warm.fit(X, y)
    np.testing.assert_array_equal(cold.coefs_[0], cold_again.coefs_[0])
    # continued, not restarted; n_iter_ counts this fit's epochs, as in scikit-learn
    assert warm.n_iter_ == 2 and len(warm.loss_curve_) == 4 and warm.t_ == 4 * len(y)
    assert not np.array_equal(start, warm.coefs_[0])
    # scikit-learn's message, word for word (its test_warm_start matches it)
    message = ("warm_start can only be used where `y` has the same classes as in the previous "
               "call to fit. Previously got [0 1 2], `y` has [0 1]")
    with pytest.raises(ValueError, match=re.escape(message)):
        warm.fit(X, np.where(y == 2, 1, y))


@pytest.mark.parametrize("labels, named", [([0, 0, 0, 1], "[1]"),
                                           (["a", "b", "b", "b"], "['a']")])
def test_early_stopping_split_names_the_small_classes(labels, named):
    # scikit-learn's test_early_stopping_stratified: a class with one member cannot be on
    # both sides of a stratified split, and the message says which, by the user's labels
    X = [[1, 2], [2, 3], [3, 4], [4, 5]]
    with pytest.raises(ValueError, match=r"The least populated classes in y have only 1 "
                       r"member.*Classes with too few members are: " + re.escape(named)):
        FastMLP(early_stopping=True, backend="numpy").fit(X, labels)


def test_pickle_round_trip(backend_name):
    X, y = _blobs()
    clf = FastMLP(max_iter=5, random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    # the loaded layers are still views of one parameter vector
    loaded.coefs_[0][...] = 0
    assert np.all(loaded._params[: loaded.coefs_[0].size] == 0)


def test_pipeline_and_grid_search(backend_name):
    X, y = _blobs()
    pipe = make_pipeline(StandardScaler(), FastMLP(max_iter=20, random_state=0,
                                                   backend=backend_name))
    grid = GridSearchCV(pipe, {"fastmlp__hidden_layer_sizes": [(4,), (16,)]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.9


def test_summary(capsys):
    X = np.zeros((2, 784), dtype=np.float32)
    clf = FastMLP(max_iter=1, backend="numpy")
    assert "not fitted" in clf.summary(print_fn=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(np.vstack([X] * 5), np.arange(10))
    text = clf.summary()
    assert capsys.readouterr().out.strip() == text
    assert "100,352" in text and "138" in text and "101,770" in text
    assert "784 -> 128" in text and "128 -> 10" in text and "relu" in text
    assert clf.n_parameters_ == 101_770


@pytest.mark.parametrize("make, y, output", [
    (lambda: FastMLP(), np.arange(6) % 3, "softmax"),
    (lambda: FastMLP(), np.eye(6, 3, dtype=int), "logistic"),
    (lambda: FastMLPRegressor(), np.arange(6.0), "identity"),
    (lambda: FastMLPRegressor(loss="poisson"), np.arange(6.0), "exp"),
])
def test_summary_names_the_output_function_that_was_fitted(make, y, output):
    model = make().set_params(hidden_layer_sizes=(4,), max_iter=1, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(np.ones((6, 3)), y)
    output_row = next(line for line in model.summary(print_fn=None).splitlines()
                      if line.startswith("output"))
    assert output_row.split()[4] == output == model.out_activation_


def test_verbose_prints_epoch_lines(backend_name, capsys):
    X, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        FastMLP(max_iter=2, verbose=True, backend=backend_name).fit(X, y, eval_set=(X, y))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    import re

    pattern = (r"Epoch \[(\d)/2\], Train Loss: \d+\.\d{4}, Train Accuracy: \d+\.\d{2}%, "
               r"Test Accuracy: \d+\.\d{2}%")
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2"]


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_is_rejected(backend_name, bad):
    X, y = _blobs(n=20)
    X[3, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        FastMLP(backend=backend_name).fit(X, y)


def test_wrong_feature_count_at_predict(backend_name):
    X, y = _blobs(n=20)
    clf = FastMLP(max_iter=1, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    with pytest.raises(ValueError, match="5 features, but FastMLP is expecting 6"):
        clf.predict(X[:, :5])


@pytest.mark.parametrize("X, message", [
    (np.zeros(10), "Expected 2D array"),
    (np.zeros((10, 2, 2)), "dim 3|3 dimensions|3D"),
    (np.zeros((0, 3)), "0 sample"),
    (np.zeros((10, 0)), "0 feature"),
])
def test_bad_X_shapes(backend_name, X, message):
    with pytest.raises(ValueError, match=message):
        FastMLP(backend=backend_name).fit(X, np.arange(len(X)) % 2)


def test_mismatched_lengths(backend_name):
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        FastMLP(backend=backend_name).fit(np.zeros((10, 2)), np.zeros(9))


def test_predict_before_fit(backend_name):
    with pytest.raises(NotFittedError):
        FastMLP(backend=backend_name).predict(np.zeros((1, 2)))


@pytest.mark.parametrize("param, value, message", [
    ("activation", "softplus", "activation='softplus' is not supported"),
    ("solver", "newton", "solver='newton' is not supported"),
    ("backend", "cuda", "unknown backend 'cuda'"),
    ("learning_rate", "exponential", "learning_rate='exponential'"),
    ("dtype", "float16", "dtype='float16'"),
    ("hidden_layer_sizes", (10, 0), "positive integers"),
    ("hidden_layer_sizes", (-3,), "positive integers"),
    ("learning_rate_init", 0.0, "learning_rate_init must be in the range"),
    ("learning_rate_init", -1.0, "learning_rate_init must be in the range"),
    ("batch_size", 0, "batch_size must be in the range"),
    ("max_iter", 0, "max_iter must be in the range"),
    ("alpha", -1.0, "alpha must be in the range"),
    ("momentum", 1.5, "momentum must be in the range"),
    ("validation_fraction", 1.0, "validation_fraction must be in the range"),
    ("beta_1", 1.0, "beta_1 must be in the range"),
    ("epsilon", 0.0, "epsilon must be in the range"),
    ("n_iter_no_change", 0, "n_iter_no_change must be in the range"),
    ("n_jobs", 0, "n_jobs must be"),
    ("tol", np.nan, "tol must be finite"),
])
def test_bad_parameters(backend_name, param, value, message):
    X, y = _blobs(n=20)
    clf = FastMLP(**{"backend": backend_name, param: value})
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


@pytest.mark.parametrize("param, value", [("max_iter", 2.5), ("batch_size", "big"),
                                          ("alpha", "0.1"), ("hidden_layer_sizes", None)])
def test_wrongly_typed_parameters(backend_name, param, value):
    X, y = _blobs(n=20)
    with pytest.raises(TypeError, match=param):
        FastMLP(**{"backend": backend_name, param: value}).fit(X, y)


def test_batch_size_larger_than_data_is_clamped(backend_name):
    X, y = _blobs(n=30)
    with pytest.warns(UserWarning, match="batch_size=100 is larger"):
        clf = FastMLP(batch_size=100, max_iter=2, backend=backend_name,
                      n_iter_no_change=99).fit(X, y)
    assert clf.n_iter_ == 2


def test_n_jobs_restores_thread_settings(backend_name):
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info()]
    X, y = _blobs(n=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        FastMLP(max_iter=2, n_jobs=1, backend=backend_name).fit(X, y)
    assert [i["num_threads"] for i in threadpool_info()] == before


@pytest.mark.parametrize("param, value, error, message", [
    ("learning_rate_init", 0.0, ValueError,
     "learning_rate_init must be in the range (0.0, inf); got 0.0"),
    ("max_iter", 0, ValueError, "max_iter must be in the range [1, inf); got 0"),
    ("momentum", 1.5, ValueError, "momentum must be in the range [0.0, 1.0]; got 1.5"),
    ("beta_1", 1.0, ValueError, "beta_1 must be in the range [0.0, 1.0); got 1.0"),
    ("validation_fraction", 1.0, ValueError,
     "validation_fraction must be in the range (0.0, 1.0); got 1.0"),
    ("solver", "newton", ValueError,
     "solver='newton' is not supported; allowed values are 'sgd', 'adam', 'lbfgs', "
     "'lazy_adam', 'adamw'"),
    ("weight_decay", -0.1, ValueError, "weight_decay must be in the range [0.0, inf); got -0.1"),
    ("early_stopping", "yes", ValueError,
     "early_stopping must be True, False or 'eval_set'; got 'yes'"),
    ("scoring", 3, ValueError,
     "scoring must be None, a scorer name (such as 'f1_macro') or a callable "
     "scorer(estimator, X, y); got 3"),
    ("dtype", np.float16, ValueError,
     "dtype=<class 'numpy.float16'> is not supported; allowed values are 'float32', 'float64'"),
    ("n_jobs", 0, ValueError, "n_jobs must be a positive integer, -1 (all CPUs) or None; got 0"),
    ("tol", np.inf, ValueError, "tol must be finite, got inf"),
    ("max_iter", 2.5, TypeError, "max_iter must be an integer, got 2.5"),
    ("alpha", "0.1", TypeError, "alpha must be a real number, got '0.1'"),
    ("batch_size", True, TypeError, "batch_size must be an integer, got True"),
    ("hidden_layer_sizes", (4, True), ValueError,
     "hidden_layer_sizes must contain positive integers, got (4, True)"),
])
def test_parameter_errors_name_the_parameter_the_value_and_what_is_allowed(param, value, error,
                                                                          message):
    X, y = _blobs(n=20)
    with pytest.raises(error) as caught:
        FastMLP(**{"backend": "numpy", param: value}).fit(X, y)
    assert str(caught.value) == message


def test_every_parameter_is_checked_or_declared_unchecked():
    from fastmlp._params import PARAMETER_CONSTRAINTS, UNCHECKED

    declared = sorted([*PARAMETER_CONSTRAINTS, *UNCHECKED])
    assert declared == sorted({*FastMLP().get_params(), *FastMLPRegressor().get_params()})


def test_the_resolved_record_has_a_field_per_checked_parameter():
    from dataclasses import fields

    from fastmlp._params import PARAMETER_CONSTRAINTS, Resolved, validate_params

    assert [f.name for f in fields(Resolved)] == list(PARAMETER_CONSTRAINTS)
    # a parameter the estimator does not have stays None
    assert validate_params(FastMLP(backend="numpy")).loss is None
    assert validate_params(FastMLPRegressor(backend="numpy")).class_weight is None


@pytest.mark.parametrize("early_stopping, what, not_what", [
    (False, "Training loss", "Validation score"),
    (True, "Validation score", "Training loss"),
])
def test_verbose_says_what_stopped_improving(backend_name, capsys, early_stopping, what,
                                             not_what):
    X, y = _blobs()
    clf = FastMLP(max_iter=500, tol=1.0, n_iter_no_change=2, verbose=True,
                  early_stopping=early_stopping, random_state=0, backend=backend_name)
    clf.fit(X, y)
    out = capsys.readouterr().out
    assert (f"{what} did not improve more than tol=1.0 for 2 consecutive epochs: "
            "no improvement.") in out
    assert not_what not in out
    assert clf.n_iter_ < 500


def test_partial_fit_refuses_early_stopping_before_any_work(backend_name):
    X, y = _blobs()
    clf = FastMLP(early_stopping=True, backend=backend_name)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        clf.partial_fit(X, y, classes=np.unique(y))
    assert not hasattr(clf, "coefs_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    before = clf._params.copy()
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        clf.partial_fit(X, y)
    np.testing.assert_array_equal(clf._params, before)


def test_warm_start_switching_early_stopping_off_and_on(backend_name):
    X, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastMLP(early_stopping=True, max_iter=3, random_state=0,
                      backend=backend_name).fit(X, y)
        assert clf.best_loss_ is None
        clf.set_params(early_stopping=False, warm_start=True).fit(X, y)
        assert clf.n_iter_ == 3 and clf.best_loss_ == min(clf.loss_curve_[3:])
        clf.set_params(early_stopping=True).fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.validation_scores_) >= 3


def test_early_stopping_needs_a_stratified_split(backend_name):
    X, y = _blobs()
    y = y.copy()
    y[0] = 3  # a class of one member cannot be on both sides of the split
    with pytest.raises(ValueError, match="stratified validation set.*only 1 member"):
        FastMLP(early_stopping=True, backend=backend_name).fit(X, y)
    with pytest.raises(ValueError, match="validation set is too small|stratified"):
        FastMLP(early_stopping=True, validation_fraction=0.004,
                backend=backend_name).fit(X[:200], _blobs()[1][:200])


def test_patience_may_be_infinite(backend_name):
    X, y = _blobs()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        clf = FastMLP(n_iter_no_change=np.inf, tol=1e9, max_iter=4, random_state=0,
                      backend=backend_name).fit(X, y)
    assert clf.n_iter_ == 4  # tol so large that no epoch improves, yet it never stops
    with pytest.raises(ValueError, match="n_iter_no_change"):
        FastMLP(n_iter_no_change=0, backend=backend_name).fit(X, y)
    for bad in (2.5, -np.inf):
        with pytest.raises(TypeError, match="n_iter_no_change"):
            FastMLP(n_iter_no_change=bad, backend=backend_name).fit(X, y)


@pytest.mark.float64
def test_lbfgs_matches_the_reference_backend(backend_name):
    X, y = _blobs(n=150)
    kwargs = dict(solver="lbfgs", hidden_layer_sizes=(10,), alpha=1e-2, max_iter=40,
                  random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastMLP(backend=backend_name, **kwargs).fit(X, y)
        ref = FastMLP(backend="numpy", **kwargs).fit(X, y)
    assert 1 <= clf.n_iter_ <= 40 and len(clf.loss_curve_) == clf.n_iter_
    assert clf.loss_ == clf.loss_curve_[-1] == min(clf.loss_curve_)
    np.testing.assert_allclose(clf.loss_, ref.loss_, rtol=1e-6)
    np.testing.assert_allclose(clf._params, ref._params, rtol=1e-4, atol=1e-6)
    assert clf.score(X, y) > 0.95
    # the loss it reports is the one it minimised: mean cross-entropy + alpha/2n ||W||^2
    proba = clf.predict_proba(X)
    xent = -np.mean(np.log(proba[np.arange(len(y)), y]))
    penalty = 1e-2 / (2 * len(y)) * sum(float((w ** 2).sum()) for w in clf.coefs_)
    np.testing.assert_allclose(clf.loss_, xent + penalty, rtol=1e-6)


def test_lbfgs_limits_and_partial_fit(backend_name):
    X, y = _blobs()
    clf = FastMLP(solver="lbfgs", max_iter=3, random_state=0, backend=backend_name)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge after 3"):
        clf.fit(X, y)
    assert clf.n_iter_ == 3
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        FastMLP(solver="lbfgs", max_fun=4, random_state=0, backend=backend_name).fit(X, y)
    # as in scikit-learn, a non-stochastic solver has no partial_fit at all
    assert not hasattr(clf, "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as info:
        clf.partial_fit(X, y)
    assert "lbfgs is not stochastic" in str(info.value.__cause__)
    with pytest.raises(ValueError, match="max_fun"):
        FastMLP(solver="lbfgs", max_fun=0, backend=backend_name).fit(X, y)
    # warm start goes on from the weights reached
    warm = FastMLP(solver="lbfgs", max_iter=3, warm_start=True, random_state=0,
                   backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = warm.fit(X, y).loss_
        assert warm.fit(X, y).loss_ < first
    assert len(warm.loss_curve_) == 6


def test_eval_scores_belong_to_the_fit_that_made_them(backend_name):
    X, y = _blobs()
    clf = FastMLP(max_iter=2, warm_start=True, random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y, eval_set=(X[:50], y[:50]))
        assert len(clf.eval_scores_) == 2 and clf.eval_scores_[-1] == clf.score(X[:50], y[:50])
        clf.fit(X, y)
    assert not hasattr(clf, "eval_scores_")


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decaying_schedules_span_the_fit(backend_name, monkeypatch, solver, schedule):
    from fastmlp.backends import get_backend
    from fastmlp.backends.codes import SCHEDULES

    backend = get_backend(backend_name)
    real, seen = backend.train_epoch, []

    def recording(*args):
        seen.append(args[11])  # the OptimizerStep record
        return real(*args)

    monkeypatch.setattr(backend, "train_epoch", recording)
    X, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # threads as asked: default threads may split an epoch into parts (several
        # calls) while another process keeps a core busy
        clf = FastMLP(solver=solver, learning_rate=schedule, max_iter=3, random_state=0,
                      backend=backend_name, n_jobs=2).fit(X, y)
        clf.set_params(warm_start=True).fit(X, y)  # a new fit starts its schedule anew
    n = len(y)
    assert [(s.schedule, s.seen, s.horizon) for s in seen] == 2 * [
        (SCHEDULES[schedule], float(e * n), float(3 * n)) for e in range(3)]
    assert all(s.lr == clf.learning_rate_init for s in seen)
    monkeypatch.setattr(backend, "train_epoch", real)
    constant = FastMLP(solver=solver, max_iter=3, random_state=0, backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        constant.fit(X, y)
        decayed = FastMLP(solver=solver, learning_rate=schedule, max_iter=3, random_state=0,
                          backend=backend_name).fit(X, y)
    assert not np.array_equal(constant._params, decayed._params)
    assert decayed.score(X, y) > 0.8  # it still learns (3 epochs; SGD is slow here)


@pytest.mark.parametrize("case", ["batch_size", "max_iter", "lbfgs", "column_y", "regressor"])
def test_warnings_of_a_fit_point_at_the_users_call(case):
    # a warning raised deep inside the package names the line that called fit, as
    # scikit-learn's do, so that the user sees which call of theirs it is about
    X = np.random.default_rng(0).random((12, 3))
    y = np.arange(12) % 2
    model, args = {
        "batch_size": (FastMLP(batch_size=100, max_iter=1), (X, y)),
        "max_iter": (FastMLP(max_iter=1), (X, y)),
        "lbfgs": (FastMLP(solver="lbfgs", max_iter=1), (X, y)),
        "column_y": (FastMLP(max_iter=1), (X, y[:, None])),
        "regressor": (FastMLPRegressor(max_iter=1), (X, y[:, None].astype(float))),
    }[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.set_params(backend="numpy", hidden_layer_sizes=(4,)).fit(*args)
    assert caught
    for warning in caught:
        assert warning.filename == __file__, (str(warning.message), warning.filename)
