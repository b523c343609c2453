"""scikit-learn's callbacks (``sklearn.callback``, scikit-learn 1.9 and later) on the
estimators: ``set_callbacks`` takes ``ProgressBar``, ``ScoringMonitor`` or any object of
the ``FitCallback`` protocol, and a fit reports to them as a tree of tasks, the fit
the root and each epoch (or L-BFGS iteration) one subtask. A callback's
``on_fit_task_end`` returning True ends the fit after that epoch, as early stopping would.
Inside a ``Pipeline`` or a search the tasks join the meta-estimator's tree, as
scikit-learn propagates them.

With an older scikit-learn the estimators have no ``set_callbacks`` and the fit reports
to nothing.
"""

from __future__ import annotations

from .backends.layout import layer_views

try:
    from sklearn.callback import CallbackSupportMixin, with_callbacks
except ImportError:  # scikit-learn before 1.9

    class CallbackSupportMixin:
        """Without sklearn.callback there is nothing to report to."""

    def with_callbacks(method):
        return method


class FitTasks:
    """One fit's task tree. ``epoch_begins`` and ``epoch_ends`` bracket each epoch (or
    L-BFGS iteration); ``close`` ends the root task. Every call is cheap when no callback
    is set, and nothing is computed for a callback that does not ask for it: the fitted
    estimator a callback may take is a copy of the weights made only when one does."""

    def __init__(self, est, X, y, sample_weight, n_subtasks):
        self._est = est
        self._kwargs = {"X": X, "y": y,
                        "metadata": None if sample_weight is None
                        else {"sample_weight": sample_weight}}
        init = getattr(est, "_init_callback_context", None)
        self._root = None if init is None else init(max_subtasks=n_subtasks)
        self._task = None
        if self._root is not None:
            self._root.call_on_fit_task_begin(estimator=est, **self._kwargs)

    def _fitted_attributes(self):
        """What makes a copy of the estimator predict with the weights of this moment:
        its own parameter vector, and the layer views into it."""
        params = self._est._params.copy()
        views = layer_views(params, self._est._layer_sizes)
        return {"_params": params, "coefs_": [w for w, _ in views],
                "intercepts_": [b for _, b in views]}

    def epoch_begins(self, name="epoch"):
        if self._root is None:
            return
        self._task = self._root.subcontext(task_name=name)
        self._task.call_on_fit_task_begin(estimator=self._est, **self._kwargs,
                                          reconstruction_attributes=self._fitted_attributes)

    def epoch_ends(self, completed=True) -> bool:
        """End the current epoch's task; returns whether a callback asks to stop. An
        epoch that did not complete (undone after a divergence or an interruption) ends
        as an empty task."""
        task, self._task = self._task, None
        if task is None:
            return False
        if not completed:
            task.call_on_fit_task_end(estimator=self._est)
            return False
        return bool(task.call_on_fit_task_end(
            estimator=self._est, **self._kwargs,
            reconstruction_attributes=self._fitted_attributes))

    def close(self):
        if self._root is None:
            return
        if self._task is not None:
            self.epoch_ends(completed=False)
        self._root.call_on_fit_task_end(estimator=self._est, **self._kwargs,
                                        reconstruction_attributes=self._fitted_attributes)
