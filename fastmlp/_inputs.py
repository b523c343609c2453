"""What fit and predict make of X (and the row weights) before any backend sees it:
scikit-learn's validation with the dtypes the backends take, the check for NaN and
infinity, X scaled or converted as a whole, and the weight of every row.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import _check_sample_weight, validate_data

from ._params import input_scale as _checked_scale
from .backends.codes import Target
from .backends.sparse import checked_csr, scaled_block
from .threads import thread_limit

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


def input_density(X, sample_rows=256):
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


def row_weights(X, sample_weight, class_factors, dtype):
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
