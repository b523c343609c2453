"""What FastMLP and FastMLPRegressor share: ``BaseMLP``, the fit driver in steps (the
parameters checked, X, y and the weights validated, the weights initialised or kept), over
one mixin per job of its own module:

- fastmlp/_epochs.py: the stochastic solvers' epochs and early stopping;
- fastmlp/_lbfgs.py: the L-BFGS solver;
- fastmlp/_predict.py: prediction through the backend;
- fastmlp/_report.py: verbose lines, progress bars and the summary;
- fastmlp/persistence.py: model files and pickling.

The two estimators differ only in their targets: how y is validated and encoded (class
labels, label indicators, values), which output function and loss train them, how a
validation split is scored and what ``predict`` returns. They supply those through the
few methods marked "estimator's" below; all arithmetic on arrays happens in the
backend's kernels.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from ._callbacks import CallbackSupportMixin, FitTasks, with_callbacks
from ._epochs import EpochsMixin
from ._inputs import row_weights
from ._lbfgs import LbfgsMixin
from ._params import Resolved, validate_params
from ._predict import PredictMixin
from ._report import ReportMixin
from .backends import jit_cache
from .backends.codes import LBFGS, OUTPUTS, SOFTMAX
from .backends.layout import layer_views
from .network import init_params, layer_sizes_for
from .optim import OptimizerState
from .persistence import ModelFiles


class BaseMLP(EpochsMixin, LbfgsMixin, PredictMixin, ReportMixin, ModelFiles,
              CallbackSupportMixin, BaseEstimator):
    """The machinery of both estimators (see the module notes). Not for direct use."""

    # the estimator's: what the verbose line calls the score of a validation or eval set
    _SCORE_NAME = "Accuracy"

    def __init__(self, hidden_layer_sizes=(128,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate="constant", learning_rate_init=2e-3,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4,
                 verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, weight_decay=0.01, max_norm=None, dropout=0.0,
                 n_iter_no_change=10, max_fun=15000, scoring=None, backend="auto",
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
        self.weight_decay = weight_decay
        self.max_norm = max_norm
        self.dropout = dropout
        self.scoring = scoring
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.input_scale = input_scale
        self.stream = stream

    # ------------------------------------------------------------------ the estimator's

    def _targets(self, X, y, p, incremental, classes, reinitialise):
        """Validate X and y together (``p``: the Resolved parameters); returns (X, the
        unweighted Target of y, the name of the output function in OUTPUTS, the per-row
        factors of class_weight or None)."""
        raise NotImplementedError

    def _stratify(self, target):
        """What the early-stopping split is stratified by, or None."""
        return None

    def _score_target(self, backend, activation, X, target):
        """The score of the rows of X against the Target (early stopping)."""
        raise NotImplementedError

    def _labels_of(self, target):
        """The Target's y as the user gave it (class labels, indicators or values), for a
        scikit-learn scorer (``scoring``) of the early-stopping split."""
        raise NotImplementedError

    # ------------------------------------------------------------------ validation

    def _validated_params(self) -> Resolved:
        """Check every parameter once, before any work, against the table in
        fastmlp/_params.py; return the resolved values (a Resolved record)."""
        return validate_params(self)

    # ------------------------------------------------------------------ fitting

    def _check_solver(self):
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers "
                                 "(solver='adam' or 'sgd'); lbfgs is not stochastic")
        return True

    @with_callbacks
    def _fit(self, X, y, sample_weight, incremental, classes=None, eval_set=None):
        """fit and partial_fit. The random generator is drawn from in a fixed order: the
        initial weights, then the validation split, then (with dropout) the seed of the
        masks, then one permutation per epoch.
        Background compiles that auto asked for start when the fit is done; the callbacks
        of set_callbacks (fastmlp/_callbacks.py) are torn down whatever happens."""
        try:
            return self._fit_now(X, y, sample_weight, incremental, classes, eval_set)
        finally:
            jit_cache.start_requested()

    def _fit_now(self, X, y, sample_weight, incremental, classes, eval_set):
        p = self._validated_params()
        X_given, y_given = X, y
        X, target, layer_sizes, output, reinitialise = self._prepare_data(
            X, y, sample_weight, p, incremental, classes)
        self._initialise_or_continue(layer_sizes, output, p, reinitialise, incremental)
        # one subtask per epoch; L-BFGS begins one more after its last iteration (ended
        # empty when the minimisation returns)
        tasks = FitTasks(self, X_given, y_given, sample_weight,
                         1 if incremental else self.max_iter + (p.solver == LBFGS))
        if eval_set is None and not incremental:
            # the scores of an earlier fit's eval_set do not describe this fit
            self.__dict__.pop("eval_scores_", None)
        if p.solver == LBFGS:
            if p.max_norm is not None:
                raise ValueError("max_norm bounds the weights after every step of the "
                                 "stochastic solvers; solver='lbfgs' takes no such steps. Use "
                                 "solver='adam', 'adamw' or 'sgd', or max_norm=None")
            if p.dropout > 0:
                raise ValueError("dropout draws new masks for every mini-batch, and "
                                 "solver='lbfgs' minimises one fixed loss over all rows; use "
                                 "solver='adam', 'adamw' or 'sgd', or dropout=0")
            self._fit_lbfgs(X, target, p, eval_set, tasks)
        else:
            run = self._plan_epochs(X, target, p, incremental, eval_set, tasks)
            best_params = self._run_epochs(run)
            if run.early_stopping and best_params is not None:
                self._params[...] = best_params
        tasks.close()
        return self

    def _prepare_data(self, X, y, sample_weight, p, incremental, classes):
        """Validate X, y and the weights, and decide whether training starts from fresh
        weights. Returns (X, Target, layer sizes, output name, reinitialise)."""
        dtype = p.dtype
        reinitialise = not hasattr(self, "_params") or not (incremental or self.warm_start)
        X, target, output, class_factors = self._targets(X, y, p, incremental, classes,
                                                         reinitialise)
        target = target._replace(weights=row_weights(X, sample_weight, class_factors, dtype))
        n_out = target.values.shape[1] if target.output != SOFTMAX else len(self.classes_)
        layer_sizes = layer_sizes_for(X.shape[1], p.hidden_layer_sizes, n_out)
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
            self._optimizer = OptimizerState(p.solver, self._params.size, p.dtype,
                                             self.learning_rate_init, self.learning_rate,
                                             self.power_t)
        # as in scikit-learn, n_iter_ counts the epochs of this call (t_ and loss_curve_
        # go on across warm starts and partial_fit calls)
        self.n_iter_ = 0
        self.backend_ = p.backend.NAME
        # predict uses what was trained, even if set_params changes the parameter later
        self._activation_code = p.activation

    def _initialise_state(self, layer_sizes, output, p):
        """Fresh weights (the random generator's first draws) and an empty record."""
        self._random_state = check_random_state(self.random_state)
        self._layer_sizes = layer_sizes
        self._params = init_params(layer_sizes, p.activation, p.dtype, self._random_state)
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

    def _rebuild_derived(self):
        """The attributes derived from the parameter vector (kind DERIVED in
        fastmlp/_state.py): the gradient buffer, and the per-layer views."""
        self._grads = np.zeros_like(self._params)
        views = layer_views(self._params, self._layer_sizes)
        self.coefs_ = [w for w, _ in views]
        self.intercepts_ = [b for _, b in views]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags
