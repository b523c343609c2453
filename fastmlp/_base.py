"""What FastMLP and FastMLPRegressor share: validation, the epoch loop, L-BFGS, prediction
through the backend, reporting, model files and pickling.

The two estimators differ only in their targets: how y is validated and encoded (class
labels, label indicators, values), which output function and loss train them, how a
validation split is scored and what ``predict`` returns. They supply those through the
few methods marked "estimator's" below; all arithmetic on arrays happens in the
backend's kernels.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import assert_all_finite, check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _progress
from ._params import input_scale as _checked_scale
from ._params import validate_params
from ._state import own_trained_arrays, pickle_state, restore_snapshot, take_snapshot
from ._stream import (
    BLOCKS,
    GATHERED,
    WHOLE,
    Gathered,
    InMemory,
    Streamed,
    how_read,
    part_rows_for,
)
from .backends import REFERENCE, auto_may_use, get_backend, jit_cache
from .backends.codes import (
    ACTIVATIONS,
    CONSTANT,
    LBFGS,
    OUTPUTS,
    SCHEDULES,
    SOFTMAX,
    Target,
    optimizer_step,
    rows_of,
)
from .backends.layout import layer_views, n_params
from .backends.pages import predict_params
from .backends.sparse import CONVERT_ROWS, checked_csr, scaled_block
from .network import init_params, layer_sizes_for, summary_table
from .optim import OptimizerState
from .threads import (
    adaptive_team,
    batch_work,
    epoch_threads,
    serial_blas_between,
    thread_limit,
)

AUTO_BATCH_SIZE = 64
# how often a progress bar is updated during an in-memory epoch (a streamed epoch
# updates it once per block)
PROGRESS_UPDATES = 50
# outputs whose epochs count correct training predictions (train_scores_)
_ACCURACY_OUTPUTS = (SOFTMAX, OUTPUTS["logistic"])
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}
# warnings raised while fitting point at the user's call of fit or partial_fit:
# caller -> fit -> _fit -> _plan_epochs or _run_epochs -> warnings.warn
_USER_FRAME = 4


# SciPy sparse X (matrices and arrays, any format) is taken as compressed sparse rows:
# scikit-learn's validation converts the other formats (and checks the values are finite)
SPARSE_FORMATS = "csr"


# Integer X (uint8 images, memory maps of them) is kept as it is stored: the backends
# convert it where they read it, block by block or batch by batch, never as a whole float
# copy. X of any other dtype is converted to the model's by scikit-learn's validation.
STORED_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16,
                                             np.uint32, np.int32, np.uint64, np.int64))


def input_dtypes(dtype):
    """What scikit-learn's validation may leave X as: the model's dtype, or an integer
    one as it is stored (a list: validate_data converts only what is in none of them)."""
    return [np.dtype(dtype), *STORED_DTYPES]


def model_input(X, dtype, scale):
    """X of ``dtype`` times ``scale`` (None: 1), whole: for the paths that read all of X
    at once (L-BFGS). The epochs and prediction convert by blocks instead."""
    dtype = np.dtype(dtype)
    if sp.issparse(X):
        X = checked_csr(X, dtype)
        return X * dtype.type(scale) if scale is not None else X
    if X.dtype == dtype and scale is None:
        return X
    return scaled_block(X, 0, X.shape[0], dtype, scale)


def _refuse_non_finite_outputs(out):
    """ValueError if a row of the network's outputs is not finite (inputs far outside
    the training data overflow the arithmetic)."""
    # a few values are summed faster in Python than checked by two NumPy calls; a finite
    # sum means every value is finite (an overflowing sum of finite values goes on to
    # the full check, which finds nothing)
    if out.size <= 64 and math.isfinite(sum(out.ravel().tolist())):
        return
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise ValueError(
            f"{bad.size} row(s) of X (the first is row {bad[0]}) overflow the network's "
            f"{out.dtype} arithmetic and give no finite outputs; the inputs are far "
            "larger than the data the model was trained on (scale X as for training, or "
            "fit with dtype='float64')")


def _input_density(X, sample_rows=256):
    """The share of X's values that are not zero: exact for sparse X, from a few rows
    spread over a dense one (the first layer reads only the non-zero inputs)."""
    if X.shape[0] == 0 or X.shape[1] == 0:
        return 1.0
    if sp.issparse(X):
        return X.nnz / (X.shape[0] * X.shape[1])
    rows = X[:: max(1, X.shape[0] // sample_rows)][:sample_rows]
    return float(np.count_nonzero(rows)) / rows.size


def input_scale(value):
    """The input_scale parameter as the backends take it: None, or a float other than 1."""
    return _checked_scale("input_scale", value)


# a dense X of at least this many values is checked for NaN and infinity by a parallel
# compiled pass: scikit-learn's check sums X on one thread, which for MNIST-sized X
# costs a noticeable part of a short fit
PARALLEL_CHECK_VALUES = 2**20


def validated_fit_data(estimator, X, y, backend, **kwargs):
    """scikit-learn's validate_data of X and y for fit (y's checks, finiteness
    included, as it makes them), with X's check for NaN and infinity made by
    check_finite_X for a fit on ``backend``."""
    X, y = validate_data(estimator, X, y, ensure_all_finite=False, **kwargs)
    check_finite_X(X, estimator, backend)
    return X, y


def check_finite_X(X, estimator, backend):
    """Raise scikit-learn's ValueError if X (validated, dense or sparse) holds NaN or
    infinity. A large dense float X goes first to the backend's own parallel check where
    it offers one (``all_finite``, an optional part of the contract), on as many threads
    as thread_limit allows the fit; anything else, and any X that check finds wanting,
    goes to scikit-learn's assert_all_finite, which raises its usual message."""
    all_finite = getattr(backend, "all_finite", None)
    if (all_finite is not None and isinstance(X, np.ndarray)
            and X.ndim == 2 and X.dtype.kind == "f" and X.flags.c_contiguous
            and X.size >= PARALLEL_CHECK_VALUES):
        with thread_limit(estimator.n_jobs, backend):
            if all_finite(X):
                return
    if not sp.issparse(X) and X.dtype.kind != "f":
        return  # integers are finite
    assert_all_finite(X, estimator_name=type(estimator).__name__, input_name="X")


