"""FastMLPRegressor: squared-error and Poisson regression, on every available backend."""

import pickle
import re
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.metrics import mean_poisson_deviance, r2_score

from fastmlp import FastMLP, FastMLPRegressor


def _smooth(n=300, seed=0):
    """A smooth nonlinear 1-output problem on inputs of unit scale."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    return X, y


def _three_outputs(n=300, seed=0):
    X, y = _smooth(n, seed)
    return X, np.column_stack([y, np.cos(X[:, 1]), X[:, 0] * X[:, 1]])


def _counts(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    rate = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1] + 0.5)
    return X, rng.poisson(rate).astype(np.float64)


def _fit(est, X, y, **fit_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **fit_kwargs)


def test_fits_a_smooth_nonlinear_function(backend_name):
    X, y = _smooth()
    reg = _fit(FastMLPRegressor(hidden_layer_sizes=(32,), max_iter=50, random_state=0,
                                backend=backend_name), X, y)
    pred = reg.predict(X)
    assert pred.dtype == np.float64 and pred.shape == (300,)
    assert r2_score(y, pred) > 0.95
    assert reg.score(X, y) == r2_score(y, pred)
    assert reg.n_outputs_ == 1 and reg.out_activation_ == "identity"
    assert [c.shape for c in reg.coefs_] == [(2, 32), (32, 1)]
    assert reg.backend_ == backend_name
    assert reg.loss_curve_[-1] < reg.loss_curve_[0] / 5


def test_multi_output(backend_name):
    X, Y = _three_outputs()
    reg = _fit(FastMLPRegressor(hidden_layer_sizes=(32,), max_iter=100, random_state=0,
                                backend=backend_name), X, Y)
    pred = reg.predict(X)
    assert pred.shape == (300, 3) and pred.dtype == np.float64
    assert reg.n_outputs_ == 3
    assert np.all(r2_score(Y, pred, multioutput="raw_values") > 0.95)
    assert reg.score(X, Y) == pytest.approx(r2_score(Y, pred))


def test_column_vector_y_warns_and_predicts_1d(backend_name):
    X, y = _smooth(n=100)
    reg = FastMLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0,
                           backend=backend_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(DataConversionWarning, match="column-vector y"):
            reg.fit(X, y.reshape(-1, 1))
    assert reg.n_outputs_ == 1
    assert reg.predict(X).shape == (100,)


def test_poisson_loss(backend_name):
    X, y = _counts()
    reg = _fit(FastMLPRegressor(loss="poisson", hidden_layer_sizes=(16,), max_iter=50,
                                random_state=0, backend=backend_name), X, y)
    assert reg.out_activation_ == "exp"
    pred = reg.predict(X)
    assert pred.shape == (300,) and pred.dtype == np.float64
    assert np.all(pred > 0)
    fitted = mean_poisson_deviance(y, pred)
    constant = mean_poisson_deviance(y, np.full_like(y, y.mean()))
    assert fitted < 0.75 * constant
    # the output is exp of the pre-activation: exp(logit) from the raw network
    logits = np.maximum(X @ reg.coefs_[0] + reg.intercepts_[0], 0) @ reg.coefs_[1]
    logits = (logits + reg.intercepts_[1]).ravel()
    np.testing.assert_allclose(pred, np.exp(logits), rtol=1e-4)


def test_poisson_refuses_negative_y(backend_name):
    X, y = _counts(n=50)
    y[7] = -1.0
    with pytest.raises(ValueError, match="poisson"):
        FastMLPRegressor(loss="poisson", backend=backend_name).fit(X, y)


def test_lbfgs(backend_name):
    X, y = _smooth()
    reg = _fit(FastMLPRegressor(solver="lbfgs", hidden_layer_sizes=(16,), max_iter=50,
                                random_state=0, n_jobs=1, backend=backend_name), X, y)
    assert 1 <= reg.n_iter_ <= 50
    assert len(reg.loss_curve_) == reg.n_iter_ >= 1
    assert reg.loss_ == reg.loss_curve_[-1]
    assert reg.score(X, y) > 0.99
    assert not hasattr(FastMLPRegressor(solver="lbfgs"), "partial_fit")
    assert hasattr(FastMLPRegressor(solver="adam"), "partial_fit")


@pytest.mark.float64
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_lbfgs_loss_is_half_mean_squared_error_plus_penalty(backend_name, n_outputs):
    X, y = _smooth()
    if n_outputs == 2:
        y = np.column_stack([y, X[:, 0] * X[:, 1]])
    alpha = 1e-2
    reg = _fit(FastMLPRegressor(solver="lbfgs", hidden_layer_sizes=(16,), alpha=alpha,
                                max_iter=50, random_state=0, dtype="float64", n_jobs=1,
                                backend=backend_name), X, y)
    residual = (reg.predict(X) - y).reshape(len(X), -1)
    squared = 0.5 * np.mean(np.sum(residual ** 2, axis=1))
    penalty = alpha / (2 * len(X)) * sum(float((w ** 2).sum()) for w in reg.coefs_)
    np.testing.assert_allclose(reg.loss_, squared + penalty, rtol=1e-6)


def test_partial_fit(backend_name):
    X, y = _smooth()
    reg = FastMLPRegressor(hidden_layer_sizes=(16,), random_state=0, backend=backend_name)
    losses = []
    for call in range(1, 6):
        reg.partial_fit(X, y)
        assert len(reg.loss_curve_) == call and reg.n_iter_ == 1 and reg.t_ == call * 300
        losses.append(reg.loss_)
    assert reg.loss_curve_ == losses
    assert all(b < a for a, b in zip(losses, losses[1:]))
    with pytest.raises(ValueError, match="early_stopping"):
        FastMLPRegressor(early_stopping=True, backend=backend_name).partial_fit(X, y)


def test_early_stopping_scores_r2(backend_name):
    X, y = _smooth()
    reg = _fit(FastMLPRegressor(hidden_layer_sizes=(16,), early_stopping=True, max_iter=60,
                                random_state=0, backend=backend_name), X, y)
    scores = reg.validation_scores_
    assert len(scores) == reg.n_iter_ >= 1
    assert all(isinstance(s, float) and s <= 1.0 for s in scores)
    # R^2, which (unlike an accuracy) goes below 0 for a model worse than the mean
    assert min(scores) < 0 < max(scores)
    assert max(scores) > 0.9
    assert reg.best_validation_score_ == max(scores)
    assert reg.best_loss_ is None
    assert reg.t_ == reg.n_iter_ * 270


def test_save_load_and_pickle_round_trip(backend_name, tmp_path):
    X, Y = _three_outputs(n=100)
    reg = _fit(FastMLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0,
                                backend=backend_name), X, Y)
    expected = reg.predict(X)
    path = tmp_path / "reg.npz"
    reg.save(path)
    loaded = FastMLPRegressor.load(path)
    assert type(loaded) is FastMLPRegressor
    assert loaded.out_activation_ == "identity" and loaded.n_outputs_ == 3
    np.testing.assert_array_equal(loaded.predict(X), expected)
    with pytest.raises(ValueError, match="FastMLPRegressor"):
        FastMLP.load(path)
    unpickled = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(unpickled.predict(X), expected)


def test_save_load_poisson(backend_name, tmp_path):
    X, y = _counts(n=100)
    reg = _fit(FastMLPRegressor(loss="poisson", hidden_layer_sizes=(8,), max_iter=5,
                                random_state=0, backend=backend_name), X, y)
    reg.save(tmp_path / "poisson.npz")
    loaded = FastMLPRegressor.load(tmp_path / "poisson.npz")
    assert loaded.loss == "poisson" and loaded.out_activation_ == "exp"
    np.testing.assert_array_equal(loaded.predict(X), reg.predict(X))


def test_invalid_loss(backend_name):
    X, y = _smooth(n=50)
    with pytest.raises(ValueError, match="loss"):
        FastMLPRegressor(loss="huber", backend=backend_name).fit(X, y)


def test_verbose_prints_loss_and_r2_not_accuracy(backend_name, capsys):
    X, y = _smooth(n=100)
    _fit(FastMLPRegressor(hidden_layer_sizes=(8,), max_iter=2, verbose=True,
                          backend=backend_name), X, y, eval_set=(X, y))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Epoch [1/") and lines[1].startswith("Epoch [2/")
    pattern = r"Epoch \[(\d)/2\], Train Loss: \d+\.\d{4}, Test R2: -?\d+\.\d{4}"
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2"]
    assert all("Train Loss:" in line and "Accuracy" not in line for line in lines)


def test_divergence_and_ctrl_c_keep_the_last_finite_epoch(backend_name, monkeypatch):
    """The regressor shares the classifier's undo of a diverged or interrupted epoch."""
    from fastmlp.backends import get_backend

    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 4)) * 1e3
    y = X @ np.ones(4)
    with pytest.warns(RuntimeWarning, match="training diverged in epoch"):
        reg = FastMLPRegressor(solver="sgd", learning_rate_init=1e6, max_iter=20,
                               random_state=0, backend=backend_name).fit(X, y)
    assert np.isfinite(reg._params).all() and reg.n_iter_ < 20
    assert len(reg.loss_curve_) == reg.n_iter_ and np.isfinite(reg.loss_curve_).all()

    backend = get_backend(backend_name)
    real, calls = backend.train_epoch, []

    def interrupted(params, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            params[:3] = np.nan
            raise KeyboardInterrupt
        return real(params, *args, **kwargs)

    monkeypatch.setattr(backend, "train_epoch", interrupted)
    X = X / 1e3
    with pytest.warns(UserWarning, match="interrupted by the user during epoch 2"):
        # threads as asked: default threads may split an epoch into parts (several
        # calls) while another process keeps a core busy
        reg = FastMLPRegressor(max_iter=5, random_state=0, backend=backend_name,
                               n_jobs=2).fit(X, y)
    monkeypatch.setattr(backend, "train_epoch", real)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = FastMLPRegressor(max_iter=1, random_state=0, backend=backend_name,
                               n_jobs=2).fit(X, y)
    assert reg.n_iter_ == 1
    np.testing.assert_array_equal(reg.predict(X), one.predict(X))


def test_a_diverging_model_scores_a_number_not_minus_infinity(backend_name):
    # scikit-learn's test_mlp_diverging_loss: identity units at learning rate 1 give
    # float32 validation outputs near 1e20 in the first epoch, whose squared errors
    # overflow float32; their R^2 is a (very negative) number, not -inf, and the next
    # epoch diverges, is undone, and ends the fit with a warning
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    model = FastMLPRegressor(hidden_layer_sizes=100, activation="identity", solver="sgd",
                             learning_rate_init=1, max_iter=20, early_stopping=True,
                             random_state=0, backend=backend_name)
    with pytest.warns(RuntimeWarning, match="training diverged"):
        model.fit(X, y)
    last = model.validation_scores_[-1]
    assert isinstance(last, float) and np.isfinite(last) and last < -1e30
    assert model.best_validation_score_ == last
    assert model.loss_ >= 0 and np.isfinite(model.loss_)


def test_outputs_that_overflow_while_diverging_score_nan_and_end_the_fit(backend_name):
    # early stopping's held-out rows overflow the float32 outputs before the training
    # loss does: that epoch scores NaN (scikit-learn's score of such outputs), it is no
    # improvement, and the fit goes on to its divergence check instead of failing with
    # predict's error about X
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    model = FastMLP(hidden_layer_sizes=100, activation="identity", solver="sgd",
                    learning_rate_init=2, max_iter=20, early_stopping=True, random_state=1,
                    backend=backend_name)
    with pytest.warns(RuntimeWarning, match="training diverged"):
        model.fit(X * 50, y)
    assert any(np.isnan(s) for s in model.validation_scores_)
    assert np.isfinite(model._params).all()
