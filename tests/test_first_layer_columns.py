"""The numba backend sums a wide first layer's gradient by input columns and takes the step
at once (epoch._columns_step); narrower layers scatter it by rows. Both add the same
terms in the same order, so they must give the same bits: the parameters, the moments,
the loss (whose L2 term the column path sums on the way) and the hit count."""

import numpy as np
import pytest
import scipy.sparse as sp

from fastmlp.backends.codes import ADAM, LAZY_ADAM, RELU, SGD, SOFTMAX, Target, optimizer_step
from fastmlp.backends.layout import n_params

numba_backend = pytest.importorskip("fastmlp.backends.numba_backend")
workspace = pytest.importorskip("fastmlp.backends.numba_backend.workspace")

ROWS_ONLY = 10**9


def _sparse_problem(dtype, sizes, n, seed=3):
    """Inputs about 20 % non-zero, like MNIST, with an input column that is zero in every
    row and one that is non-zero in a single row."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])) * (rng.random((n, sizes[0])) < 0.2)
    X[:, 3] = 0.0
    X[:, 5] = 0.0
    X[n // 2, 5] = 1.5
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    params = (rng.standard_normal(n_params(sizes)) * 0.3).astype(dtype)
    return X.astype(dtype), y, params


def _epoch(monkeypatch, threshold, X, y, params, sizes, solver, alpha, batch, blocks,
           weights=None):
    """Two epochs of train_epoch with workspace.COLUMNS_MIN_WIDTH at ``threshold``, in
    ``blocks`` blocks; returns (params, m, v, losses, hits) and whether the column buffers
    were in use."""
    monkeypatch.setattr(workspace, "COLUMNS_MIN_WIDTH", threshold)
    used = []
    real = workspace.column_buffers

    def spy(*args):
        cols = real(*args)
        used.append(cols[0].shape[0] > 0)
        return cols

    monkeypatch.setattr(workspace, "column_buffers", spy)
    dtype = params.dtype
    p, g = params.copy(), np.zeros_like(params)
    m = np.zeros_like(p)
    v = np.zeros_like(p) if solver in (ADAM, LAZY_ADAM) else p[:0].copy()
    target = y if weights is None else Target(SOFTMAX, y, np.empty((0, 1), dtype),
                                              weights.astype(dtype))
    data = numba_backend.prepare_inputs(X)
    out, t = [], 0
    with workspace.work_blocks(blocks):
        for e in range(2):
            order = np.random.default_rng(e).permutation(X.shape[0]).astype(np.int64)
            loss, hits, t = numba_backend.train_epoch(
                p, g, m, v, sizes, RELU, data, target, order, batch, alpha,
                optimizer_step(solver, 0.01), t)
            out += [loss, hits]
    return (p, m, v, out), used


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("solver", [ADAM, SGD], ids=["adam", "sgd"])
@pytest.mark.parametrize("alpha", [0.0, 1e-3], ids=["no-l2", "l2"])
# (sizes, batch, blocks): one panel a block, two panels, a deeper network. Blocks of rows
# are whole multiples of 16 (ublock), so a batch of 40 makes parts of 32 and 8 rows, one of
# 20 in 3 blocks parts of 16, 4 and none; the last batch of each epoch holds one row.
@pytest.mark.parametrize("case", [((40, 128, 10), 40, 2), ((40, 128, 7), 25, 1),
                                  ((30, 256, 9, 4), 33, 2), ((30, 192, 5), 20, 3)],
                         ids=["128x2", "128x1", "256-9x2", "192x3"])
def test_columns_give_the_bits_of_rows(monkeypatch, dtype, solver, alpha, case):
    sizes, batch, blocks = case
    sizes = np.asarray(sizes, dtype=np.int64)
    X, y, params = _sparse_problem(dtype, sizes, n=2 * batch + 1)
    by_rows, used = _epoch(monkeypatch, ROWS_ONLY, X, y, params, sizes, solver, alpha, batch,
                           blocks)
    assert not any(used)
    by_columns, used = _epoch(monkeypatch, 64, X, y, params, sizes, solver, alpha, batch,
                              blocks)
    assert all(used) and used
    for a, b in zip(by_rows[:3], by_columns[:3]):
        np.testing.assert_array_equal(a, b)
    assert by_rows[3] == by_columns[3]
    assert np.isfinite(by_rows[3]).all() and not np.array_equal(by_rows[0], params)


def test_columns_with_row_weights_and_explicit_zeros(monkeypatch):
    """Sample weights, and stored zeros of a SciPy matrix (entries whose product is 0):
    the same bits either way."""
    sizes = np.asarray([40, 128, 10], dtype=np.int64)
    X, y, params = _sparse_problem(np.float32, sizes, n=70)
    Xs = sp.csr_matrix(X)
    Xs.data[::7] = 0.0
    weights = np.random.default_rng(5).random(70) + 0.5
    results = []
    for threshold in (ROWS_ONLY, 64):
        res, used = _epoch(monkeypatch, threshold, Xs, y, params, sizes, ADAM, 1e-4, 40, 2,
                           weights)
        assert used == [threshold == 64] * 2
        results.append(res)
    for a, b in zip(results[0][:3], results[1][:3]):
        np.testing.assert_array_equal(a, b)
    assert results[0][3] == results[1][3]


def test_when_columns_are_used():
    """The rule of column_buffers: hidden layers, every block a whole number of panels and
    at least COLUMNS_MIN_WIDTH wide, more non-zero inputs in a batch than columns; and
    room for the most entries a part can hold."""
    X, _, _ = _sparse_problem(np.float32, (40, 8, 2), n=100)
    data = numba_backend.prepare_inputs(X)
    wide = workspace.COLUMNS_MIN_WIDTH * 2

    def cols(sizes, rows=32, blocks=2, x=data):
        return workspace.column_buffers(np.asarray(sizes), rows, blocks, x, np.float32)

    col_ptr, col_rows, col_vals = cols((40, wide, 10))
    assert col_ptr.shape == (2 * 42,) and col_ptr.dtype == np.int32
    lengths = np.sort(np.diff(data.indptr))
    assert col_rows.shape == col_vals.shape == (2 * lengths[-16:].sum(),)
    assert cols((40, wide, 10), blocks=1)[0].shape == (42,)
    assert cols((40, wide, 10), x=None)[0].shape == (0,)
    # no hidden layer; blocks too narrow; a block that is not a whole number of panels
    assert cols((40, wide))[0].shape == (0,)
    assert cols((40, wide // 2, 10))[0].shape == (0,)
    assert cols((40, wide + 32, 10))[0].shape == (0,)
    # 2 rows a batch hold about 16 non-zero inputs, fewer than the 40 columns
    assert cols((40, wide, 10), rows=2)[0].shape == (0,)
    # an epoch of no rows
    assert cols((40, wide, 10), rows=0)[0].shape == (0,)


def test_an_epoch_of_no_rows_with_a_wide_first_layer():
    sizes = np.asarray([40, 256, 10], dtype=np.int64)
    X, y, params = _sparse_problem(np.float32, sizes, n=20)
    p = params.copy()
    zeros = [np.zeros_like(p) for _ in range(3)]
    result = numba_backend.train_epoch(p, *zeros, sizes, RELU, numba_backend.prepare_inputs(X),
                                       y, np.zeros(0, np.int64), 16, 1e-4,
                                       optimizer_step(ADAM, 0.01), 0)
    assert result == (0.0, 0, 0)
    np.testing.assert_array_equal(p, params)


def test_lazy_adam_keeps_the_rows(monkeypatch):
    """The lazy step updates only the rows a batch touches: it scatters by rows, and no
    column buffers are made for it."""
    sizes = np.asarray([40, 128, 10], dtype=np.int64)
    X, y, params = _sparse_problem(np.float32, sizes, n=50)
    _, used = _epoch(monkeypatch, 64, X, y, params, sizes, LAZY_ADAM, 1e-4, 16, 2)
    assert used == [False, False]
