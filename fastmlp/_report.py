"""What a fit shows its user: the verbose line of each epoch, the progress bar, where the
warnings of a fit point, and the summary of the network's layers.
"""

from __future__ import annotations

import sys
import warnings

from sklearn.utils.validation import check_is_fitted

from . import _progress
from .backends.codes import ACTIVATIONS, OUTPUTS, SOFTMAX
from .backends.layout import n_params
from .network import summary_table

# outputs whose epochs count correct training predictions (train_scores_)
ACCURACY_OUTPUTS = (SOFTMAX, OUTPUTS["logistic"])
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}


def warn_user(message, category=UserWarning):
    """``warnings.warn`` pointing at the first frame outside fastmlp: the user's call of
    fit, partial_fit or predict (or scikit-learn's, inside a Pipeline or a search),
    however deep in the package the warning was raised."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and _in_package(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _in_package(frame) -> bool:
    # scikit-learn's callback wrapper (sklearn.callback.with_callbacks) runs between the
    # estimator's fit and its fit driver: part of the call, not the user's code
    name = frame.f_globals.get("__name__", "")
    return name == "fastmlp" or name.startswith(("fastmlp.", "sklearn.callback."))


class ReportMixin:
    """BaseMLP's reporting (fastmlp/_base.py); the estimator's ``_SCORE_NAME`` names the
    score of a validation or eval set in the verbose line."""

    def _shows_progress(self):
        """A progress bar during each epoch: when verbose and stderr is a terminal."""
        return bool(self.verbose) and _progress.to_terminal()

    def _epoch_line(self, total, n_correct, run, extra):
        """The verbose line of an epoch."""
        line = f"Epoch [{self.n_iter_}/{total}], Train Loss: {self.loss_:.4f}"
        if self._output_code in ACCURACY_OUTPUTS:
            line += f", Train Accuracy: {100 * n_correct / run.n_samples:.2f}%"
        if extra is not None:
            name, value = extra
            if self._SCORE_NAME == "Accuracy":
                line += f", {name} Accuracy: {100 * value:.2f}%"
            else:
                line += f", {name} {self._SCORE_NAME}: {value:.4f}"
        return line

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
            hidden = self._validated_params().hidden_layer_sizes
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

