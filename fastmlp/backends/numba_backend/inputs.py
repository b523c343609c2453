"""Input preparation: X as compressed sparse rows, built once per fit by two parallel
passes, so the first layer of every batch reads only the non-zero inputs (19 % of
MNIST's pixels) without scanning each row again every epoch."""

import scipy.sparse as sp
from numba import prange

from ..sparse import SparseRows, from_scipy, sparse_rows
from ._config import U, pjit, read_only


@pjit
def _count_row_nonzeros(counts, X):
    # X (N, I0), counts (N,)
    zero = X.dtype.type(0)
    for r in prange(X.shape[0]):
        c = 0
        for j in range(X.shape[1]):
            c += 1 if X[r, j] != zero else 0
        counts[r] = c


@pjit
def _count_not_finite(X):
    # X (N, I0): how many of its values are NaN or infinite (x - x is 0 exactly for
    # finite x); counted without a branch, so the loop is vectorised
    total = 0
    for r in prange(X.shape[0]):
        c = 0
        for j in range(X.shape[1]):
            x = X[r, j]
            c += 1 if x - x != 0 else 0
        total += c
    return total


def all_finite(X):
    """Whether the dense 2-D float array X holds no NaN and no infinity: one parallel
    pass on Numba's threads."""
    return _count_not_finite(read_only(X)) == 0


@pjit
def _fill_sparse_rows(indices, values, indptr, X):
    # X (N, I0); indices, values (nnz,); indptr (N + 1,)
    # Without a branch: every input is written at the row's next free place, which only
    # advances past a non-zero (the branch, taken at random on image data, made this
    # pass many times slower than counting). Once the row's places are filled the rest
    # of the row is skipped, so nothing is written into the next row's places.
    zero = X.dtype.type(0)
    for r in prange(X.shape[0]):
        q = U(indptr[r])
        end = U(indptr[r + 1])
        for j in range(U(X.shape[1])):
            if q == end:
                break
            xv = X[r, j]
            indices[q] = j
            values[q] = xv
            q += U(1) if xv != zero else U(0)


def prepare_inputs(X, dtype=None, scale=None, buffers=None):
    """X (N, I0), dense or SciPy sparse, as SparseRows, the form train_epoch reads, with
    values of ``dtype`` times ``scale`` (see sparse.sparse_rows)."""
    return sparse_rows(X if sp.issparse(X) else read_only(X), _count_row_nonzeros,
                       _fill_sparse_rows, dtype, scale, buffers)


def as_sparse_rows(data, dtype=None):
    """data itself if it is SparseRows already, a SciPy sparse data converted (values of
    ``dtype``), else prepare_inputs(data)."""
    if isinstance(data, SparseRows):
        return data
    if sp.issparse(data):
        return from_scipy(data, dtype)
    return prepare_inputs(data)
