"""Prediction: rows split between threads (a few rows run on the calling thread alone).
Each row's non-zero inputs are found once and go through the first layer on their own;
with two hidden layers or more, blocks of rows then go through the dense layers above it
as matrix products (BLAS); the output layer takes each row on its own again. The
estimator predicts through ``predict_proba``.

Legend: N rows, I0 input features, K classes, I inputs of a layer, O its outputs.
"""

import numba
import numpy as np
from numba import prange

from ..checks import check_shapes, refuse_non_finite
from ..codes import SOFTMAX
from ._config import U, inline, jit, pjit, read_only
from ...threads import one_blas_thread
from .blas import NO_TRANS, gemm
from .inline import (
    activate_f,
    axpy_f,
    nonzero_places_f,
    output_f,
    sum_rows_f,
    ublock,
)
from .intrinsics import panel, sum_rows_vector, sum_rows_wide, vector_width, wide_width

# predicting fewer than twice this many rows runs on the calling thread alone
PREDICT_CHUNK = 64
# rows per matrix product through the dense hidden layers (see _predict_blocks)
PREDICT_BLOCK = 128


@inline
def _scan_row(nz_idx, X, xo, n_in0):
    """The places of the row's non-zero inputs and their count, and whether the row is
    finite. The values are read from X through these places later, while the row is in
    cache (storing them as well was slower). NaN and infinity are non-zero, so checking
    the non-zero values checks the row (v - v is 0 exactly for finite v)."""
    zero = X.dtype.type(0)
    cnt = nonzero_places_f(nz_idx, X, xo, n_in0)
    finite = True
    for t in range(cnt):
        xv = X[xo + U(nz_idx[t])]
        finite &= xv - xv == zero
    return cnt, finite


@inline
def _first_layer_f(nxt, no, X, xo, nz_idx, cnt, params, n_i, n_o, act, wide, acc):
    """nxt[no : no + n_o] = act(b + x @ W) for the first layer, skipping zero inputs:
    whole panels in vector registers, then the bias; the last columns (bias included)
    through the register panel."""
    p0 = U(0)
    while p0 + wide <= n_o:
        sum_rows_wide(nxt, no + p0, params, p0, n_o, X, xo, nz_idx, U(0), cnt)
        p0 += wide
    for c in range(p0):
        nxt[no + c] += params[n_i * n_o + c]
    if p0 < n_o:
        sum_rows_f(nxt, no + p0, params.dtype.type(1), params, n_i * n_o + p0, X, xo, True,
                   nz_idx, U(0), cnt, params, p0, n_o, n_o - p0, acc)
    activate_f(nxt, no, n_o, act)


@inline
def _output_layer_f(out, o, cur, co, n_i, n_k, params, b_off, top_w, k_pad, lanes, logits,
                    output):
    """out[o : o + n_k] = output(b + h @ W) for the row h = cur[co : co + n_i], as vector
    sums of the padded rows of W."""
    for c0 in range(U(0), k_pad, lanes):
        sum_rows_vector(logits, c0, top_w, c0, k_pad, cur, co, None, U(0), n_i)
    for c in range(n_k):
        out[o + c] = params[b_off + c] + logits[c]
    output_f(out, o, n_k, output)


@jit
def _predict_rows(out, X, params, top_w, usizes, p_offs, act, width, r0, r1, output):
    # rows r0:r1 of X (N, I0) -> out (N, K), both flat; params in the flat layout;
    # top_w the top layer's W (I, Kp), its columns padded with zeros to a multiple of
    # the vector width (see sum_rows_vector).
    # Returns how many rows hold NaN or infinity (their outputs are left unwritten).
    n_layers = usizes.shape[0] - 1
    top = n_layers - 1
    if top >= 2:
        return _predict_blocks(out, X, params, top_w, usizes, p_offs, act, width, r0, r1,
                               output)
    n_k = usizes[n_layers]
    n_in0 = usizes[0]
    n_i = usizes[top]
    cur = np.empty(width, dtype=out.dtype)
    nz_idx = np.empty(n_in0, dtype=np.int32)
    nz_val = np.empty(n_in0, dtype=out.dtype)
    k_pad = U(top_w.shape[0]) // n_i
    logits = np.empty(k_pad, dtype=out.dtype)
    lanes = vector_width(out)
    wide = wide_width(out)
    acc = panel(out)
    b_off = p_offs[top] + n_i * n_k
    n_bad = 0
    for r in range(r0, r1):
        xo = r * n_in0
        cnt, finite = _scan_row(nz_idx, X, xo, n_in0)
        if not finite:
            n_bad += 1
            continue
        o = r * n_k
        if top == 1:
            _first_layer_f(cur, U(0), X, xo, nz_idx, cnt, params, n_in0, usizes[1], act,
                           wide, acc)
            _output_layer_f(out, o, cur, U(0), n_i, n_k, params, b_off, top_w, k_pad, lanes,
                            logits, output)
        else:
            # no hidden layer: the output layer reads the row's non-zero inputs
            for t in range(cnt):
                nz_val[t] = X[xo + U(nz_idx[t])]
            for c0 in range(U(0), k_pad, lanes):
                sum_rows_vector(logits, c0, top_w, c0, k_pad, nz_val, U(0), nz_idx, U(0),
                                cnt)
            for c in range(n_k):
                out[o + c] = params[b_off + c] + logits[c]
            output_f(out, o, n_k, output)
    return n_bad


