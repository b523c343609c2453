"""The numba backend's training epoch sends the first layer of a batch whose rows hold all
their inputs (dense tabular data) through blocks: the forward four rows at a time
(epoch._first_layer_dense_rows, intrinsics.add_rows_block), the weight gradient four
inputs at a time (epoch._first_layer_dense_grads, intrinsics.add_cols_block); any other
batch one row at a time (epoch._first_layer_row_f, inline.scatter_rows_f). Both add the
same terms in the same order, so they must give the same bits, whatever the width of the
thread's block of units, the number of rows and inputs (whole blocks and those left
over), the dtype and the activation."""

import numpy as np
import pytest

from fastmlp.backends.codes import RELU, TANH

epoch = pytest.importorskip("fastmlp.backends.numba_backend.epoch")

pytestmark = pytest.mark.numba


def _batch(dtype, n_in, width, n_rows, seed):
    """A first layer's block of W (n_in rows of width units) with its bias in one params
    array, a compressed-row X whose rows all hold their n_in inputs, and a shuffled batch
    of its rows."""
    rng = np.random.default_rng(seed)
    n_all = n_rows + 5
    X = rng.standard_normal((n_all, n_in)).astype(dtype)
    values = X.ravel().copy()
    indices = np.tile(np.arange(n_in, dtype=np.int32), n_all)
    indptr = np.arange(0, (n_all + 1) * n_in, n_in, dtype=np.int64)
    rows = rng.permutation(n_all)[:n_rows].astype(np.int64)
    # W's block at an offset of 7, then its bias: offsets as the epoch's never line up
    w_base, b_off = 7, 7 + n_in * width
    params = (rng.standard_normal(b_off + width) * 0.4).astype(dtype)
    return params, w_base, b_off, values, indices, indptr, rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [8, 16, 24, 32, 64, 100])
@pytest.mark.parametrize("n_rows", [1, 4, 7, 13])
@pytest.mark.parametrize("act", [RELU, TANH], ids=["relu", "tanh"])
def test_blocks_of_rows_give_the_bits_of_one_row_at_a_time(dtype, width, n_rows, act):
    U = np.uint64
    params, w_base, b_off, values, indices, indptr, rows = _batch(dtype, 37, width, n_rows,
                                                                  seed=width + n_rows)
    o_base = 3  # the block's place in the activations buffer
    size = o_base + n_rows * width + 5
    blocks = np.full(size, np.nan, dtype=dtype)
    epoch._first_layer_dense_rows(blocks, U(o_base), U(width), params, U(b_off), U(w_base),
                                  values, indices, indptr, rows, act)
    one_row = np.full(size, np.nan, dtype=dtype)
    for r, row in enumerate(rows):
        o = U(o_base + r * width)
        epoch._first_layer_row_f(one_row, o, params, U(b_off), U(w_base), U(width), values,
                                 indices, U(indptr[row]), U(indptr[row + 1]))
        epoch.activate_f(one_row, o, U(width), act)
    np.testing.assert_array_equal(blocks, one_row)  # NaN outside the block on both sides
    # and the values themselves: the bias plus the row's inputs times W, activated
    W = params[w_base:b_off].reshape(37, width).astype(np.float64)
    X = values.reshape(-1, 37)[rows].astype(np.float64)
    z = X @ W + params[b_off:].astype(np.float64)
    expected = np.maximum(z, 0) if act == RELU else np.tanh(z)
    got = blocks[o_base:o_base + n_rows * width].reshape(n_rows, width)
    np.testing.assert_allclose(got, expected, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_in", [5, 8, 37])
@pytest.mark.parametrize("width", [8, 16, 24, 64, 100])
@pytest.mark.parametrize("n_rows", [1, 7, 13])
def test_the_gradient_by_blocks_of_inputs_gives_the_bits_of_scattered_rows(dtype, n_in,
                                                                         width, n_rows):
    # the backward's first layer of a batch whose rows hold all their inputs
    # (epoch._first_layer_dense_grads, intrinsics.add_cols_block) against the row path's
    # scatter (inline.scatter_rows_f), which adds each row's terms in the batch's order
    U = np.uint64
    _, _, _, values, indices, indptr, rows = _batch(dtype, n_in, width, n_rows,
                                                    seed=n_in + width + n_rows)
    rng = np.random.default_rng(n_in * width)
    d_base, d_stride = 5, width + 3  # a block of output gradients inside a larger buffer
    d_buf = rng.standard_normal(d_base + n_rows * d_stride + 4).astype(dtype)
    w_base = 9
    size = w_base + n_in * width + 6
    blocks = np.zeros(size, dtype=dtype)
    epoch._first_layer_dense_grads(blocks, U(w_base), U(width), U(n_in), values, indptr,
                                   rows, d_buf, U(d_base), U(d_stride))
    scattered = np.zeros(size, dtype=dtype)
    acc = np.empty(64, dtype=dtype)
    for r, row in enumerate(rows):
        epoch.scatter_rows_f(scattered, U(w_base), U(width), values, indices, indptr[row],
                             indptr[row + 1], d_buf, U(d_base + r * d_stride), U(width), acc)
    np.testing.assert_array_equal(blocks, scattered)
    X = values.reshape(-1, n_in)[rows].astype(np.float64)
    dZ = np.stack([d_buf[d_base + r * d_stride:d_base + r * d_stride + width]
                   for r in range(n_rows)]).astype(np.float64)
    got = blocks[w_base:w_base + n_in * width].reshape(n_in, width)
    np.testing.assert_allclose(got, X.T @ dZ, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    assert not blocks[:w_base].any() and not blocks[w_base + n_in * width:].any()
