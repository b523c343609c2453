"""Layer shapes, parameter allocation and initialisation, and the architecture summary."""

from __future__ import annotations

import numpy as np

from .backends.codes import LOGISTIC
from .backends.layout import layer_views, n_params


def layer_sizes_for(n_features: int, hidden_layer_sizes, n_classes: int) -> np.ndarray:
    """(inputs, hidden..., outputs) as an int64 array, the form every kernel takes."""
    return np.array([n_features, *hidden_layer_sizes, n_classes], dtype=np.int64)


def init_params(layer_sizes, activation_code: int, dtype, rng) -> np.ndarray:
    """A flat parameter vector with Glorot-uniform weights and biases.

    The bound is sqrt(6 / (fan_in + fan_out)), or sqrt(2 / (fan_in + fan_out)) for the
    logistic activation, whose slope at zero is a quarter of tanh's.
    """
    params = np.empty(n_params(layer_sizes), dtype=dtype)
    factor = 2.0 if activation_code == LOGISTIC else 6.0
    for (w, b), n_in, n_out in zip(
        layer_views(params, layer_sizes), layer_sizes[:-1], layer_sizes[1:]
    ):
        bound = np.sqrt(factor / (n_in + n_out))
        w[...] = rng.uniform(-bound, bound, size=w.shape)
        b[...] = rng.uniform(-bound, bound, size=b.shape)
    return params


def summary_table(layer_sizes, activation: str, dtype, output: str = "softmax") -> str:
    """A printable table of the layers: sizes, activation (``output`` for the output
    layer's function, such as "softmax", "logistic", "identity" or "exp"), weights and
    biases."""
    rows = []
    n_layers = len(layer_sizes) - 1
    for i, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        kind = "output" if i == n_layers - 1 else f"hidden {i + 1}"
        act = output if i == n_layers - 1 else activation
        rows.append((kind, f"{n_in} -> {n_out}", act, n_in * n_out, n_out))
    total_w = sum(r[3] for r in rows)
    total_b = sum(r[4] for r in rows)
    header = ("layer", "shape", "activation", "weights", "biases", "parameters")
    body = [(k, s, a, f"{w:,}", f"{b:,}", f"{w + b:,}") for k, s, a, w, b in rows]
    footer = ("total", "-".join(str(int(s)) for s in layer_sizes), "", f"{total_w:,}",
              f"{total_b:,}", f"{total_w + total_b:,}")
    table = [header, *body, footer]
    widths = [max(len(str(r[c])) for r in table) for c in range(len(header))]

    def fmt(row):
        cells = [str(v).ljust(w) if c < 3 else str(v).rjust(w)
                 for c, (v, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    rule = "-" * len(fmt(header))
    n_bytes = (total_w + total_b) * np.dtype(dtype).itemsize
    lines = [fmt(header), rule, *(fmt(r) for r in body), rule, fmt(footer),
             f"dtype: {np.dtype(dtype).name}, {n_bytes:,} bytes"]
    return "\n".join(lines)
