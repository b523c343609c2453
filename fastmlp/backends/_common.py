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
