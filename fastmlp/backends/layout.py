"""The flat parameter layout every backend shares, and the padded copy of the top layer.

All parameters of a network live in one contiguous 1-D array, layer after layer, each
layer's weights W (n_in, n_out) in C order followed by its biases b (n_out,). Gradients
and optimizer moments use the same layout, so one optimizer pass covers the whole network.
"""

from __future__ import annotations

import numpy as np

# The compiled backends sum the output layer's rows VECTOR_BYTES at a time (16 float32, 8
# float64 values), from a copy of the top layer's W with its columns padded to that: the
# epochs keep one made here (predict pads its own in compiled code). The extension's
# header (ext/simd.h) declares the same width; tests/test_contract.py checks they agree.
VECTOR_BYTES = 64


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


def padded_top(params, layer_sizes):
    """The top layer's W (I, K) as (I, Kp), flat, its columns padded with zeros to a
    whole number of vectors."""
    n_i, n_k = int(layer_sizes[-2]), int(layer_sizes[-1])
    lanes = VECTOR_BYTES // params.dtype.itemsize
    start = params.shape[0] - n_k - n_i * n_k
    top = np.zeros((n_i, -(-n_k // lanes) * lanes), dtype=params.dtype)
    top[:, :n_k] = params[start : start + n_i * n_k].reshape(n_i, n_k)
    return top.ravel()
