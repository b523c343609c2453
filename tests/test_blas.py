"""The numba backend's BLAS call (numba_backend/blas.py) against NumPy: every pair of
transposes, offsets into flat buffers, leading dimensions wider than the matrix, beta 0
(which must overwrite NaN), beta 1, and empty products."""

import numba
import numpy as np
import pytest

from fastmlp.backends.numba_backend.blas import NO_TRANS, TRANS, gemm
from fastmlp.threads import one_blas_thread


@numba.njit
def _call(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    gemm(ta, tb, np.uint64(m), np.uint64(n), np.uint64(k), alpha, a, np.uint64(ao),
         np.uint64(lda), b, np.uint64(bo), np.uint64(ldb), beta, c, np.uint64(co),
         np.uint64(ldc))


def _place(rng, rows, cols, ld, off, dtype):
    """A column-major (rows, cols) matrix at ``off`` in a flat buffer of random junk."""
    flat = rng.standard_normal(off + ld * cols + 3).astype(dtype)
    return flat, np.lib.stride_tricks.as_strided(
        flat[off:], shape=(rows, cols), strides=(flat.itemsize, ld * flat.itemsize))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [NO_TRANS, TRANS])
@pytest.mark.parametrize("tb", [NO_TRANS, TRANS])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("mnk", [(5, 7, 3), (33, 17, 64), (4, 6, 0)])
def test_gemm_matches_numpy(dtype, ta, tb, beta, mnk):
    m, n, k = mnk
    rng = np.random.default_rng(m * 100 + n + k)
    a_rows, a_cols = (k, m) if ta == TRANS else (m, k)
    b_rows, b_cols = (n, k) if tb == TRANS else (k, n)
    a, A = _place(rng, a_rows, a_cols, a_rows + 2, 5, dtype)
    b, B = _place(rng, b_rows, b_cols, b_rows + 1, 3, dtype)
    c, C = _place(rng, m, n, m + 4, 7, dtype)
    if beta == 0.0:
        C[0, 0] = np.nan  # beta 0 means C is not read
    before = c.copy()
    opA = A.T if ta == TRANS else A
    opB = B.T if tb == TRANS else B
    expected = 0.5 * (opA.astype(np.float64) @ opB.astype(np.float64))
    if beta:
        expected += beta * C.astype(np.float64)
    with one_blas_thread():
        _call(ta, tb, m, n, k, dtype(0.5), a, 5, a_rows + 2, b, 3, b_rows + 1, dtype(beta),
              c, 7, m + 4)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(C, expected, rtol=tol, atol=tol * max(k, 1))
    # nothing outside the matrix is written
    outside = np.ones(c.shape, bool)
    for j in range(n):
        outside[7 + j * (m + 4): 7 + j * (m + 4) + m] = False
    np.testing.assert_array_equal(c[outside], before[outside])


def test_empty_output_writes_nothing():
    c = np.arange(4, dtype=np.float32)
    a = np.ones(4, dtype=np.float32)
    _call(NO_TRANS, NO_TRANS, 0, 2, 2, np.float32(1), a, 0, 1, a, 0, 2, np.float32(0), c, 0, 1)
    np.testing.assert_array_equal(c, np.arange(4, dtype=np.float32))
