"""Prediction: X checked as the model takes it, the backend that predicts (the one that
trained, or auto's pick where that one is unavailable), and the network's outputs by
blocks of rows, refused when they are not finite.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_is_fitted, validate_data

from ._inputs import SPARSE_FORMATS, checked_X, input_dtypes, input_scale, model_input
from .backends import auto_may_use, get_backend
from .backends.pages import predict_params
from .backends.sparse import CONVERT_ROWS, scaled_block
from .threads import thread_limit


class NonFiniteOutputs(ValueError):
    """Rows of X gave outputs that are not finite: the inputs overflow the network's
    arithmetic (or, while a fit is diverging, its weights do)."""


def _refuse_non_finite_outputs(out):
    """NonFiniteOutputs (a ValueError) if a row of the network's outputs is not finite
    (inputs far outside the training data overflow the arithmetic)."""
    # a few values are summed faster in Python than checked by two NumPy calls; a finite
    # sum means every value is finite (an overflowing sum of finite values goes on to
    # the full check, which finds nothing)
    if out.size <= 64 and math.isfinite(sum(out.ravel().tolist())):
        return
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise NonFiniteOutputs(
            f"{bad.size} row(s) of X (the first is row {bad[0]}) overflow the network's "
            f"{out.dtype} arithmetic and give no finite outputs; the inputs are far "
            "larger than the data the model was trained on (scale X as for training, or "
            "fit with dtype='float64')")


class PredictMixin:
    """BaseMLP's prediction path (fastmlp/_base.py): needs the fitted ``_params``,
    ``_layer_sizes``, ``_activation_code`` and ``_output_code``."""

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
