"""Checks made once, in Python, before a compiled kernel runs: compiled kernels index
memory with what they are given and check no bounds themselves."""

from __future__ import annotations

import functools

import numpy as np


def check_index_array(name, idx, upper, length=None):
    """Raise ValueError unless ``idx`` is an int64 vector (of ``length`` entries, when
    given) with every entry in [0, upper)."""
    if not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype != np.int64:
        raise ValueError(f"{name} must be a 1-D int64 array, got "
                         f"{getattr(idx, 'dtype', type(idx))} of shape {np.shape(idx)}")
    if length is not None and idx.shape[0] != length:
        raise ValueError(f"{name} has {idx.shape[0]} entries, expected {length}")
    if idx.size and (idx.min() < 0 or idx.max() >= upper):
        raise ValueError(f"{name} must lie in [0, {upper}); found values from {idx.min()} to "
                         f"{idx.max()}")


def checked_target(y, n_rows, n_out, dtype):
    """``y`` (a codes.Target, or int64 class indices) as a Target, after checking that it
    fits n_rows rows of a network of n_out outputs in ``dtype`` (ValueError otherwise):
    labels in range for SOFTMAX, finite (n_rows, n_out) values for the other outputs
    (non-negative for EXP) and, when given, n_rows finite non-negative weights. The
    compiled kernels index and divide with these unchecked."""
    from .codes import EXP, OUTPUTS, SOFTMAX, as_target

    target = as_target(y, dtype)

    if target.output not in OUTPUTS.values():
        raise ValueError(f"unknown output code {target.output!r}")
    if target.output == SOFTMAX:
        check_index_array("y", target.labels, n_out, length=n_rows)
    else:
        values = target.values
        if (not isinstance(values, np.ndarray) or values.dtype != dtype
                or values.shape != (n_rows, n_out) or not values.flags.c_contiguous):
            raise ValueError(f"target values must be a C-contiguous {np.dtype(dtype)} array "
                             f"of shape ({n_rows}, {n_out}), got "
                             f"{getattr(values, 'dtype', type(values))} of shape "
                             f"{np.shape(values)}")
        if not np.isfinite(values).all():
            raise ValueError("target values must be finite")
        if target.output == EXP and values.size and values.min() < 0:
            raise ValueError("targets of the Poisson loss (output EXP) must be >= 0")
    weights = target.weights
    if weights.size:
        if weights.dtype != dtype or weights.shape != (n_rows,):
            raise ValueError(f"weights must be a {np.dtype(dtype)} vector of {n_rows} "
                             f"entries, got {weights.dtype} of shape {weights.shape}")
        if not np.isfinite(weights).all() or weights.min() < 0:
            raise ValueError("weights must be finite and non-negative")
    return target


@functools.lru_cache(maxsize=64)
def _n_params(sizes):
    return sum((i + 1) * o for i, o in zip(sizes[:-1], sizes[1:]))


def check_shapes(layer_sizes, params, *, X=None, out=None, state=()):
    """Raise ValueError unless the arrays fit the network ``layer_sizes``: the compiled
    kernels take their extents from layer_sizes. (A few microseconds: it runs on every
    prediction, one row included.)"""
    sizes = tuple(layer_sizes.tolist() if isinstance(layer_sizes, np.ndarray) else layer_sizes)
    p = _n_params(sizes)
    if params.shape != (p,):
        raise ValueError(f"params has shape {params.shape}, expected ({p},) for layers "
                         f"{list(sizes)}")
    for name, arr in state:
        if arr.shape != params.shape and not (name == "v" and arr.size == 0):
            raise ValueError(f"{name} has shape {arr.shape}, expected {params.shape}")
    if X is not None and (len(X.shape) != 2 or X.shape[1] != sizes[0]):
        raise ValueError(f"X has shape {X.shape}, expected (n, {sizes[0]})")
    if out is not None and out.shape != (X.shape[0], sizes[-1]):
        raise ValueError(f"out has shape {out.shape}, expected ({X.shape[0]}, {sizes[-1]})")


def sizes_key(layer_sizes):
    """The layer sizes as a tuple of ints (hashable, for the layouts kept per network)."""
    if isinstance(layer_sizes, np.ndarray):
        return tuple(layer_sizes.tolist())
    return tuple(map(int, layer_sizes))


def check_predict_shapes(sizes, params, X, out):
    """check_shapes for a prediction through the network ``sizes`` (a sizes_key), its
    passing case first: a one-row prediction costs a few microseconds in all."""
    if (params.shape != (_n_params(sizes),) or len(X.shape) != 2 or X.shape[1] != sizes[0]
            or out.shape != (X.shape[0], sizes[-1])):
        check_shapes(sizes, params, X=X, out=out)


def check_epoch_inputs(layer_sizes, params, grads, m, v, data, y, order):
    """Everything a compiled train_epoch indexes with, checked before the call: the
    targets (see checked_target), shuffled row indices, the state vectors' shapes and X's
    width (``data`` is X or the SparseRows of X; both have a 2-D ``shape``). Returns the
    targets as a codes.Target."""
    n_rows, n_cols = data.shape
    target = checked_target(y, n_rows, int(layer_sizes[-1]), params.dtype)
    check_index_array("order", order, n_rows)
    check_shapes(layer_sizes, params, state=(("grads", grads), ("m", m), ("v", v)))
    if n_cols != layer_sizes[0]:
        raise ValueError(f"X has {n_cols} columns, expected {int(layer_sizes[0])}")
    return target


def refuse_non_finite(n_bad_rows):
    """The error of a compiled predict_proba that found NaN or infinity in X."""
    if n_bad_rows:
        raise ValueError(f"Input X contains NaN or infinity ({int(n_bad_rows)} row(s)); "
                         "every value must be finite")
