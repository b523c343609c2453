"""What every backend shares: integer codes for activations and solvers, and the layout
of the flat parameter vector.

Kernels never branch on strings; the estimator resolves names to these codes once.

Flat layout: all parameters of a network live in one contiguous 1-D array, layer after
layer, each layer's weights W (n_in, n_out) in C order followed by its biases b (n_out,).
Gradients and optimizer moments use the same layout, so one optimizer pass covers the
whole network.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IDENTITY, RELU, TANH, LOGISTIC = 0, 1, 2, 3
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "logistic": LOGISTIC}

SGD, ADAM = 0, 1
SOLVERS = {"sgd": SGD, "adam": ADAM}


def n_params(layer_sizes) -> int:
    """Length of the flat parameter vector for ``layer_sizes`` (inputs, hidden..., classes)."""
    return int(sum((i + 1) * o for i, o in zip(layer_sizes[:-1], layer_sizes[1:])))


def layer_views(flat: np.ndarray, layer_sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Views (W, b) of each layer inside a flat vector; no copy is made."""
    views = []
    pos = 0
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        w = flat[pos : pos + n_in * n_out].reshape(n_in, n_out)
        pos += n_in * n_out
        b = flat[pos : pos + n_out]
        pos += n_out
        views.append((w, b))
    return views


class SparseRows(NamedTuple):
    """X as compressed sparse rows, the form ``prepare_inputs`` of the compiled backends
    returns: row r's non-zero values are values[indptr[r]:indptr[r + 1]], in the columns
    indices[...]. Built once per fit, so the first layer of every batch reads only the
    non-zero inputs (19 % of MNIST's pixels)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    shape: tuple


def sparse_rows(X, count_row_nonzeros, fill_sparse_rows):
    """SparseRows of X (N, I0), with a backend's two parallel passes over X:
    ``count_row_nonzeros(counts, X)`` and ``fill_sparse_rows(indices, values, indptr, X)``.

    The arrays the second pass fills are touched once here first: pages first touched
    from worker threads took six times longer to fault in (MNIST's 75 MB: 170 ms against
    27 ms, measured), longer than the pass itself."""
    counts = np.empty(X.shape[0], dtype=np.int64)
    count_row_nonzeros(counts, X)
    indptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    values = np.empty(int(indptr[-1]), dtype=X.dtype)
    indices.fill(0)
    values.fill(0)
    fill_sparse_rows(indices, values, indptr, X)
    return SparseRows(indptr, indices, values, X.shape)


def check_index_array(name, idx, upper, length=None):
    """Raise ValueError unless ``idx`` is an int64 vector (of ``length`` entries, when
    given) with every entry in [0, upper). Compiled kernels index memory with these
    values and check no bounds, so the compiled backends call this before each call."""
    if not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype != np.int64:
        raise ValueError(f"{name} must be a 1-D int64 array, got "
                         f"{getattr(idx, 'dtype', type(idx))} of shape {np.shape(idx)}")
    if length is not None and idx.shape[0] != length:
        raise ValueError(f"{name} has {idx.shape[0]} entries, expected {length}")
    if idx.size and (idx.min() < 0 or idx.max() >= upper):
        raise ValueError(f"{name} must lie in [0, {upper}); found values from {idx.min()} to "
                         f"{idx.max()}")


def check_shapes(layer_sizes, params, *, X=None, out=None, state=()):
    """Raise ValueError unless the arrays fit the network ``layer_sizes``: the compiled
    kernels take their extents from layer_sizes and read and write without bounds checks.
    (A few microseconds: it runs on every prediction, one row included.)"""
    sizes = layer_sizes.tolist() if isinstance(layer_sizes, np.ndarray) else list(layer_sizes)
    p = sum((i + 1) * o for i, o in zip(sizes[:-1], sizes[1:]))
    if params.shape != (p,):
        raise ValueError(f"params has shape {params.shape}, expected ({p},) for layers {sizes}")
    for name, arr in state:
        if arr.shape != params.shape and not (name == "v" and arr.size == 0):
            raise ValueError(f"{name} has shape {arr.shape}, expected {params.shape}")
    if X is not None and (X.ndim != 2 or X.shape[1] != sizes[0]):
        raise ValueError(f"X has shape {X.shape}, expected (n, {sizes[0]})")
    if out is not None and out.shape != (X.shape[0], sizes[-1]):
        raise ValueError(f"out has shape {out.shape}, expected ({X.shape[0]}, {sizes[-1]})")


def check_epoch_inputs(layer_sizes, params, grads, m, v, data, y, order):
    """Everything a compiled train_epoch indexes with, checked before the call: labels,
    shuffled row indices, the state vectors' shapes and X's width (``data`` is X or the
    SparseRows of X; both have a 2-D ``shape``)."""
    n_rows, n_cols = data.shape
    check_index_array("y", y, int(layer_sizes[-1]), length=n_rows)
    check_index_array("order", order, n_rows)
    check_shapes(layer_sizes, params, state=(("grads", grads), ("m", m), ("v", v)))
    if n_cols != layer_sizes[0]:
        raise ValueError(f"X has {n_cols} columns, expected {int(layer_sizes[0])}")


def refuse_non_finite(n_bad_rows):
    """The error of a compiled predict_proba that found NaN or infinity in X."""
    if n_bad_rows:
        raise ValueError(f"Input X contains NaN or infinity ({int(n_bad_rows)} row(s)); "
                         "every value must be finite")


# The compiled backends sum the output layer's rows VECTOR_BYTES at a time (16 float32, 8
# float64 values), from a copy of the top layer's W with its columns padded to that: the
# epochs keep one made here (predict pads its own in compiled code).
VECTOR_BYTES = 64


def padded_top(params, layer_sizes):
    """The top layer's W (I, K) as (I, Kp), flat, its columns padded with zeros to a
    whole number of vectors."""
    n_i, n_k = int(layer_sizes[-2]), int(layer_sizes[-1])
    lanes = VECTOR_BYTES // params.dtype.itemsize
    start = params.shape[0] - n_k - n_i * n_k
    top = np.zeros((n_i, -(-n_k // lanes) * lanes), dtype=params.dtype)
    top[:, :n_k] = params[start : start + n_i * n_k].reshape(n_i, n_k)
    return top.ravel()