def checked_X(X):
    """A validated X as the backends take it: dense as it is, sparse as a CSR matrix in
    canonical form whose structure has been checked (backends.sparse.checked_csr)."""
    return checked_csr(X) if sp.issparse(X) else X


def weights_or_none(target: Target):
    """The target's row weights, or None when every row weighs 1 (scikit-learn's form)."""
    return target.weights if target.weights.size else None


@dataclass(frozen=True)
class _Epochs:
    """What every epoch of one call of fit or partial_fit needs, resolved once."""

    backend: ModuleType
    activation: int  # code, see fastmlp/backends/codes.py
    solver: int  # code
    source: object  # where the rows come from: _stream.InMemory, Gathered or Streamed
    target: Target  # what the outputs are fitted to, with the row weights
    n_samples: int
    total_weight: float  # what an epoch's loss sum is divided by: rows, or their weights
    batch_size: int
    count: int  # epochs to run: max_iter for fit, 1 for partial_fit
    incremental: bool  # partial_fit
    early_stopping: bool  # only fit stops early
    validation: tuple | None  # (X_val, Target_val) held out for early stopping
    eval_set: tuple | None  # (X_eval, y_eval) scored after every epoch
    team: object  # threads.AdaptiveTeam (default threads), or None
    threads: int | None  # the n_jobs the epochs run with (threads.epoch_threads)


class _LbfgsObjective:
    """The loss over all rows and its gradient, for SciPy (which works in float64) from
    the backend's loss_and_grad (which works in the model's dtype)."""

    def __init__(self, est, X, target, p):
        self.est, self.X, self.target, self.p = est, X, target, p
        self.losses = []

    def __call__(self, x):
        est = self.est
        est._params[...] = x
        with np.errstate(all="ignore"):
            loss = self.p["backend"].loss_and_grad(est._grads, est._params, est._layer_sizes,
                                                   self.p["activation"], self.X, self.target,
                                                   float(est.alpha))
        return float(loss), est._grads.astype(np.float64)

    def iteration_ended(self, intermediate_result):
        self.losses.append(float(intermediate_result.fun))
        if self.est.verbose:
            print(f"Iteration {len(self.losses)}, loss = {self.losses[-1]:.8f}", flush=True)


