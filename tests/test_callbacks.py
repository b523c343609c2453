"""scikit-learn's callbacks (set_callbacks, scikit-learn 1.9+) and early stopping by any
scorer, with the best epoch's weights kept."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastmlp import FastMLP, FastMLPRegressor

callback = pytest.importorskip("sklearn.callback", reason="scikit-learn before 1.9")


def _data(n=240, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    return X, (X[:, 0] + X[:, 1] + 0.3 * rng.standard_normal(n) > 1).astype(int)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


class Recorder:
    """A FitCallback that keeps what it is told, and asks to stop after ``stop_after``
    subtasks."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after
        self.events = []
        self.probas = []

    def setup(self, estimator, context):
        self.events.append("setup")

    def teardown(self, estimator, context):
        self.events.append("teardown")

    def on_fit_task_begin(self, estimator, context):
        self.events.append(("begin", context.task_name, context.task_id))

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, fitted_estimator=None):
        self.events.append(("end", context.task_name, context.task_id))
        if context.task_name == "fit":
            return False
        self.probas.append(fitted_estimator.predict_proba(X))
        return self.stop_after is not None and context.task_id + 1 >= self.stop_after


@pytest.mark.parametrize("solver", ["adam", "sgd", "adamw"])
def test_a_callback_sees_every_epoch_and_can_stop_the_fit(backend_name, solver):
    X, y = _data()
    kw = dict(hidden_layer_sizes=(8,), random_state=0, solver=solver, backend=backend_name)
    rec = Recorder(stop_after=3)
    model = _quiet(FastMLP(max_iter=20, **kw).set_callbacks(rec).fit, X, y)
    assert model.n_iter_ == 3 and len(model.loss_curve_) == 3
    epochs = [e for e in rec.events if e[0:1] != ("setup",) and isinstance(e, tuple)
              and e[1] == "epoch"]
    assert epochs == [(kind, "epoch", i) for i in range(3) for kind in ("begin", "end")]
    assert rec.events[:2] == ["setup", ("begin", "fit", 0)]
    assert rec.events[-2:] == [("end", "fit", 0), "teardown"]
    # the estimator a callback is given predicts as the model did at the end of that
    # epoch: as a fit of that many epochs does, bit for bit
    for k in (1, 3):
        same = _quiet(FastMLP(max_iter=k, **kw).fit, X, y)
        np.testing.assert_array_equal(rec.probas[k - 1], same.predict_proba(X))
    # the callback's copies did not share the model's weights
    assert not np.array_equal(rec.probas[0], rec.probas[2])


