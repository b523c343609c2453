"""FastMLPRegressor: the scikit-learn regressor. It validates the targets and scores with
R^2; the epoch loop, L-BFGS, prediction and model files are shared with the classifier
(fastmlp/_base.py), and all arithmetic on arrays happens in the backend's kernels."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import r2_score
from sklearn.utils.metaestimators import available_if

from ._base import BaseMLP
from ._inputs import SPARSE_FORMATS, checked_X, input_dtypes, validated_fit_data, weights_or_none
from ._report import warn_user
from .backends.codes import EXP, IDENTITY, Target

# loss -> the output function it is the canonical loss of
LOSSES = {"squared_error": "identity", "poisson": "exp"}


class FastMLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor trained by compiled mini-batch kernels.

    The network of :class:`FastMLP` with an output for each target: the identity, trained
    on half the squared error (``loss="squared_error"``), or the exponential, trained on
    half the Poisson deviance (``loss="poisson"``, for counts and rates; y must be >= 0).
    One- and multi-output y. The parameters are those of scikit-learn's ``MLPRegressor``
    and mean what they mean there; ``backend``, ``dtype``, ``n_jobs``, ``input_scale``
    and ``stream`` are fastmlp's own. Every parameter it shares with FastMLP has
    FastMLP's meaning and default: one hidden layer of 128 ReLU units, mini-batches of
    64 rows, Adam at 2e-3.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default "squared_error"
        Each mini-batch of n rows minimises the mean over its rows of
        ``0.5 * sum((z - y) ** 2)`` (squared error; the sum runs over the outputs) or of
        ``sum(exp(z) - y z + y log y - y)`` (half the Poisson deviance, predictions
        ``exp(z)``), plus ``alpha / (2 n) * sum(W ** 2)``; with sample_weight, the
        weighted mean, as scikit-learn defines it.
    hidden_layer_sizes : int or tuple of int, default (128,)
        Width of each hidden layer, from the input side; an int is one layer, and ``()``
        gives no hidden layer (a linear or Poisson regression).
    activation : {"relu", "tanh", "logistic", "identity", "leaky_relu"}, default "relu"
        Activation of the hidden layers; "leaky_relu" is ``z if z > 0 else 0.01 * z``.
    solver : {"adam", "sgd", "lbfgs", "lazy_adam", "adamw"}, default "adam"
        As in FastMLP: "lbfgs" minimises the loss over all rows at once with SciPy's
        L-BFGS-B and has no ``partial_fit``; "lazy_adam" steps only the first-layer
        weights of the features present in a mini-batch, for wide sparse inputs;
        "adamw" is Adam with decoupled weight decay (``weight_decay``).
    alpha : float, default 1e-4
        L2 penalty (see ``loss``).
    batch_size : int or "auto", default "auto"
        Rows per mini-batch; "auto" means ``min(64, n_samples)``. Explicit values larger
        than the data are clamped with a warning.
    learning_rate : {"constant", "invscaling", "adaptive", "cosine", "linear"}, \
default "constant"
        Schedule of the learning rate, as in FastMLP: "invscaling" and "adaptive" are
        SGD's; "cosine" and "linear" decay the rate of Adam and SGD alike from
        ``learning_rate_init`` to 0 over the ``max_iter`` epochs of a fit.
    learning_rate_init : float, default 2e-3
        Initial step size of Adam and SGD.
    power_t : float, default 0.5
        Exponent of the inverse-scaling schedule.
    max_iter : int, default 200
        Maximum number of epochs (for "lbfgs": of L-BFGS iterations).
    shuffle : bool, default True
        Shuffle the rows before every epoch.
    random_state : int, RandomState or None, default None
        Seeds the initial weights, the shuffles and the validation split; an int makes
        a fit repeatable.
    tol : float, default 1e-4
        Smallest change that counts as an improvement: of the training loss, or with
        ``early_stopping`` of the validation R^2 (see ``n_iter_no_change``). For
        "lbfgs", the largest entry of the projected gradient at which it stops.
    verbose : bool, default False
        Print one line per epoch with the training loss (and the R^2 of the validation
        or evaluation set), and, when stderr is a terminal, a progress bar during each
        epoch; "lbfgs" prints the loss of each iteration.
    warm_start : bool, default False
        Start ``fit`` from the weights of the previous fit. A network of another shape,
        dtype or output starts afresh.
    momentum : float, default 0.9
        SGD's momentum, in [0, 1].
    nesterovs_momentum : bool, default True
        Whether SGD uses Nesterov's momentum.
    early_stopping : bool or "eval_set", default False
        True: hold out a random (not stratified) ``validation_fraction`` of the data,
        stop when its score (R^2, or ``scoring``) stops improving and keep the best
        epoch's weights; "eval_set": the same on the ``eval_set`` given to ``fit``.
        ``partial_fit`` refuses it.
    validation_fraction : float, default 0.1
        Share of the rows held out by ``early_stopping``, in (0, 1).
    beta_1 : float, default 0.9
        Adam's decay rate of the first-moment estimates, in [0, 1).
    beta_2 : float, default 0.999
        Adam's decay rate of the second-moment estimates, in [0, 1).
    epsilon : float, default 1e-8
        Added to the denominator of Adam's step, for numerical stability.
    weight_decay : float, default 0.01
        "adamw" only, as in FastMLP: every parameter is multiplied by
        ``1 - lr * weight_decay`` before each step.
    max_norm : float or None, default None
        As in FastMLP: each unit's incoming weight vector is scaled back to at most this
        norm after every step of the stochastic solvers.
    dropout : float, default 0.0
        As in FastMLP: the hidden layers' outputs are dropped at this rate during
        training (inverted dropout), with the same masks on every backend.
    scoring : str, callable or None, default None
        The score of early stopping and of ``eval_set``: None is R^2 (``score``), else a
        scikit-learn scorer name (``"neg_mean_absolute_error"``, ...) or a callable
        ``scorer(estimator, X, y)``, greater being better.
    n_iter_no_change : int or np.inf, default 10
        Epochs without an improvement of at least ``tol`` before training stops (or, with
        the "adaptive" schedule, before the rate is lowered); ``np.inf`` never stops
        early.
    max_fun : int, default 15000
        "lbfgs" only: the largest number of loss evaluations.
    backend : str, default "auto"
        Kernel backend: "auto", or one of :func:`fastmlp.available_backends`. "auto"
        takes the fastest backend that is ready without compiling (see
        :func:`fastmlp.get_backend`); every backend computes the same function.
    dtype : {"float32", "float64"}, default "float32"
        Floating-point type of the weights and of the arithmetic.
    n_jobs : int or None, default None
        Threads for the kernels and BLAS; -1 uses every CPU the process may use. None
        uses that many too, or fewer when ``OMP_NUM_THREADS``, a threadpoolctl limit or
        the Dask worker it runs in says so (see FastMLP).
    input_scale : float or None, default None
        A constant factor applied to every input as X is prepared, for training and
        prediction alike (None means 1); integer X is kept as it is stored and converted
        by blocks of rows (see FastMLP).
    stream : "auto" or bool, default "auto"
        How ``fit`` and ``partial_fit`` read a dense X: True streams it in blocks of
        rows, False prepares it whole, and "auto" streams a memory-mapped file of at
        least 1 GiB and prepares any other integer X a part at a time (see FastMLP).

    Attributes
    ----------
    coefs_ : list of ndarray
        Weight matrices, the i-th of shape ``(layer_sizes[i], layer_sizes[i + 1])``:
        views into one contiguous parameter vector.
    intercepts_ : list of ndarray
        Bias vectors, the i-th of shape ``(layer_sizes[i + 1],)``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Names of the features seen in ``fit``; only when X had column names that are
        all strings.
    n_iter_ : int
        Epochs run by the last call to ``fit`` or ``partial_fit`` (each call counts from
        zero). For "lbfgs", its iterations.
    t_ : int
        Training samples seen by the epochs, across calls.
    loss_ : float
        Mean loss of the last epoch (the loss above plus the L2 term; with weights, the
        weighted mean).
    loss_curve_ : list of float
        ``loss_`` of every epoch (for "lbfgs", of every iteration), across calls.
    eval_scores_ : list of float
        Score (R^2, or ``scoring``) of the ``eval_set`` of ``fit`` after every epoch; only
        after a fit given one.
    best_loss_ : float or None
        Lowest ``loss_`` so far; None with ``early_stopping``.
    validation_scores_ : list of float or None
        Score (R^2, or ``scoring``) of the held-out rows, or of the ``eval_set`` with
        ``early_stopping="eval_set"``, after every epoch; None without ``early_stopping``.
    best_validation_score_ : float or None
        Best of ``validation_scores_``, whose weights the model keeps; None without
        ``early_stopping``.
    n_layers_ : int
        Layers including input and output.
    n_outputs_ : int
        Number of targets.
    out_activation_ : str
        "identity" (squared error) or "exp" (Poisson).
    backend_ : str
        Name of the backend that ran.
    n_parameters_ : int
        Number of trainable parameters (weights and biases).

    See Also
    --------
    FastMLP : The same network for classification.
    sklearn.neural_network.MLPRegressor : The scikit-learn regressor with these parameters.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sklearn.model_selection import train_test_split
    >>> from fastmlp import FastMLPRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    >>> y = y / y.std()  # targets of about unit scale train quickly
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    >>> reg = FastMLPRegressor(random_state=0).fit(X_train, y_train)
    >>> reg.predict(X_test[:4]).shape
    (4,)
    >>> reg.score(X_test, y_test) > 0.9
    True
    """

    _SCORE_NAME = "R2"

    def __init__(self, loss="squared_error", hidden_layer_sizes=(128,), activation="relu", *,
                 solver="adam", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=2e-3, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.01, max_norm=None,
                 dropout=0.0, n_iter_no_change=10, max_fun=15000, scoring=None,
                 backend="auto", dtype="float32", n_jobs=None, input_scale=None, stream="auto"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay,
            max_norm=max_norm, dropout=dropout,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, scoring=scoring, backend=backend, dtype=dtype, n_jobs=n_jobs,
            input_scale=input_scale, stream=stream)
        self.loss = loss

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        """Train on (X, y), from fresh weights unless ``warm_start`` is set.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows. Integer X (uint8 pixels, a memory map of them) is kept as it
            is stored (see ``input_scale`` and ``stream``); SciPy sparse X is taken as
            compressed sparse rows.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values; for ``loss="poisson"``, >= 0.
        sample_weight : array-like of shape (n_samples,), optional
            Each row's weight in the loss and its gradient; also weighs the R^2 of early
            stopping's validation set.
        eval_set : tuple (X_eval, y_eval), optional
            Scored (R^2) after every epoch into ``eval_scores_``.

        Returns
        -------
        FastMLPRegressor
            The fitted estimator, ``self``.
        """
        return self._fit(X, y, sample_weight, incremental=False, eval_set=eval_set)

    @available_if(BaseMLP._check_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """Train one epoch over (X, y), continuing from the current weights.

        Only for the stochastic solvers ("adam", "sgd", "lazy_adam", "adamw"); it refuses
        ``early_stopping=True``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows, as for ``fit``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values, as many outputs as in the first call.
        sample_weight : array-like of shape (n_samples,), optional
            Each row's weight in the loss and its gradient.

        Returns
        -------
        FastMLPRegressor
            The estimator, ``self``, trained one epoch further.
        """
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        return self._fit(X, y, sample_weight, incremental=True)

    def _targets(self, X, y, p, incremental, classes, reinitialise):
        """Validate X and y (numbers, finite; for the Poisson loss >= 0); y as a
        (n_samples, n_outputs) matrix of the model's dtype."""
        dtype = p.dtype
        X, y = validated_fit_data(self, X, y, p.backend, reset=reinitialise,
                                  dtype=input_dtypes(dtype), order="C",
                                  accept_sparse=SPARSE_FORMATS, multi_output=True,
                                  y_numeric=True)
        X = checked_X(X)
        if y.ndim == 2 and y.shape[1] == 1:
            warn_user("A column-vector y was passed when a 1d array was expected. "
                          "Please change the shape of y to (n_samples,), for example using "
                          "ravel().", DataConversionWarning)
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

    def _labels_of(self, target):
        values = target.values
        return values.ravel() if values.shape[1] == 1 else values

    def _score_target(self, backend, activation, X, target):
        """R^2 of the predictions (weighted by the rows' weights, if any), computed in
        float64: the squared errors of large float32 predictions would overflow, and an
        R^2 of -inf says nothing of how far off they are."""
        pred = self._forward(backend, activation, X, self._output_code)
        return float(r2_score(target.values.astype(np.float64), pred.astype(np.float64),
                              sample_weight=weights_or_none(target)))

    def predict(self, X):
        """Return the predicted targets of each row of X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to predict.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions in float64: one column per output, or a 1-D array for a model
            of one output.
        """
        out = self._predict_forward(X).astype(np.float64)
        return out.ravel() if out.shape[1] == 1 else out

    def score(self, X, y, sample_weight=None):
        """Return the coefficient of determination R^2 of ``predict(X)`` against y.

        R^2 is 1 minus the ratio of the residual sum of squares to the sum of squares of
        y about its mean: 1 for perfect predictions, 0 for always predicting the mean,
        and below 0 for worse. For several outputs, the mean of their R^2.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to predict.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            True values.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the rows in the sums.

        Returns
        -------
        float
            R^2 of the predictions.
        """
        # RegressorMixin's score, with fastmlp's docstring
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
