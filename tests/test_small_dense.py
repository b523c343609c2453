"""The numba backend's training epoch runs a small dense hidden layer (a thread's block of
W within workspace.SMALL_DENSE_BYTES) through register blocks instead of BLAS: the
forward (epoch._small_dense_forward) from a row-major copy of W, the input gradient and
the weight gradient (epoch._small_dense_gradients) from W's work layout. Every value is
one chain of FMAs over its terms in a fixed order, so the results must be the same bits
however the layer's units are split between blocks of work, and whether a row's last,
partial vector goes through a block (with room to load whole vectors) or one FMA at a
time (without); and they must agree with the product computed by NumPy."""

import numpy as np
import pytest

from fastmlp.backends.codes import RELU, TANH

epoch = pytest.importorskip("fastmlp.backends.numba_backend.epoch")
from fastmlp.backends.numba_backend.inline import ublock  # noqa: E402

pytestmark = pytest.mark.numba
U = np.uint64
# the arguments have the types the epoch passes (offsets uint64, row and block counts
# int64), so these calls reuse the code compiled for the epoch
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _blocks(n_units, n_blocks):
    return [tuple(int(c) for c in ublock(U(n_units), U(n_blocks), U(k)))
            for k in range(n_blocks)]


def _to_blocked(buf, off, M, n_blocks):
    """Write M (rows, units) into buf from off in the blocked layout of the epoch's
    buffers: each block's units together, its rows one after the other."""
    n = M.shape[0]
    for c0, c1 in _blocks(M.shape[1], n_blocks):
        buf[off + n * c0:off + n * c1] = M[:, c0:c1].ravel()


def _from_blocked(buf, off, n, n_units, n_blocks):
    out = np.empty((n, n_units), dtype=buf.dtype)
    for c0, c1 in _blocks(n_units, n_blocks):
        out[:, c0:c1] = buf[off + n * c0:off + n * c1].reshape(n, c1 - c0)
    return out


def _layer(dtype, n, n_i, n_o, seed):
    rng = np.random.default_rng(seed)
    A = np.maximum(rng.standard_normal((n, n_i)), 0).astype(dtype)  # ReLU outputs
    W = (rng.standard_normal((n_i, n_o)) * 0.3).astype(dtype)
    b = (rng.standard_normal(n_o) * 0.1).astype(dtype)
    dZ = rng.standard_normal((n, n_o)).astype(dtype)
    return A, W, b, dZ