def test_a_callback_can_stop_lbfgs():
    X, y = _data()
    rec = Recorder(stop_after=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # stopped on purpose: no warning
        model = FastMLP(solver="lbfgs", max_iter=200, random_state=0,
                        backend="numpy").set_callbacks(rec).fit(X, y)
    assert model.n_iter_ == 4 and len(model.loss_curve_) == 4
    assert [e[1:] for e in rec.events if isinstance(e, tuple) and e[0] == "end"] == [
        ("lbfgs-iteration", i) for i in range(4)] + [("fit", 0)]
    # the last iteration's estimator is the model itself
    np.testing.assert_array_equal(rec.probas[-1], model.predict_proba(X))


def test_partial_fit_is_one_epoch_task():
    X, y = _data()
    rec = Recorder()
    model = FastMLP(backend="numpy", random_state=0).set_callbacks(rec)
    model.partial_fit(X, y, classes=[0, 1])
    assert [e for e in rec.events if isinstance(e, tuple)] == [
        ("begin", "fit", 0), ("begin", "epoch", 0), ("end", "epoch", 0), ("end", "fit", 0)]


def test_scoring_monitor_logs_each_epoch():
    X, y = _data()
    monitor = callback.ScoringMonitor(scoring="accuracy")
    kw = dict(hidden_layer_sizes=(8,), random_state=1, backend="numpy")
    _quiet(FastMLP(max_iter=4, **kw).set_callbacks(monitor).fit, X, y)
    rows = monitor.get_logs().data
    per_epoch = sorted((r["task_id"], r["accuracy"]) for r in rows if r["task_name"] == "epoch")
    assert [i for i, _ in per_epoch] == [0, 1, 2, 3]
    two = _quiet(FastMLP(max_iter=2, **kw).fit, X, y)
    assert per_epoch[1][1] == two.score(X, y)


def test_callbacks_reach_the_estimator_in_a_pipeline_and_a_search():
    X, y = _data()

    class Propagated(Recorder):
        max_propagation_depth = None

        def on_fit_task_begin(self, estimator, context):
            self.events.append((context.estimator_name, context.task_name))

        def on_fit_task_end(self, estimator, context, **kwargs):
            return False

    rec = Propagated()
    pipe = make_pipeline(StandardScaler(), FastMLP(max_iter=3, backend="numpy"))
    _quiet(pipe.set_callbacks(rec).fit, X, y)
    assert [e for e in rec.events if e[0] == "FastMLP"] == [("FastMLP", "fit")] + [
        ("FastMLP", "epoch")] * 3
    rec = Propagated()
    search = GridSearchCV(FastMLP(max_iter=2, backend="numpy"), {"alpha": [1e-4, 1e-2]}, cv=2)
    _quiet(search.set_callbacks(rec).fit, X, y)
    # 2 candidates x 2 splits, then the refit: 5 fits of 2 epochs
    assert sum(e == ("FastMLP", "epoch") for e in rec.events) == 10


def test_progress_bar_in_a_pipeline(capsys):
    pytest.importorskip("rich")
    X, y = _data()
    pipe = make_pipeline(StandardScaler(), FastMLP(max_iter=3, backend="numpy"))
    _quiet(pipe.set_callbacks(callback.ProgressBar(max_propagation_depth=None)).fit, X, y)
    assert pipe.score(X, y) > 0.5


def test_set_callbacks_refuses_what_is_not_a_callback():
    with pytest.raises(TypeError, match="FitCallback"):
        FastMLP().set_callbacks(object())


# ---------------------------------------------------------------- early stopping by a scorer


class ParamsByEpoch(Recorder):
    def on_fit_task_end(self, estimator, context, **kwargs):
        if context.task_name == "epoch":
            self.probas.append(estimator._params.copy())
        return False


@pytest.mark.parametrize("early_stopping", [True, "eval_set"])
def test_early_stopping_by_a_scorer_keeps_the_best_epochs_weights(early_stopping):
    X, y = _data(n=400)
    X_eval, y_eval = _data(n=200, seed=1)
    rec = ParamsByEpoch()
    model = FastMLP(hidden_layer_sizes=(16,), max_iter=25, n_iter_no_change=25,
                    early_stopping=early_stopping, scoring="f1", random_state=0,
                    learning_rate_init=0.01, backend="numpy").set_callbacks(rec)
    _quiet(model.fit, X, y, eval_set=(X_eval, y_eval))
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ == len(rec.probas)
    best = int(np.argmax(scores))
    assert model.best_validation_score_ == scores[best]
    np.testing.assert_array_equal(model._params, rec.probas[best])
    if early_stopping == "eval_set":
        # scored on eval_set, with the scorer; nothing of X held out
        assert scores == model.eval_scores_
        assert scores[best] == f1_score(y_eval, model.predict(X_eval))
        assert model.t_ == model.n_iter_ * len(X)
    else:
        assert model.t_ == model.n_iter_ * int(len(X) * 0.9)


def test_early_stopping_scorer_of_the_regressor():
    rng = np.random.default_rng(0)
    X = rng.random((300, 4))
    y = X @ [1.0, -2.0, 0.5, 0.0]
    model = _quiet(FastMLPRegressor(max_iter=6, early_stopping=True, random_state=0,
                                    scoring="neg_mean_absolute_error", backend="numpy").fit,
                   X, y)
    assert all(s <= 0 for s in model.validation_scores_)
    assert model.best_validation_score_ == max(model.validation_scores_)


def test_scoring_and_early_stopping_are_checked():
    X, y = _data()
    with pytest.raises(ValueError, match="early_stopping='eval_set'.*none was given"):
        FastMLP(early_stopping="eval_set", backend="numpy").fit(X, y)
    with pytest.raises(ValueError, match="scoring='no_such_score' is not a scorer"):
        FastMLP(scoring="no_such_score", backend="numpy").fit(X, y)
    with pytest.raises(ValueError,
                       match="early_stopping must be True, False or 'eval_set'; got 'split'"):
        FastMLP(early_stopping="split", backend="numpy").fit(X, y)


def test_a_callable_scorer_is_refused_by_model_files_by_name(tmp_path):
    # a model file holds plain values only: the callable is named, and a file already at
    # the path is left as it was
    X, y = _data()
    model = _quiet(FastMLP(max_iter=2, early_stopping=True, backend="numpy",
                           scoring=lambda est, X, y: est.score(X, y)).fit, X, y)
    path = tmp_path / "model.npz"
    path.write_bytes(b"saved before")
    with pytest.raises(TypeError, match=r"scoring=<function .*> cannot be stored in a "
                                        r"fastmlp model file"):
        model.save(path)
    assert path.read_bytes() == b"saved before"
    model.set_params(scoring="accuracy").save(path)
    assert FastMLP.load(path).get_params()["scoring"] == "accuracy"
