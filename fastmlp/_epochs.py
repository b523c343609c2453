"""The stochastic solvers' fit: the plan of one call of fit or partial_fit (the
early-stopping split, the batch size, where the rows come from, the threads), the epoch
loop with its undoing of an epoch that diverges or is interrupted, the optimizer's step
record, and the bookkeeping after each epoch (scores, early stopping, the schedule).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from . import _progress
from ._inputs import input_density, weights_or_none
from ._predict import NonFiniteOutputs
from ._report import ACCURACY_OUTPUTS, warn_user
from ._state import restore_snapshot, take_snapshot
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
from .backends.codes import CONSTANT, SCHEDULES, Target, optimizer_step, rows_of
from .threads import adaptive_team, batch_work, epoch_threads, thread_limit

AUTO_BATCH_SIZE = 64
# how often a progress bar is updated during an in-memory epoch (a streamed epoch
# updates it once per block)
PROGRESS_UPDATES = 50


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
    stop_on_eval: bool  # early_stopping="eval_set": eval_set's scores are the validation's
    scorer: object  # the scikit-learn scorer of both (scoring), or None: self.score
    tasks: object  # _callbacks.FitTasks: each epoch reported to the callbacks
    max_norm: float  # OptimizerStep.max_norm: 0, or the bound of a unit's weight norm
    dropout: float  # OptimizerStep.dropout: the hidden layers' rate during training
    drop_seed: int  # OptimizerStep.drop_seed: this call's key of dropout's masks
    team: object  # threads.AdaptiveTeam (default threads), or None
    threads: int | None  # the n_jobs the epochs run with (threads.epoch_threads)


def _score_or_nan(score):
    """``score()`` as a float, or NaN where the model's outputs are no longer finite (a
    fit on its way to diverge), as scikit-learn scores them: the epoch is then no
    improvement, and the next one's divergence check ends the fit."""
    try:
        return float(score())
    except NonFiniteOutputs:
        return float("nan")