def _forward(A, W, b, n_blocks, act, slack):
    """The layer's activations through _small_dense_forward, its units split into
    n_blocks; ``slack`` gives the arrays room for a whole vector past their ends."""
    n, n_i = A.shape
    n_o = W.shape[1]
    dtype = A.dtype
    pad = 16 if slack else 0
    i_off, o_off = 3, 3 + n * n_i
    act_buf = np.full(o_off + n * n_o + pad, np.nan, dtype=dtype)
    _to_blocked(act_buf, i_off, A, n_blocks)
    fwd_w = np.concatenate([np.zeros(5, dtype), W.ravel(), np.zeros(pad, dtype)])
    params = np.concatenate([np.zeros(2, dtype), b])  # the bias at b_off = 2
    for c0, c1 in _blocks(n_o, n_blocks):
        epoch._small_dense_forward(act_buf, U(o_off + n * c0), U(c1 - c0), U(c0), params,
                                   U(2), fwd_w, U(5), U(i_off), U(n), U(n_i), U(n_o), n,
                                   act, n_blocks)
    return _from_blocked(act_buf, o_off, n, n_o, n_blocks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_i, n_o", [(64, 64), (37, 21), (8, 50), (100, 30), (5, 3)])
@pytest.mark.parametrize("n", [1, 6, 13])
@pytest.mark.parametrize("act", [RELU, TANH], ids=["relu", "tanh"])
def test_small_dense_forward_has_the_same_bits_however_split(dtype, n_i, n_o, n, act):
    A, W, b, _ = _layer(dtype, n, n_i, n_o, seed=n_i * n_o + n)
    first = _forward(A, W, b, 1, act, slack=True)
    for n_blocks in (1, 2, 3):
        for slack in (True, False):
            np.testing.assert_array_equal(_forward(A, W, b, n_blocks, act, slack), first)
    z = A.astype(np.float64) @ W + b
    expected = np.maximum(z, 0) if act == RELU else np.tanh(z)
    np.testing.assert_allclose(first, expected, **TOL[dtype])


def _gradients(A, W, dZ, n_blocks, alpha, slack):
    """(the input gradient, the weight gradient (n_i, n_o)) through
    _small_dense_gradients, the layer's input units split into n_blocks."""
    n, n_i = A.shape
    n_o = W.shape[1]
    dtype = A.dtype
    pad = 16 if slack else 0
    i_off, o_off = 4, 4 + n * n_i
    delta_buf = np.full(o_off + n * n_o + pad, np.nan, dtype=dtype)
    _to_blocked(delta_buf, o_off, dZ, n_blocks)
    act_buf = np.full_like(delta_buf, np.nan)
    _to_blocked(act_buf, i_off, A, n_blocks)
    # W's work layout: block k (inputs i0:i1) at w_off + n_o * i0, (n_o, i1 - i0)
    w_off = 6
    params = np.zeros(w_off + n_i * n_o + pad, dtype=dtype)
    for i0, i1 in _blocks(n_i, n_blocks):
        params[w_off + n_o * i0:w_off + n_o * i1] = W[i0:i1].T.ravel()
    grads = np.full_like(params, np.nan)
    for i0, i1 in _blocks(n_i, n_blocks):
        epoch._small_dense_gradients(grads, params, delta_buf, act_buf, U(w_off + n_o * i0),
                                     U(i_off + n * i0), U(i1 - i0), n, U(o_off), U(n),
                                     U(n_o), n_blocks, dtype.type(alpha), RELU, 0.0)
    G = np.empty((n_i, n_o), dtype=dtype)
    for i0, i1 in _blocks(n_i, n_blocks):
        G[i0:i1] = grads[w_off + n_o * i0:w_off + n_o * i1].reshape(n_o, i1 - i0).T
    assert np.isnan(grads[:w_off]).all()  # nothing written outside the layer's W
    return _from_blocked(delta_buf, i_off, n, n_i, n_blocks), G


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_i, n_o", [(64, 64), (37, 21), (8, 50), (100, 30), (5, 3)])
@pytest.mark.parametrize("n", [1, 6, 13])
def test_small_dense_gradients_have_the_same_bits_however_split(dtype, n_i, n_o, n):
    A, W, _, dZ = _layer(dtype, n, n_i, n_o, seed=n_i + n_o * n)
    alpha = 0.01
    first = _gradients(A, W, dZ, 1, alpha, slack=True)
    for n_blocks in (1, 2, 3):
        for slack in (True, False):
            got = _gradients(A, W, dZ, n_blocks, alpha, slack)
            np.testing.assert_array_equal(got[0], first[0])
            np.testing.assert_array_equal(got[1], first[1])
    A64, W64, dZ64 = (a.astype(np.float64) for a in (A, W, dZ))
    np.testing.assert_allclose(first[0], (dZ64 @ W64.T) * (A64 > 0), **TOL[dtype])
    np.testing.assert_allclose(first[1], alpha * W64 + A64.T @ dZ64, **TOL[dtype])


def test_only_small_layers_get_forward_copies():
    from fastmlp.backends.numba_backend.workspace import SMALL_DENSE_BYTES, small_dense_copies

    sizes = [784, 64, 64, 100, 10]
    n_params = sum(i * o + o for i, o in zip(sizes, sizes[1:]))
    params = np.arange(n_params, dtype=np.float32)
    fwd_w, offs = small_dense_copies(params, sizes, 1)
    # the first layer and the top one never; 64 x 64 float32 is 16 KiB; 64 x 100 is not
    assert 64 * 64 * 4 <= SMALL_DENSE_BYTES < 64 * 100 * 4
    assert offs.tolist() == [-1, 0, -1, -1]
    start = 784 * 64 + 64
    np.testing.assert_array_equal(fwd_w[:64 * 64], params[start:start + 64 * 64])
    # split in two blocks (64 and 36 units), 64 x 100 is small enough too
    assert small_dense_copies(params, sizes, 2)[1].tolist() == [-1, 0, 4096, -1]
    assert small_dense_copies(params.astype(np.float64), sizes, 1)[1].tolist() == [
        -1, -1, -1, -1]
