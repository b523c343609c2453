"""Compressed sparse rows: the form in which the compiled backends read training input."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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
    from worker threads took several times longer to fault in than the pass itself
    (docs/performance.md)."""
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