class BaseMLP(BaseEstimator):
    """The machinery of both estimators (see the module notes). Not for direct use."""

    # the estimator's: what the verbose line calls the score of a validation or eval set
    _SCORE_NAME = "Accuracy"

    def __init__(self, hidden_layer_sizes=(128,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate="constant", learning_rate_init=2e-3,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4,
                 verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, backend="auto",
                 dtype="float32", n_jobs=None, input_scale=None, stream="auto"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.input_scale = input_scale
        self.stream = stream

    # ------------------------------------------------------------------ the estimator's

    def _targets(self, X, y, p, incremental, classes, reinitialise):
        """Validate X and y together; returns (X, the unweighted Target of y, the name of
        the output function in OUTPUTS, the per-row factors of class_weight or None)."""
        raise NotImplementedError

    def _stratify(self, target):
        """What the early-stopping split is stratified by, or None."""
        return None

    def _score_target(self, backend, activation, X, target):
        """The score of the rows of X against the Target (early stopping)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ validation

    def _validated_params(self):
        """Check every parameter once, before any work, against the table in
        fastmlp/_params.py; return the resolved values by parameter name."""
        return validate_params(self)

    def _validate_X(self, X, backend=None):
        """X for prediction: C-contiguous, of the model's dtype, finite, right width.

        A plain float ndarray of the right width takes a short path (predicting one row
        costs microseconds, and scikit-learn's full validation costs tens of them);
        anything else, or anything that fails a check, goes through scikit-learn's
        validation, which raises its usual errors. Backends that check finiteness while
        they predict (CHECKS_FINITE_INPUT) are spared a separate pass over X.
        """
        dtype = self._params.dtype
        if (type(X) is np.ndarray and X.ndim == 2 and X.dtype.kind == "f" and X.shape[0] > 0
                and X.shape[1] == self.n_features_in_
                and not hasattr(self, "feature_names_in_")):
            converted = (X if X.dtype == dtype and X.flags.c_contiguous
                         else np.ascontiguousarray(X, dtype=dtype))
            if getattr(backend, "CHECKS_FINITE_INPUT", False) or np.isfinite(converted).all():
                return converted
        return checked_X(validate_data(self, X, reset=False, dtype=input_dtypes(dtype),
                                       order="C", accept_sparse=SPARSE_FORMATS))

    def _row_weights(self, X, sample_weight, class_factors, dtype):
        """The weight of every row: sample_weight (checked as scikit-learn checks it:
        one finite, non-negative number per row) times the class_weight factors; an
        empty array when every row weighs 1."""
        if sample_weight is None and class_factors is None:
            return np.empty(0, dtype=dtype)
        weights = np.ones(X.shape[0], dtype=np.float64)
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                           ensure_non_negative=True)
        if class_factors is not None:
            weights = weights * class_factors
        if not weights.sum() > 0:
            raise ValueError("the sample weights (times class_weight) sum to 0: there is "
                             "nothing to fit; give some rows a positive weight")
        return np.ascontiguousarray(weights, dtype=dtype)

    # ------------------------------------------------------------------ fitting

    def _check_solver(self):
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers "
                                 "(solver='adam' or 'sgd'); lbfgs is not stochastic")
        return True

    def _fit(self, X, y, sample_weight, incremental, classes=None, eval_set=None):
        """fit and partial_fit. The random generator is drawn from in a fixed order: the
        initial weights, then the validation split, then one permutation per epoch.
        Background compiles that auto asked for start when the fit is done."""
        try:
            return self._fit_now(X, y, sample_weight, incremental, classes, eval_set)
        finally:
            jit_cache.start_requested()

    def _fit_now(self, X, y, sample_weight, incremental, classes, eval_set):
        p = self._validated_params()
        X, target, layer_sizes, output, reinitialise = self._prepare_data(
            X, y, sample_weight, p, incremental, classes)
        self._initialise_or_continue(layer_sizes, output, p, reinitialise, incremental)
        if eval_set is None and not incremental:
            # the scores of an earlier fit's eval_set do not describe this fit
            self.__dict__.pop("eval_scores_", None)
        if p["solver"] == LBFGS:
            return self._fit_lbfgs(X, target, p, eval_set)
        run = self._plan_epochs(X, target, p, incremental, eval_set)
        best_params = self._run_epochs(run)
        if run.early_stopping and best_params is not None:
            self._params[...] = best_params
        return self

    def _prepare_data(self, X, y, sample_weight, p, incremental, classes):
        """Validate X, y and the weights, and decide whether training starts from fresh
        weights. Returns (X, Target, layer sizes, output name, reinitialise)."""
        dtype = p["dtype"]
        reinitialise = not hasattr(self, "_params") or not (incremental or self.warm_start)
        X, target, output, class_factors = self._targets(X, y, p, incremental, classes,
                                                         reinitialise)
        target = target._replace(weights=self._row_weights(X, sample_weight, class_factors,
                                                           dtype))
        n_out = target.values.shape[1] if target.output != SOFTMAX else len(self.classes_)
        layer_sizes = layer_sizes_for(X.shape[1], p["hidden_layer_sizes"], n_out)
        if not reinitialise and (not np.array_equal(layer_sizes, self._layer_sizes)
                                 or self._params.dtype != dtype
                                 or self.out_activation_ != output):
            if incremental:
                raise ValueError("partial_fit cannot change the network's shape, dtype or "
                                 f"output; fitted {self._layer_sizes.tolist()} "
                                 f"{self._params.dtype} {self.out_activation_}, asked for "
                                 f"{layer_sizes.tolist()} {np.dtype(dtype)} {output}")
            reinitialise = True  # warm_start with another shape: start afresh
        return X, target, layer_sizes, output, reinitialise

    def _initialise_or_continue(self, layer_sizes, output, p, reinitialise, incremental):
        """Fresh weights and training record, or those of the previous fit (warm_start,
        partial_fit). Every fit starts a new optimizer; partial_fit continues its own."""
        if reinitialise:
            self._initialise_state(layer_sizes, output, p)
        if reinitialise or not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = OptimizerState(p["solver"], self._params.size, p["dtype"],
                                             self.learning_rate_init, self.learning_rate,
                                             self.power_t)
        # as in scikit-learn, n_iter_ counts the epochs of this call (t_ and loss_curve_
        # go on across warm starts and partial_fit calls)
        self.n_iter_ = 0
        self.backend_ = p["backend"].NAME
        # predict uses what was trained, even if set_params changes the parameter later
        self._activation_code = p["activation"]

    def _initialise_state(self, layer_sizes, output, p):
        """Fresh weights (the random generator's first draws) and an empty record."""
        self._random_state = check_random_state(self.random_state)
        self._layer_sizes = layer_sizes
        self._params = init_params(layer_sizes, p["activation"], p["dtype"], self._random_state)
        self._rebuild_derived()
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.__dict__.pop("train_scores_", None)
        self._no_improvement_count = 0
        self.best_loss_ = None if self.early_stopping else np.inf
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        self.n_layers_ = len(layer_sizes)
        self.n_outputs_ = int(layer_sizes[-1])
        self.out_activation_ = output

    @property
    def _output_code(self):
        """The output function trained with (codes.OUTPUTS)."""
        return OUTPUTS[self.out_activation_]

    def _plan_epochs(self, X, target, p, incremental, eval_set):
        """What every epoch of this call needs: the validation split (early stopping, fit
        only), the evaluation set, the batch size and the backend's form of X."""
        early_stopping = self.early_stopping and not incremental
        read = how_read(X, p["stream"])
        validation, train_rows = None, None
        if early_stopping:
            if read != WHOLE:
                # the training rows stay where X is (on disk: read in ascending order);
                # the held-out rows are copied
                train_rows, val = self._split_rows(X, target)
                if read == BLOCKS:
                    train_rows = np.sort(train_rows)
                validation = (np.ascontiguousarray(X[val]), rows_of(target, val))
                target = rows_of(target, train_rows)
            else:
                X, X_val, target, target_val = self._validation_split(X, target)
                validation = (X_val, target_val)
            if self.best_validation_score_ is None:  # warm start from a fit without it
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
        elif self.best_loss_ is None:  # warm start from a fit with early stopping
            self.best_loss_ = np.inf
        if eval_set is not None:
            X_eval, y_eval = eval_set
            eval_set = (X_eval, y_eval)
            self.eval_scores_ = []
        n_samples = X.shape[0] if train_rows is None else train_rows.shape[0]
        if self.batch_size == "auto":
            batch_size = min(AUTO_BATCH_SIZE, n_samples)
        else:
            batch_size = int(self.batch_size)
        if batch_size > n_samples:
            if self.batch_size != "auto":
                warnings.warn(f"batch_size={batch_size} is larger than the number of samples "
                              f"({n_samples}); using batch_size={n_samples}", UserWarning,
                              stacklevel=_USER_FRAME)
            batch_size = n_samples
        total_weight = (float(np.sum(target.weights, dtype=np.float64)) if target.weights.size
                        else n_samples)
        backend = p["backend"]
        if read == BLOCKS:
            source = Streamed(X, target, backend, p["dtype"], p["input_scale"],
                              part_rows_for(X, batch_size), rows=train_rows)
        elif read == GATHERED:
            source = Gathered(X, target, backend, p["dtype"], p["input_scale"],
                              part_rows_for(X, batch_size), rows=train_rows)
        else:
            source = InMemory(backend.prepare_inputs(X, p["dtype"], p["input_scale"]),
                              target, n_samples)
        work = batch_work(self._layer_sizes, batch_size, _input_density(X))
        return _Epochs(backend=backend, activation=p["activation"], solver=p["solver"],
                       source=source, target=target, n_samples=n_samples,
                       total_weight=total_weight or 1.0, batch_size=batch_size,
                       count=1 if incremental else self.max_iter, incremental=incremental,
                       early_stopping=early_stopping, validation=validation,
                       eval_set=eval_set,
                       team=adaptive_team(self.n_jobs, backend, batch_size,
                                          self._params.size, work),
                       threads=epoch_threads(self.n_jobs, backend, work))

    def _fit_lbfgs(self, X, target, p, eval_set):
        """Minimise the loss over all rows with SciPy's L-BFGS-B, from the current weights;
        ``max_iter``, ``max_fun`` and ``tol`` as in scikit-learn. The model keeps its
        starting weights if the loss diverges or the user interrupts."""
        start = self._params.copy()
        objective = _LbfgsObjective(self, model_input(X, p["dtype"], p["input_scale"]),
                                    target, p)
        try:
            with thread_limit(self.n_jobs, p["backend"]), serial_blas_between(
                    computes_with_blas=p["backend"].NAME == REFERENCE):
                result = scipy.optimize.minimize(
                    objective, start.astype(np.float64), method="L-BFGS-B", jac=True,
                    callback=objective.iteration_ended,
                    options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                             "gtol": self.tol})
        except KeyboardInterrupt:
            self._params[...] = start
            warnings.warn("training interrupted by the user; the model keeps the weights it "
                          "had before this fit", UserWarning, stacklevel=_USER_FRAME)
            return self
        self._params[...] = result.x
        if not (np.isfinite(result.fun) and np.isfinite(self._params).all()):
            self._params[...] = start
            warnings.warn("training diverged: the loss or the weights became infinite or "
                          "NaN, so the model keeps the weights it had before this fit. Scale "
                          "X to a small range.", RuntimeWarning, stacklevel=_USER_FRAME)
            return self
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        self.loss_curve_.extend(objective.losses)
        self.best_loss_ = min(self.loss_curve_, default=self.loss_)
        if eval_set is not None:
            self.eval_scores_ = [self.score(*eval_set)]
        if result.status != 0:
            hint = (f" Increase the number of iterations (max_iter={self.max_iter})."
                    if self.n_iter_ == self.max_iter else "")
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"(status={result.status}): {result.message}.{hint} Scaling X may "
                          "also help.", ConvergenceWarning, stacklevel=_USER_FRAME)
        return self

    def _validation_split(self, X, target):
        """X and the Target split into the rows that train and those held out."""
        train, val = self._split_rows(X, target)
        if sp.issparse(X):
            return X[train], X[val], rows_of(target, train), rows_of(target, val)
        return (np.ascontiguousarray(X[train]), np.ascontiguousarray(X[val]),
                rows_of(target, train), rows_of(target, val))

    def _split_rows(self, X, target):
        """The hold-out of early stopping, as scikit-learn makes it (stratified by class
        for single-label classification), as (training rows, held-out rows); a class
        too small to have a member on both sides, or a validation set of fewer than two
        rows, is an error rather than a meaningless score."""
        stratify = self._stratify(target)
        try:
            train, val = train_test_split(
                np.arange(X.shape[0]), random_state=self._random_state,
                test_size=self.validation_fraction, stratify=stratify)
        except ValueError as exc:
            how = "a stratified" if stratify is not None else "a"
            raise ValueError(f"early_stopping=True holds out {how} validation set "
                             f"(validation_fraction={self.validation_fraction}), and it "
                             f"cannot be made from this data: {exc}") from None
        if val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        return train, val

    def _run_epochs(self, run):
        """The epoch loop. An epoch that diverges or is interrupted (Ctrl-C) is undone and
        ends training. Returns the best parameters seen under early stopping, or None."""
        best_params = None
        with thread_limit(run.threads, run.backend), \
                (run.team.blocks() if run.team is not None else nullcontext()):
            for _ in range(run.count):
                snapshot = take_snapshot(self)
                try:
                    loss_sum, n_correct, t = self._train_epoch(run)
                    if not (np.isfinite(loss_sum) and np.isfinite(self._params).all()):
                        restore_snapshot(self, snapshot)
                        warnings.warn(
                            f"training diverged in epoch {self.n_iter_ + 1}: the loss or the "
                            "weights became infinite or NaN, so training stopped and the "
                            f"model keeps the weights of epoch {self.n_iter_} (the last "
                            "finite ones; epoch 0 means the initial weights). Lower "
                            "learning_rate_init, or scale X to a small range.",
                            RuntimeWarning, stacklevel=_USER_FRAME)
                        break
                    self._optimizer.t = t
                    best_params, stop = self._end_epoch(run, loss_sum, n_correct, best_params)
                except KeyboardInterrupt:
                    restore_snapshot(self, snapshot)
                    warnings.warn(f"training interrupted by the user during epoch "
                                  f"{snapshot['n_iter_'] + 1}; the model keeps the weights "
                                  f"of epoch {snapshot['n_iter_']}, the last completed one.",
                                  UserWarning, stacklevel=_USER_FRAME)
                    break
                if stop:
                    break
            else:
                if not run.incremental:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  "reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning, stacklevel=_USER_FRAME)
        return best_params

    def _train_epoch(self, run):
        """One pass over the rows, shuffled or in order, as the parts the source gives
        (see fastmlp/_stream.py), each split further into parts of whole batches for the
        progress bar and the adaptive thread team (threads.AdaptiveTeam). The Adam step
        count, the schedule's position and the loss sum go on from one part to the next,
        so the parts train, and sum the loss, as one call would. Returns the backend's
        (loss sum, correct predictions, Adam step count)."""
        opt = self._optimizer
        step = self._optimizer_step(run)
        progress = _progress.bar(run.n_samples, f"epoch {self.n_iter_ + 1}",
                                 self._shows_progress())
        part_rows = (None if progress is None else
                     max(1, run.n_samples // (PROGRESS_UPDATES * run.batch_size))
                     * run.batch_size)
        team = run.team
        loss_sum, n_correct, t, seen = 0.0, 0, int(opt.t), 0
        try:
            # overflow is detected by the caller and reported once, clearly; NumPy's own
            # floating-point warnings would only repeat it
            with np.errstate(all="ignore"):
                for data, target, order in run.source.parts(self._random_state,
                                                            self.shuffle):
                    done = 0
                    while done < order.shape[0]:
                        threads, rows = (team.next_part() if team is not None
                                         else (None, part_rows or order.shape[0]))
                        part = order[done:done + rows]
                        start = time.perf_counter()
                        with team.limit(threads) if team is not None else nullcontext():
                            loss_sum, hits, t = run.backend.train_epoch(
                                self._params, self._grads, opt.m, opt.v, self._layer_sizes,
                                run.activation, data, target, part, run.batch_size,
                                float(self.alpha), step._replace(seen=step.seen + seen), t,
                                loss_sum)
                        if team is not None:
                            team.record(threads, part.shape[0], time.perf_counter() - start)
                        n_correct += hits
                        done += part.shape[0]
                        seen += part.shape[0]
                        if progress is not None:
                            progress.update(part.shape[0], loss_sum / seen)
        finally:
            if progress is not None:
                progress.close()
        return loss_sum, n_correct, t

    def _shows_progress(self):
        """A progress bar during each epoch: when verbose and stderr is a terminal."""
        return bool(self.verbose) and _progress.to_terminal()

    def _optimizer_step(self, run):
        """The optimizer's hyperparameters as the record train_epoch takes (see
        fastmlp/backends/codes.py), at the current learning rate of the schedule. A decaying
        schedule spans max_iter epochs of this fit (for partial_fit: max_iter passes of
        this call's size, counted by t_), and the kernels apply it before every batch."""
        schedule = SCHEDULES.get(self.learning_rate, CONSTANT)
        done = self.t_ if run.incremental else self.n_iter_ * run.n_samples
        return optimizer_step(run.solver, self._optimizer.learning_rate, self.momentum,
                              self.nesterovs_momentum, self.beta_1, self.beta_2, self.epsilon,
                              schedule, done, self.max_iter * run.n_samples)

    def _epoch_line(self, total, n_correct, run, extra):
        """The verbose line of an epoch."""
        line = f"Epoch [{self.n_iter_}/{total}], Train Loss: {self.loss_:.4f}"
        if self._output_code in _ACCURACY_OUTPUTS:
            line += f", Train Accuracy: {100 * n_correct / run.n_samples:.2f}%"
        if extra is not None:
            name, value = extra
            if self._SCORE_NAME == "Accuracy":
                line += f", {name} Accuracy: {100 * value:.2f}%"
            else:
                line += f", {name} {self._SCORE_NAME}: {value:.4f}"
        return line

    def _end_epoch(self, run, loss_sum, n_correct, best_params):
        """Bookkeeping after a completed epoch: the record, the scores, the verbose line,
        the count of epochs without improvement and the learning-rate schedule.
        Returns (best_params, whether to stop)."""
        self.n_iter_ += 1
        self.t_ += run.n_samples
        self.loss_ = loss_sum / run.total_weight
        self.loss_curve_.append(self.loss_)
        if self._output_code in _ACCURACY_OUTPUTS:
            # as loss_curve_, kept across warm starts and partial_fit calls
            self.__dict__.setdefault("train_scores_", []).append(n_correct / run.n_samples)
        extra = None
        if run.early_stopping:
            score = self._score_target(run.backend, run.activation, *run.validation)
            self.validation_scores_.append(score)
            extra = ("Validation", score)
        if run.eval_set is not None:
            score = self.score(*run.eval_set)
            self.eval_scores_.append(score)
            extra = ("Test", score)
        if self.verbose:
            total = self.n_iter_ if run.incremental else self.max_iter
            print(self._epoch_line(total, n_correct, run, extra), flush=True)
        best_params = self._update_no_improvement(run.early_stopping, best_params)
        self._optimizer.epoch_ended(self.t_)
        return best_params, self._no_improvement_stops(run.early_stopping)

    def _no_improvement_stops(self, early_stopping):
        """Once more than n_iter_no_change epochs went without improvement: stop, or (the
        adaptive schedule) lower the learning rate and count again."""
        if self._no_improvement_count <= self.n_iter_no_change:
            return False
        stop, reason = self._optimizer.should_stop()
        if self.verbose:
            what = "Validation score" if early_stopping else "Training loss"
            print(f"{what} did not improve more than tol={self.tol} for "
                  f"{self.n_iter_no_change} consecutive epochs: {reason}.")
        if not stop:
            self._no_improvement_count = 0
        return stop

    def _update_no_improvement(self, early_stopping, best_params):
        if early_stopping:
            score = self.validation_scores_[-1]
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                best_params = self._params.copy()
        else:
            if self.loss_ > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, self.loss_)
        return best_params

    def _rebuild_derived(self):
        """The attributes derived from the parameter vector (kind DERIVED in
        fastmlp/_state.py): the gradient buffer, and the per-layer views."""
        self._grads = np.zeros_like(self._params)
        views = layer_views(self._params, self._layer_sizes)
        self.coefs_ = [w for w, _ in views]
        self.intercepts_ = [b for _, b in views]

    # ------------------------------------------------------------------ prediction

    def _forward(self, backend, activation, X, output):
        """The network's outputs for X through the output function ``output`` (a code of
        codes.OUTPUTS; IDENTITY gives the pre-activations). The blocks of rows all read one
        copy of the parameters on huge pages, where that pays (backends/pages.py)."""
        dtype = self._params.dtype
        out = np.empty((X.shape[0], self._layer_sizes[-1]), dtype=dtype)
        if (X.shape[0] <= getattr(backend, "SERIAL_PREDICT_ROWS", 0)
                and type(X) is np.ndarray and X.dtype == dtype and self.input_scale is None):
            # a few rows of the model's dtype, which the backend predicts on the calling
            # thread in one block: none of the set-up below applies (no thread limit, no
            # conversion, no huge pages), and it would cost more than the rows themselves
            backend.predict_proba(out, X, self._params, self._layer_sizes, activation,
                                  output=output)
            _refuse_non_finite_outputs(out)
            return out
        params = predict_params(self._params, X.shape[0])
        scale = input_scale(self.input_scale)
        # dense X goes through by blocks of rows, converted block by block where it is
        # stored (integer) or to be scaled; the blocks are the same whether it needs
        # converting or not, so X as uint8 pixels with input_scale and X as the scaled
        # floats go through the same products of the same shapes, and give the same bits
        blocks = ([(0, X.shape[0])] if sp.issparse(X)
                  else [(s, min(s + CONVERT_ROWS, X.shape[0]))
                        for s in range(0, X.shape[0], CONVERT_ROWS)])
        as_is = not sp.issparse(X) and X.dtype == dtype and scale is None
        # a few rows that the backend predicts on the calling thread need no thread limit
        # (setting one costs more than predicting a row)
        serial = X.shape[0] <= getattr(backend, "SERIAL_PREDICT_ROWS", 0)
        with nullcontext() if serial else thread_limit(self.n_jobs, backend), \
                np.errstate(all="ignore"):
            for start, stop in blocks:
                part = (model_input(X, dtype, scale) if sp.issparse(X)
                        else X[start:stop] if as_is
                        else scaled_block(X, start, stop, dtype, scale))
                backend.predict_proba(out[start:stop], part, params, self._layer_sizes,
                                      activation, output=output)
        _refuse_non_finite_outputs(out)
        return out

    def _prediction_backend(self):
        """The backend that trained the model, or auto's pick where that one is not
        available (a model saved on a machine with the compiled extension and loaded on
        one without) or, for a model fitted with backend="auto", would compile first (a
        model loaded in a process whose numba kernels are not compiled): every backend
        computes the same function."""
        dtype = self._params.dtype
        if self.backend == "auto" and not auto_may_use(self.backend_, dtype):
            return get_backend("auto", dtype)
        try:
            return get_backend(self.backend_)
        except ImportError:
            return get_backend("auto", dtype)

    def _predict_forward(self, X, output=None):
        """The outputs for X through ``output`` (default: the trained output function)."""
        if not hasattr(self, "_params"):
            check_is_fitted(self, "_params")  # raises NotFittedError with sklearn's message
        backend = self._prediction_backend()
        X = self._validate_X(X, backend)
        return self._forward(backend, self._activation_code, X,
                             self._output_code if output is None else output)

    # ------------------------------------------------------------------ reporting

    def summary(self, print_fn=print):
        """Print and return a table of the network's layers and parameter counts.

        Before fitting, the input and output widths are unknown: the text says so and
        names the hidden layers and their activation only.

        Parameters
        ----------
        print_fn : callable or None, default print
            Called with the text; None prints nothing.

        Returns
        -------
        str
            The text.

        Examples
        --------
        >>> import numpy as np
        >>> from fastmlp import FastMLP
        >>> clf = FastMLP(hidden_layer_sizes=(16,))
        >>> _ = clf.summary()
        not fitted: input and output widths come from the data; hidden layers [16], activation relu
        >>> X, y = np.zeros((6, 4)), np.array([0, 1, 2, 0, 1, 2])
        >>> _ = clf.partial_fit(X, y, classes=[0, 1, 2])
        >>> _ = clf.summary()
        layer     shape    activation  weights  biases  parameters
        ----------------------------------------------------------
        hidden 1  4 -> 16  relu             64      16          80
        output    16 -> 3  softmax          48       3          51
        ----------------------------------------------------------
        total     4-16-3                   112      19         131
        dtype: float32, 524 bytes
        """
        if hasattr(self, "_layer_sizes"):
            activation = _ACTIVATION_NAMES[self._activation_code]
            text = summary_table(self._layer_sizes, activation, self._params.dtype,
                                 self.out_activation_)
        else:
            hidden = self._validated_params()["hidden_layer_sizes"]
            text = ("not fitted: input and output widths come from the data; hidden layers "
                    f"{list(hidden)}, activation {self.activation}")
        if print_fn is not None:
            print_fn(text)
        return text

    @property
    def n_parameters_(self):
        """Number of trainable parameters (weights and biases) of the fitted network."""
        check_is_fitted(self, "_params")
        return n_params(self._layer_sizes)

    # ------------------------------------------------------------------ model files

    def save(self, path):
        """Write the fitted model to a file that loading cannot run code from.

        The file is fastmlp's model format: an ``.npz`` archive of the parameters, the
        optimizer's state and JSON metadata, read back without pickle (the format is
        described in ``fastmlp.persistence`` and the
        :doc:`user guide, Model files </guide/model-files>`). It is written beside
        ``path`` and renamed into place, so it appears whole or not at all.

        Parameters
        ----------
        path : str or path-like
            The file to write, used as given (``.npz`` is the usual extension).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        TypeError
            If a class label is neither a number nor a string, which the format cannot
            store without pickle.

        See Also
        --------
        load : Read the file back.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from sklearn.datasets import load_iris
        >>> from fastmlp import FastMLP
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = FastMLP(max_iter=500, random_state=0).fit(X, y)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "iris.npz")
        ...     clf.save(path)
        ...     restored = FastMLP.load(path)
        >>> np.array_equal(restored.predict_proba(X), clf.predict_proba(X))
        True
        """
        from .persistence import save

        save(self, path)

    @classmethod
    def load(cls, path):
        """Read a model written by ``save``.

        Parameters
        ----------
        path : str or path-like
            A file written by ``save`` of this estimator class.

        Returns
        -------
        FastMLP or FastMLPRegressor
            A fitted estimator of the class ``load`` is called on, which predicts as the
            saved one did; ``partial_fit`` and ``warm_start`` continue from the saved
            optimizer state.

        Raises
        ------
        ValueError
            If the file is truncated or corrupted, of another format version or of the
            other estimator, or holds pickled or object data.
        FileNotFoundError
            If there is no such file.

        See Also
        --------
        save : Write a model file.
        """
        from .persistence import load

        return load(cls, path)

    # ------------------------------------------------------------------ pickling

    def __getstate__(self):
        # coefs_, intercepts_ (views into _params) and _grads are rebuilt on unpickling
        return pickle_state(super().__getstate__())

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_params" in state:
            own_trained_arrays(self)
            self._rebuild_derived()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags
