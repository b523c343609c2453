"""The L-BFGS solver: SciPy's L-BFGS-B over all rows at once, from the backend's loss and
gradient, with scikit-learn's max_iter, max_fun and tol.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
from sklearn.exceptions import ConvergenceWarning

from ._inputs import model_input
from ._report import warn_user
from .backends import REFERENCE
from .threads import serial_blas_between, thread_limit


class _LbfgsObjective:
    """The loss over all rows and its gradient, for SciPy (which works in float64) from
    the backend's loss_and_grad (which works in the model's dtype)."""

    def __init__(self, est, X, target, p, tasks):
        self.est, self.X, self.target, self.p, self.tasks = est, X, target, p, tasks
        self.losses = []
        self.stopped = False  # by a callback

    def __call__(self, x):
        est = self.est
        est._params[...] = x
        with np.errstate(all="ignore"):
            loss = self.p.backend.loss_and_grad(est._grads, est._params, est._layer_sizes,
                                                self.p.activation, self.X, self.target,
                                                float(est.alpha))
        return float(loss), est._grads.astype(np.float64)

    def iteration_ended(self, intermediate_result):
        self.losses.append(float(intermediate_result.fun))
        if self.est.verbose:
            print(f"Iteration {len(self.losses)}, loss = {self.losses[-1]:.8f}", flush=True)
        # the callbacks see the iteration's weights (the objective was last called at a
        # point of the line search, and writes its own x before every evaluation)
        self.est._params[...] = intermediate_result.x
        if self.tasks.epoch_ends():
            self.stopped = True
            if self.est.verbose:
                print("Training stopped by a callback.", flush=True)
            raise StopIteration  # SciPy ends the minimisation at this iteration
        self.tasks.epoch_begins("lbfgs-iteration")


class LbfgsMixin:
    """BaseMLP's fit by L-BFGS (fastmlp/_base.py), called once the weights and the
    optimizer are set up."""

    def _fit_lbfgs(self, X, target, p, eval_set, tasks):
        """Minimise the loss over all rows with SciPy's L-BFGS-B, from the current weights;
        ``max_iter``, ``max_fun`` and ``tol`` as in scikit-learn. The model keeps its
        starting weights if the loss diverges or the user interrupts."""
        start = self._params.copy()
        objective = _LbfgsObjective(self, model_input(X, p.dtype, p.input_scale), target, p,
                                    tasks)
        tasks.epoch_begins("lbfgs-iteration")
        try:
            with thread_limit(self.n_jobs, p.backend), serial_blas_between(
                    computes_with_blas=p.backend.NAME == REFERENCE):
                result = scipy.optimize.minimize(
                    objective, start.astype(np.float64), method="L-BFGS-B", jac=True,
                    callback=objective.iteration_ended,
                    options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                             "gtol": self.tol})
        except KeyboardInterrupt:
            self._params[...] = start
            warn_user("training interrupted by the user; the model keeps the weights it "
                          "had before this fit", UserWarning)
            return self
        self._params[...] = result.x
        if not (np.isfinite(result.fun) and np.isfinite(self._params).all()):
            self._params[...] = start
            warn_user("training diverged: the loss or the weights became infinite or "
                          "NaN, so the model keeps the weights it had before this fit. Scale "
                          "X to a small range.", RuntimeWarning)
            return self
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        self.loss_curve_.extend(objective.losses)
        self.best_loss_ = min(self.loss_curve_, default=self.loss_)
        if eval_set is not None:
            self.eval_scores_ = [float(self.score(*eval_set) if p.scoring is None
                                       else p.scoring(self, *eval_set))]
        if result.status != 0 and not objective.stopped:
            hint = (f" Increase the number of iterations (max_iter={self.max_iter})."
                    if self.n_iter_ == self.max_iter else "")
            warn_user(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"(status={result.status}): {result.message}.{hint} Scaling X may "
                          "also help.", ConvergenceWarning)
        return self
