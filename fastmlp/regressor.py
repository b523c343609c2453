"""FastMLPRegressor: the scikit-learn regressor. It validates the targets and scores with
R^2; the epoch loop, L-BFGS, prediction and model files are shared with the classifier
(fastmlp/_base.py), and all arithmetic on arrays happens in the backend's kernels."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import r2_score
from sklearn.utils.metaestimators import available_if

from ._base import (
    SPARSE_FORMATS,
    BaseMLP,
    checked_X,
    input_dtypes,
    validated_fit_data,
    weights_or_none,
)
from .backends.codes import EXP, IDENTITY, Target

# loss -> the output function it is the canonical loss of
LOSSES = {"squared_error": "identity", "poisson": "exp"}


class FastMLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor trained with compiled mini-batch kernels.

    The network of FastMLP with an output for each target: the identity, trained on half
    the squared error (``loss="squared_error"``), or the exponential, trained on half the
    Poisson deviance (``loss="poisson"``, for counts and rates; y must be >= 0). One- and
    multi-output y. Parameters mirror scikit-learn's ``MLPRegressor``; ``backend``,
    ``dtype``, ``n_jobs``, ``input_scale`` and ``stream`` are fastmlp's own, and every parameter
    FastMLP shares means what it means there (see ``FastMLP``), defaults included: one
    hidden layer of 128 ReLU units, mini-batches of 64 rows, Adam at 2e-3.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default "squared_error"
        Each mini-batch of n rows minimises the mean over its rows of
        ``0.5 * sum((z - y) ** 2)`` (squared error; the sum runs over the outputs) or of
        ``sum(exp(z) - y z + y log y - y)`` (half the Poisson deviance, predictions
        ``exp(z)``), plus ``alpha / (2 n) * sum(W ** 2)``; with sample_weight, the
        weighted mean, as scikit-learn defines it.
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, \
learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, warm_start, \
momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2, \
epsilon, n_iter_no_change, max_fun, backend, dtype, n_jobs, input_scale, stream
        As in FastMLP. Early stopping holds out a random (not stratified)
        ``validation_fraction`` and scores it with R^2.

    Attributes
    ----------
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, t_, loss_curve_, \
best_loss_, validation_scores_, best_validation_score_, n_layers_, backend_
        As in FastMLP.
    loss_ : float
        Mean loss of the last epoch (the loss above plus the L2 term).
    n_outputs_ : int
        Number of targets.
    out_activation_ : str
        "identity" (squared error) or "exp" (Poisson).
    """

    _SCORE_NAME = "R2"

    def __init__(self, loss="squared_error", hidden_layer_sizes=(128,), activation="relu", *,
                 solver="adam", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=2e-3, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype="float32", n_jobs=None, input_scale=None, stream="auto"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, backend=backend, dtype=dtype, n_jobs=n_jobs,
            input_scale=input_scale, stream=stream)
        self.loss = loss

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        """Train on (X, y), from fresh weights unless ``warm_start`` is set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional
            Each row's weight in the loss and its gradient; also weighs the R^2 of early
            stopping's validation set.
        eval_set : tuple (X_eval, y_eval), optional
            Scored (R^2) after every epoch into ``eval_scores_``.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=False, eval_set=eval_set)

    @available_if(BaseMLP._check_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights."""
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        return self._fit(X, y, sample_weight, incremental=True)

    def _targets(self, X, y, p, incremental, classes, reinitialise):
        """Validate X and y (numbers, finite; for the Poisson loss >= 0); y as a
        (n_samples, n_outputs) matrix of the model's dtype."""
        dtype = p["dtype"]
        X, y = validated_fit_data(self, X, y, p["backend"], reset=reinitialise,
                                  dtype=input_dtypes(dtype), order="C",
                                  accept_sparse=SPARSE_FORMATS, multi_output=True,
                                  y_numeric=True)
        X = checked_X(X)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. "
                          "Please change the shape of y to (n_samples,), for example using "
                          "ravel().", DataConversionWarning, stacklevel=4)
        values = np.ascontiguousarray(y.reshape(y.shape[0], -1), dtype=dtype)
        if not np.isfinite(values).all():
            raise ValueError("y holds values too large for the model's dtype "
                             f"({np.dtype(dtype)}); scale y or fit with dtype='float64'")
        output = LOSSES[self.loss]
        if output == "exp" and values.size and values.min() < 0:
            raise ValueError("loss='poisson' needs y >= 0 (counts or rates); y has values "
                             f"down to {values.min():g}")
        target = Target(EXP if output == "exp" else IDENTITY, np.empty(0, dtype=np.int64),
                        values, np.empty(0, dtype=dtype))
        return X, target, output, None

    def _score_target(self, backend, activation, X, target):
        """R^2 of the predictions (weighted by the rows' weights, if any)."""
        pred = self._forward(backend, activation, X, self._output_code)
        return float(r2_score(target.values, pred, sample_weight=weights_or_none(target)))

    def predict(self, X):
        """Predictions, of shape (n_samples,) for one output, else (n_samples, n_outputs)."""
        out = self._predict_forward(X).astype(np.float64)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
