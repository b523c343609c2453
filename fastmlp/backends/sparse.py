"""Compressed sparse rows: the form in which the compiled backends read training input."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp


class SparseRows(NamedTuple):
    """X as compressed sparse rows, the form ``prepare_inputs`` of the compiled backends
    returns: row r's non-zero values are values[indptr[r]:indptr[r + 1]], in the columns
    indices[...]. Built once per fit, so the first layer of every batch reads only the
    non-zero inputs (19 % of MNIST's pixels)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    shape: tuple


def checked_csr(X, dtype=None):
    """A SciPy sparse matrix or array X as a CSR matrix in canonical form (each row's
    column indices sorted, none twice: duplicates are summed, as SciPy's products would),
    of ``dtype`` (default: X's). Its structure is checked in full first: the compiled
    kernels index memory with X's indices, so an index outside the matrix must stop here
    with a ValueError rather than read or write memory it does not own. The user's X is
    never changed: what has to change is copied."""
    if X.ndim != 2:
        raise ValueError(f"a sparse X must be 2-D, got shape {X.shape}")
    csr = X.tocsr()
    try:
        csr.check_format(full_check=True)
    except ValueError as error:
        raise ValueError(f"X is not a valid sparse matrix: {error}") from None
    if csr.shape[1] > np.iinfo(np.int32).max:
        raise ValueError(f"a sparse X may have at most {np.iinfo(np.int32).max} columns, "
                         f"got {csr.shape[1]}")
    if dtype is not None and csr.dtype != dtype:
        csr = csr.astype(dtype)
    if not csr.has_canonical_format:
        csr = csr.copy() if csr is X else csr
        csr.sum_duplicates()
    return csr


def from_scipy(X, dtype=None):
    """SparseRows of a SciPy sparse X (see checked_csr), sharing its arrays where their
    dtypes already are the kernels' (int64 indptr, int32 indices, X's value dtype)."""
    csr = checked_csr(X, dtype)
    return SparseRows(np.ascontiguousarray(csr.indptr, dtype=np.int64),
                      np.ascontiguousarray(csr.indices, dtype=np.int32),
                      np.ascontiguousarray(csr.data), csr.shape)


def sparse_rows(X, count_row_nonzeros, fill_sparse_rows):
    """SparseRows of X (N, I0): a SciPy sparse X through from_scipy, a dense one with a
    backend's two parallel passes over X:
    ``count_row_nonzeros(counts, X)`` and ``fill_sparse_rows(indices, values, indptr, X)``.

    The arrays the second pass fills are touched once here first: pages first touched
    from worker threads took several times longer to fault in than the pass itself
    (docs/performance.md)."""
    if sp.issparse(X):
        return from_scipy(X)
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