class EpochsMixin:
    """BaseMLP's epochs (fastmlp/_base.py), run once the weights and the optimizer are
    set up; the estimator's ``_stratify`` and ``_score_target`` serve early stopping."""

    def _plan_epochs(self, X, target, p, incremental, eval_set, tasks):
        """What every epoch of this call needs: the validation split (early stopping, fit
        only), the evaluation set, the batch size and the backend's form of X."""
        early_stopping = bool(p.early_stopping) and not incremental
        stop_on_eval = early_stopping and p.early_stopping == "eval_set"
        if stop_on_eval and eval_set is None:
            raise ValueError("early_stopping='eval_set' stops on the scores of the eval_set "
                             "given to fit, and none was given: pass eval_set=(X_val, y_val), "
                             "or set early_stopping=True to hold out part of X")
        read = how_read(X, p.stream)
        validation, train_rows = None, None
        if early_stopping:
            if stop_on_eval:
                pass  # nothing held out: eval_set is scored below
            elif read != WHOLE:
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
        # dropout's masks are keyed by a seed drawn after the split (only when there is
        # dropout: the draws of every other fit stay as they were)
        drop_seed = (int(self._random_state.randint(0, 2**62, dtype=np.int64))
                     if p.dropout > 0 else 0)
        n_samples = X.shape[0] if train_rows is None else train_rows.shape[0]
        if self.batch_size == "auto":
            batch_size = min(AUTO_BATCH_SIZE, n_samples)
        else:
            batch_size = int(self.batch_size)
        if batch_size > n_samples:
            if self.batch_size != "auto":
                warn_user(f"batch_size={batch_size} is larger than the number of samples "
                              f"({n_samples}); using batch_size={n_samples}", UserWarning)
            batch_size = n_samples
        total_weight = (float(np.sum(target.weights, dtype=np.float64)) if target.weights.size
                        else n_samples)
        backend = p.backend
        if read == BLOCKS:
            source = Streamed(X, target, backend, p.dtype, p.input_scale,
                              part_rows_for(X, batch_size), rows=train_rows)
        elif read == GATHERED:
            source = Gathered(X, target, backend, p.dtype, p.input_scale,
                              part_rows_for(X, batch_size), rows=train_rows)
        else:
            source = InMemory(backend.prepare_inputs(X, p.dtype, p.input_scale),
                              target, n_samples)
        work = batch_work(self._layer_sizes, batch_size, input_density(X))
        return _Epochs(backend=backend, activation=p.activation, solver=p.solver,
                       source=source, target=target, n_samples=n_samples,
                       total_weight=total_weight or 1.0, batch_size=batch_size,
                       count=1 if incremental else self.max_iter, incremental=incremental,
                       early_stopping=early_stopping, validation=validation,
                       eval_set=eval_set, stop_on_eval=stop_on_eval, scorer=p.scoring,
                       tasks=tasks, max_norm=float(p.max_norm or 0.0),
                       dropout=float(p.dropout), drop_seed=drop_seed,
                       team=adaptive_team(self.n_jobs, backend, batch_size,
                                          self._params.size, work),
                       threads=epoch_threads(self.n_jobs, backend, work))

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
        if stratify is not None:
            # the check train_test_split makes, here so the message names the user's labels
            # (the split is stratified by their indices)
            counts = np.bincount(stratify)
            if np.any(counts == 1):
                few = self.classes_[counts == 1].tolist()
                raise ValueError(
                    "early_stopping=True holds out a stratified validation set "
                    f"(validation_fraction={self.validation_fraction}), and it cannot be made "
                    "from this data: The least populated classes in y have only 1 member, "
                    "which is too few. The minimum number of groups for any class cannot be "
                    f"less than 2. Classes with too few members are: {few}")
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
        ends training, and a callback (set_callbacks) may end it after any epoch. Returns
        the best parameters seen under early stopping, or None."""
        best_params = None
        with thread_limit(run.threads, run.backend), \
                (run.team.blocks() if run.team is not None else nullcontext()):
            for _ in range(run.count):
                snapshot = take_snapshot(self)
                run.tasks.epoch_begins()
                try:
                    loss_sum, n_correct, t = self._train_epoch(run)
                    if not (np.isfinite(loss_sum) and np.isfinite(self._params).all()):
                        restore_snapshot(self, snapshot)
                        warn_user(
                            f"training diverged in epoch {self.n_iter_ + 1}: the loss or the "
                            "weights became infinite or NaN, so training stopped and the "
                            f"model keeps the weights of epoch {self.n_iter_} (the last "
                            "finite ones; epoch 0 means the initial weights). Lower "
                            "learning_rate_init, or scale X to a small range.",
                            RuntimeWarning)
                        break
                    self._optimizer.t = t
                    best_params, stop = self._end_epoch(run, loss_sum, n_correct, best_params)
                    if run.tasks.epoch_ends():
                        if self.verbose:
                            print("Training stopped by a callback.", flush=True)
                        stop = True
                except KeyboardInterrupt:
                    restore_snapshot(self, snapshot)
                    warn_user(f"training interrupted by the user during epoch "
                                  f"{snapshot['n_iter_'] + 1}; the model keeps the weights "
                                  f"of epoch {snapshot['n_iter_']}, the last completed one.",
                                  UserWarning)
                    break
                if stop:
                    break
            else:
                if not run.incremental:
                    warn_user(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  "reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning)
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

    def _optimizer_step(self, run):
        """The optimizer's hyperparameters as the record train_epoch takes (see
        fastmlp/backends/codes.py), at the current learning rate of the schedule. A decaying
        schedule spans max_iter epochs of this fit (for partial_fit: max_iter passes of
        this call's size, counted by t_), and the kernels apply it before every batch."""
        schedule = SCHEDULES.get(self.learning_rate, CONSTANT)
        done = self.t_ if run.incremental else self.n_iter_ * run.n_samples
        return optimizer_step(run.solver, self._optimizer.learning_rate, self.momentum,
                              self.nesterovs_momentum, self.beta_1, self.beta_2, self.epsilon,
                              schedule, done, self.max_iter * run.n_samples,
                              self.weight_decay, run.max_norm, run.dropout, run.drop_seed)

    def _end_epoch(self, run, loss_sum, n_correct, best_params):
        """Bookkeeping after a completed epoch: the record, the scores, the verbose line,
        the count of epochs without improvement and the learning-rate schedule.
        Returns (best_params, whether to stop)."""
        self.n_iter_ += 1
        self.t_ += run.n_samples
        self.loss_ = loss_sum / run.total_weight
        self.loss_curve_.append(self.loss_)
        if self._output_code in ACCURACY_OUTPUTS:
            # as loss_curve_, kept across warm starts and partial_fit calls
            self.__dict__.setdefault("train_scores_", []).append(n_correct / run.n_samples)
        extra = None
        if run.validation is not None:
            score = self._validation_score(run, *run.validation)
            self.validation_scores_.append(score)
            extra = ("Validation", score)
        if run.eval_set is not None:
            score = _score_or_nan(lambda: self.score(*run.eval_set) if run.scorer is None
                                  else run.scorer(self, *run.eval_set))
            self.eval_scores_.append(score)
            if run.stop_on_eval:
                self.validation_scores_.append(score)
            extra = ("Test", score)
        if self.verbose:
            total = self.n_iter_ if run.incremental else self.max_iter
            print(self._epoch_line(total, n_correct, run, extra), flush=True)
        best_params = self._update_no_improvement(run.early_stopping, best_params)
        self._optimizer.epoch_ended(self.t_)
        return best_params, self._no_improvement_stops(run.early_stopping)

    def _validation_score(self, run, X_val, target_val):
        """The score of the held-out rows: the estimator's own, or the scorer's."""
        if run.scorer is None:
            return _score_or_nan(lambda: self._score_target(run.backend, run.activation,
                                                            X_val, target_val))
        weights = weights_or_none(target_val)
        return _score_or_nan(lambda: run.scorer(
            self, X_val, self._labels_of(target_val),
            **({} if weights is None else {"sample_weight": weights})))

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
            # a NaN score (outputs no longer finite) is no improvement
            if not score >= self.best_validation_score_ + self.tol:
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
