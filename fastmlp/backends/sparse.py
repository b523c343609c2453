"""Compressed sparse rows: the form in which the compiled backends read training input."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .pages import small_page_empty


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


# rows of a stored X (integer, or to be scaled) converted at a time by sparse_rows
CONVERT_ROWS = 2048


def scaled_block(X, start, stop, dtype, scale):
    """Rows start:stop of a dense X as a C-contiguous array of ``dtype``, times ``scale``
    (None: 1), computed as ``dtype(x) * dtype(scale)``."""
    block = np.array(X[start:stop], dtype=dtype, order="C")
    if scale is not None:
        block *= dtype.type(scale)
    block.flags.writeable = False  # as X itself is given to the kernels (one compiled type)
    return block


class StoredRows(NamedTuple):
    """A dense X kept as it is stored (integer pixels, a memory map) with the dtype and
    scale its rows take when read: the numpy backend's prepared form of such an X, whose
    mini-batches are converted as they are gathered."""

    X: np.ndarray
    dtype: np.dtype
    scale: float | None

    @property
    def shape(self):
        return self.X.shape

    def gather(self, rows, out):
        """out[:] = the rows ``rows`` of X, converted and scaled."""
        out[...] = self.X[rows]
        if self.scale is not None:
            out *= self.dtype.type(self.scale)


# stored dtypes the backends' passes read directly (beside the training dtype itself),
# converting each value as it is compressed
DIRECT_DTYPES = (np.dtype(np.uint8),)


def _buffer(buffers, name, size, dtype):
    """A 1-D array of ``size`` elements of ``dtype``: a view of the one kept in
    ``buffers`` under ``name`` when it is large enough (a streamed fit compresses block
    after block into the same memory), else a new one (kept there, with room to grow)
    on small pages (pages.small_page_empty), left for the backend's parallel pass to
    touch first as it fills it: a fit's first touch of fresh huge pages, even from one
    thread ahead of the pass, cost more than the pass (docs/archive/performance-log.md)."""
    kept = None if buffers is None else buffers.get(name)
    if kept is not None and kept.dtype == dtype and kept.shape[0] >= size:
        return kept[:size]
    capacity = size if buffers is None else size + size // 4
    kept = small_page_empty(capacity, dtype)
    if buffers is not None:
        buffers[name] = kept
    return kept[:size]


def sparse_rows(X, count_row_nonzeros, fill_sparse_rows, dtype=None, scale=None,
                buffers=None):
    """SparseRows of X (N, I0) with values of ``dtype`` (default: X's) times ``scale``
    (None: 1): a SciPy sparse X through from_scipy, a dense one with a backend's two
    parallel passes over X: ``count_row_nonzeros(counts, X)`` and
    ``fill_sparse_rows(indices, values, indptr, X)``.

    X of the training dtype or uint8 (images) is read as it is: the passes convert each
    non-zero as they store it, and the scale multiplies the stored values, which gives
    the same values as scaling a converted copy (``dtype(x) * dtype(scale)``). X of
    another dtype is converted CONVERT_ROWS rows at a time, once for each pass. Either
    way no whole float copy of X is made.

    ``buffers``: a dict in which the arrays are kept for the next call to reuse (None:
    new arrays); the SparseRows returned is then valid until that next call."""
    dtype = np.dtype(X.dtype if dtype is None else dtype)
    if sp.issparse(X):
        rows = from_scipy(X, dtype)
        if scale is not None:
            rows = rows._replace(values=rows.values * dtype.type(scale))
        return rows
    direct = X.dtype == dtype or X.dtype in DIRECT_DTYPES
    blocks = ([(0, X.shape[0])] if direct else
              [(s, min(s + CONVERT_ROWS, X.shape[0]))
               for s in range(0, X.shape[0], CONVERT_ROWS)])

    def block(start, stop):
        return X if direct else scaled_block(X, start, stop, dtype, scale)

    counts = np.empty(X.shape[0], dtype=np.int64)
    for start, stop in blocks:
        count_row_nonzeros(counts[start:stop], block(start, stop))
    indptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = _buffer(buffers, "indices", int(indptr[-1]), np.dtype(np.int32))
    values = _buffer(buffers, "values", int(indptr[-1]), dtype)
    for start, stop in blocks:
        # the block's row pointers are absolute places in indices and values
        fill_sparse_rows(indices, values, indptr[start:stop + 1], block(start, stop))
    if direct and scale is not None:
        values *= dtype.type(scale)
    return SparseRows(indptr, indices, values, X.shape)