@jit
def _predict_blocks(out, X, params, top_w, usizes, p_offs, act, width, r0, r1, output):
    """_predict_rows for two hidden layers or more: the rows go through the first layer
    one by one (sparse), then in blocks of PREDICT_BLOCK rows through the dense hidden
    layers above it as matrix products (BLAS), then one by one through the output
    layer."""
    n_layers = usizes.shape[0] - 1
    top = n_layers - 1
    n_k = usizes[n_layers]
    n_in0 = usizes[0]
    n_i = usizes[top]
    blk = U(PREDICT_BLOCK)
    cur = np.empty(blk * U(width), dtype=out.dtype)
    nxt = np.empty(blk * U(width), dtype=out.dtype)
    finite_rows = np.empty(blk, dtype=np.bool_)
    nz_idx = np.empty(n_in0, dtype=np.int32)
    k_pad = U(top_w.shape[0]) // n_i
    logits = np.empty(k_pad, dtype=out.dtype)
    lanes = vector_width(out)
    wide = wide_width(out)
    acc = panel(out)
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    n_bad = 0
    for b0 in range(r0, r1, blk):
        n = min(blk, r1 - b0)
        n_1 = usizes[1]
        for q in range(n):
            xo = (b0 + q) * n_in0
            cnt, finite = _scan_row(nz_idx, X, xo, n_in0)
            finite_rows[q] = finite
            if finite:
                _first_layer_f(cur, q * n_1, X, xo, nz_idx, cnt, params, n_in0, n_1, act,
                               wide, acc)
            else:
                n_bad += 1
                for c in range(n_1):
                    cur[q * n_1 + c] = zero
        for layer in range(1, top):
            # H' (n, O) = H (n, I) W (I, O), row-major; BLAS sees H'^T = W^T H^T
            li = usizes[layer]
            lo = usizes[layer + 1]
            w_off = p_offs[layer]
            gemm(NO_TRANS, NO_TRANS, lo, n, li, one, params, w_off, lo, cur, U(0), li, zero,
                 nxt, U(0), lo)
            for q in range(n):
                axpy_f(nxt, q * lo, one, params, w_off + li * lo, lo)
                activate_f(nxt, q * lo, lo, act)
            cur, nxt = nxt, cur
        b_off = p_offs[top] + n_i * n_k
        for q in range(n):
            if finite_rows[q]:
                _output_layer_f(out, (b0 + q) * n_k, cur, q * n_i, n_i, n_k, params, b_off,
                                top_w, k_pad, lanes, logits, output)
    return n_bad


@inline
def _predict_layout(params, sizes):
    """uint64 widths, layer offsets, the widest layer, and the top layer's W with its
    columns padded to whole vectors (as layout.padded_top; built here, as in Python it
    cost a one-row predict several microseconds)."""
    n_layers = sizes.shape[0] - 1
    usizes = sizes.astype(np.uint64)
    p_offs = np.zeros(n_layers, dtype=np.uint64)
    width = 1
    for q in range(n_layers):
        if q + 1 < n_layers:
            p_offs[q + 1] = p_offs[q] + usizes[q] * usizes[q + 1] + usizes[q + 1]
        width = max(width, sizes[q + 1])
    n_i = usizes[n_layers - 1]
    n_k = usizes[n_layers]
    lanes = vector_width(params)
    k_pad = (n_k + lanes - U(1)) // lanes * lanes
    top_w = np.zeros(n_i * k_pad, dtype=params.dtype)
    w_off = p_offs[n_layers - 1]
    for i in range(n_i):
        for c in range(n_k):
            top_w[i * k_pad + c] = params[w_off + i * n_k + c]
    return usizes, p_offs, width, top_w


@pjit
def _predict_proba_parallel(out, X, n_rows, params, sizes, act, n_blocks, output):
    usizes, p_offs, width, top_w = _predict_layout(params, sizes)
    bad = np.zeros(n_blocks, dtype=np.int64)
    for k in prange(n_blocks):
        r0, r1 = ublock(n_rows, n_blocks, k)
        bad[k] = _predict_rows(out, X, params, top_w, usizes, p_offs, act, width, r0, r1,
                               output)
    return bad.sum()


@jit
def _predict_proba_serial(out, X, n_rows, params, sizes, act, output):
    usizes, p_offs, width, top_w = _predict_layout(params, sizes)
    return _predict_rows(out, X, params, top_w, usizes, p_offs, act, width, U(0), n_rows,
                         output)


def predict_proba(out, X, params, layer_sizes, act, output=SOFTMAX):
    """The outputs of the rows of X through the output function ``output`` (SOFTMAX:
    class probabilities; IDENTITY: the logits): rows split between threads (a few rows
    run on the calling thread alone), zero inputs skipped. Checks that X is finite on the
    way (see CHECKS_FINITE_INPUT)."""
    check_shapes(layer_sizes, params, X=X, out=out)
    n_rows = np.uint64(X.shape[0])
    x = read_only(X.ravel())
    if X.shape[0] < 2 * PREDICT_CHUNK:
        bad = _predict_proba_serial(out.ravel(), x, n_rows, params, layer_sizes, act,
                                    int(output))
    elif len(layer_sizes) > 3:
        # the threads' matrix products each on one BLAS thread (see blas.py)
        with one_blas_thread():
            bad = _predict_proba_parallel(out.ravel(), x, n_rows, params, layer_sizes, act,
                                          numba.get_num_threads(), int(output))
    else:
        bad = _predict_proba_parallel(out.ravel(), x, n_rows, params, layer_sizes, act,
                                      numba.get_num_threads(), int(output))
    refuse_non_finite(bad)
