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

from ...threads import one_blas_thread
from ..checks import check_predict_shapes, refuse_non_finite, sizes_key
from ..codes import SOFTMAX
from ..pages import huge_page_empty, predict_params
from ._config import U, inline, jit, pjit, read_only
from .blas import NO_TRANS, gemm
from .inline import (
    activate_f,
    axpy_f,
    nonzero_places_f,
    output_f,
    sum_rows_f,
    ublock,
)
from .inputs import as_sparse_rows
from .intrinsics import (
    WIDE_BYTES,
    panel,
    sum_rows_vector,
    sum_rows_wide,
    sum_rows_wide_csr,
    vector_width,
    wide_width,
)

# predicting fewer than twice this many rows runs on the calling thread alone
PREDICT_CHUNK = 64
SERIAL_PREDICT_ROWS = 2 * PREDICT_CHUNK - 1
# rows per block of _predict_blocks: through the first layer panel by panel, and per
# matrix product through the dense hidden layers. 256 rather than 128: larger products
# made the deep networks' predict faster with AVX-512 and AVX2 code alike, and
# 784-128-10's no slower (docs/archive/performance-log.md)
PREDICT_BLOCK = 256
# Predicting at least this many rows, the first layer reads a copy of its W in panel-major
# order (first_layer_panels), when the inputs are few enough for a panel of W to fit in
# L2 (PANEL_MAX_INPUTS * 256 bytes: 1 MiB)
PANEL_MIN_ROWS = 1024
PANEL_MAX_INPUTS = 4096


@inline
def _row_inputs(nz_idx, po, X, r, n_in0, indptr, indices, csr):
    """Where row r's non-zero inputs are, as (idx, vo, q0, q1, finite): its inputs are
    X[vo + idx[q]] for q in [q0, q1) when X is dense (idx = nz_idx, the places found
    here, written from nz_idx[po]), X[q] in the columns idx[q] when X holds the values
    of compressed sparse rows (``csr``). ``finite``: whether the row holds no NaN or
    infinity; NaN and infinity are non-zero, so checking the non-zero values checks the
    row (v - v is 0 exactly for finite v). For a dense row the values are read from X
    through the places found, while the row is in cache (storing them as well was
    slower)."""
    zero = X.dtype.type(0)
    if csr:
        q0 = U(indptr[r])
        q1 = U(indptr[r + U(1)])
        vo = U(0)
        idx = indices
        finite = True
        for q in range(q0, q1):
            xv = X[q]
            finite &= xv - xv == zero
    else:
        vo = r * n_in0
        q0 = U(po)
        q1 = q0 + nonzero_places_f(nz_idx, q0, X, vo, n_in0)
        idx = nz_idx
        finite = True
        for t in range(q0, q1):
            xv = X[vo + U(nz_idx[t])]
            finite &= xv - xv == zero
    return idx, vo, q0, q1, finite


@jit
def _first_layer_f(nxt, no, X, vo, idx, q0, q1, csr, params, n_i, n_o, act, wide, acc):
    """nxt[no : no + n_o] = act(b + x @ W) for the first layer from the row's non-zero
    inputs (see _row_inputs): whole panels in vector registers, then the bias; the last
    columns (bias included) through the register panel."""
    p0 = U(0)
    while p0 + wide <= n_o:
        if csr:
            sum_rows_wide_csr(nxt, no + p0, params, p0, n_o, X, vo, idx, q0, q1)
        else:
            sum_rows_wide(nxt, no + p0, params, p0, n_o, X, vo, idx, q0, q1)
        p0 += wide
    _first_layer_rest_f(nxt, no, X, vo, idx, q0, q1, csr, params, n_i, n_o, p0, act, acc)


@jit
def _first_layer_rest_f(nxt, no, X, vo, idx, q0, q1, csr, params, n_i, n_o, p0, act, acc):
    """The first layer after its whole panels (columns 0:p0, summed): the bias of those
    columns, columns p0: (bias included) through the register panel, the activation."""
    for c in range(p0):
        nxt[no + c] += params[n_i * n_o + c]
    if p0 < n_o:
        sum_rows_f(nxt, no + p0, params.dtype.type(1), params, n_i * n_o + p0, X, vo,
                   not csr, idx, q0, q1, params, p0, n_o, n_o - p0, acc)
    activate_f(nxt, no, n_o, act)


@jit
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
def _predict_rows(out, X, indptr, indices, csr, params, top_w, w0p, usizes, p_offs, act,
                  width, r0, r1, output):
    # rows r0:r1 of X -> out (N, K) flat; X the dense rows (N, I0) flat, or (csr) the
    # values of compressed sparse rows with their indptr and indices; params in the flat
    # layout; top_w the top layer's W (I, Kp), its columns padded with zeros to a
    # multiple of the vector width (see sum_rows_vector); w0p the first layer's W in
    # panels (first_layer_panels), or empty.
    # Returns how many rows hold NaN or infinity (their outputs are left unwritten).
    n_layers = usizes.shape[0] - 1
    top = n_layers - 1
    if top >= 2 or (top == 1 and w0p.shape[0] > 0):
        return _predict_blocks(out, X, indptr, indices, csr, params, top_w, w0p, usizes,
                               p_offs, act, width, r0, r1, output)
    n_k = usizes[n_layers]
    n_in0 = usizes[0]
    n_i = usizes[top]
    cur = np.empty(width, dtype=out.dtype)
    nz_idx = np.empty(U(0) if csr else n_in0, dtype=np.int32)
    nz_val = np.empty(U(0) if csr else n_in0, dtype=out.dtype)
    k_pad = U(top_w.shape[0]) // n_i
    logits = np.empty(k_pad, dtype=out.dtype)
    lanes = vector_width(out)
    wide = wide_width(out)
    acc = panel(out)
    b_off = p_offs[top] + n_i * n_k
    n_bad = 0
    for r in range(r0, r1):
        idx, vo, q0, q1, finite = _row_inputs(nz_idx, U(0), X, r, n_in0, indptr, indices,
                                              csr)
        if not finite:
            n_bad += 1
            continue
        o = r * n_k
        if top == 1:
            _first_layer_f(cur, U(0), X, vo, idx, q0, q1, csr, params, n_in0, usizes[1], act,
                           wide, acc)
            _output_layer_f(out, o, cur, U(0), n_i, n_k, params, b_off, top_w, k_pad, lanes,
                            logits, output)
        else:
            # no hidden layer: the output layer reads the row's non-zero inputs
            if csr:
                for c0 in range(U(0), k_pad, lanes):
                    sum_rows_vector(logits, c0, top_w, c0, k_pad, X, U(0), idx, q0, q1)
            else:
                for t in range(q1):
                    nz_val[t] = X[vo + U(nz_idx[t])]
                for c0 in range(U(0), k_pad, lanes):
                    sum_rows_vector(logits, c0, top_w, c0, k_pad, nz_val, U(0), idx, q0, q1)
            for c in range(n_k):
                out[o + c] = params[b_off + c] + logits[c]
            output_f(out, o, n_k, output)
    return n_bad


@jit
def _panels_block(cur, X, indptr, indices, csr, params, w0p, n_in0, n_1, act, wide, acc,
                  b0, n, places, starts, ends, finite_rows):
    """The first layer's outputs for the n rows from b0 into cur (rows n_1 apart), from
    the panel-major copy of its W (first_layer_panels): panel by panel, every row of the
    block, so that the panel's W (n_in0 * wide values, contiguous) stays in L2 while the
    rows use it; then, row by row, the rest as _first_layer_f does. Each output is the
    same sum in the same order as _first_layer_f's. A dense row's places are kept for
    every panel, row q's at places[q * n_in0:]. Returns how many rows hold NaN or
    infinity (finite_rows says which)."""
    n_bad = 0
    for q in range(n):
        _, _, q0, q1, finite = _row_inputs(places, q * n_in0, X, b0 + q, n_in0, indptr,
                                           indices, csr)
        starts[q] = q0
        ends[q] = q1
        finite_rows[q] = finite
        if not finite:
            n_bad += 1
    covered = U(w0p.shape[0]) // n_in0
    for p0 in range(U(0), covered, wide):
        for q in range(n):
            if finite_rows[q]:
                if csr:
                    sum_rows_wide_csr(cur, q * n_1 + p0, w0p, p0 * n_in0, wide, X, U(0),
                                      indices, starts[q], ends[q])
                else:
                    sum_rows_wide(cur, q * n_1 + p0, w0p, p0 * n_in0, wide, X,
                                  (b0 + q) * n_in0, places, starts[q], ends[q])
    zero = X.dtype.type(0)
    for q in range(n):
        if not finite_rows[q]:
            for c in range(n_1):
                cur[q * n_1 + c] = zero
        elif csr:
            _first_layer_rest_f(cur, q * n_1, X, U(0), indices, starts[q], ends[q], csr,
                                params, n_in0, n_1, covered, act, acc)
        else:
            _first_layer_rest_f(cur, q * n_1, X, (b0 + q) * n_in0, places, starts[q],
                                ends[q], csr, params, n_in0, n_1, covered, act, acc)
    return n_bad


@jit
def _predict_blocks(out, X, indptr, indices, csr, params, top_w, w0p, usizes, p_offs, act,
                    width, r0, r1, output):
    """_predict_rows in blocks of PREDICT_BLOCK rows: each block goes through the first
    layer (panel by panel from w0p when it is given, else row by row), then through the
    dense hidden layers above it as matrix products (BLAS), then row by row through the
    output layer."""
    n_layers = usizes.shape[0] - 1
    top = n_layers - 1
    n_k = usizes[n_layers]
    n_in0 = usizes[0]
    n_i = usizes[top]
    blk = U(PREDICT_BLOCK)
    cur = np.empty(blk * U(width), dtype=out.dtype)
    nxt = np.empty(blk * U(width), dtype=out.dtype)
    finite_rows = np.empty(blk, dtype=np.bool_)
    panels = w0p.shape[0] > 0
    nz_idx = np.empty(U(0) if csr else (blk if panels else U(1)) * n_in0, dtype=np.int32)
    starts = np.empty(blk, dtype=np.uint64)
    ends = np.empty(blk, dtype=np.uint64)
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
        if panels:
            n_bad += _panels_block(cur, X, indptr, indices, csr, params, w0p, n_in0, n_1, act,
                                   wide, acc, b0, n, nz_idx, starts, ends, finite_rows)
        else:
            for q in range(n):
                idx, vo, q0, q1, finite = _row_inputs(nz_idx, U(0), X, b0 + q, n_in0,
                                                      indptr, indices, csr)
                finite_rows[q] = finite
                if finite:
                    _first_layer_f(cur, q * n_1, X, vo, idx, q0, q1, csr, params, n_in0,
                                   n_1, act, wide, acc)
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


@pjit
def _fill_panels(w0p, params, n_in0, n_1, wide):
    """w0p[(p * n_in0 + j) * wide + c] = W[j, p * wide + c] for the first layer's W
    (n_in0, n_1) at the start of params: W's whole panels of wide columns, each panel's
    rows one after the other."""
    n_pan = U(w0p.shape[0]) // (n_in0 * wide)
    for p in prange(n_pan):
        for j in range(n_in0):
            dst = (U(p) * n_in0 + j) * wide
            src = j * n_1 + U(p) * wide
            for c in range(wide):
                w0p[dst + c] = params[src + c]


def first_layer_panels(params, layer_sizes, n_rows):
    """The first layer's W in panel-major order for predicting n_rows rows: its whole
    panels of 64 float32 (32 float64) columns, each panel's rows one after the other, on
    huge pages (pages.py). The first layer reads one panel at a time for a block of rows,
    instead of every panel of each row: a panel's W then stays in L2 (a row-major W of
    784-1024 does not fit, and its rows, 4 KB apart, fall in few of L2's sets). Empty
    (unused) for fewer than PANEL_MIN_ROWS rows, more than PANEL_MAX_INPUTS inputs, no
    hidden layer, or no whole panel."""
    if n_rows < PANEL_MIN_ROWS:
        return _NO_PANELS[params.dtype.type]
    wide = WIDE_BYTES // params.dtype.itemsize
    n_in0 = int(layer_sizes[0])
    n_1 = int(layer_sizes[1])
    n_pan = n_1 // wide if len(layer_sizes) > 2 else 0
    if n_in0 > PANEL_MAX_INPUTS or n_pan == 0:
        return _NO_PANELS[params.dtype.type]
    w0p = huge_page_empty(n_pan * wide * n_in0, params.dtype)
    _fill_panels(w0p, params, U(n_in0), U(n_1), U(wide))
    return w0p


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
def _predict_proba_parallel(out, X, indptr, indices, csr, n_rows, params, w0p, sizes, act,
                            n_blocks, output):
    usizes, p_offs, width, top_w = _predict_layout(params, sizes)
    bad = np.zeros(n_blocks, dtype=np.int64)
    for k in prange(n_blocks):
        r0, r1 = ublock(n_rows, n_blocks, k)
        bad[k] = _predict_rows(out, X, indptr, indices, csr, params, top_w, w0p, usizes,
                               p_offs, act, width, r0, r1, output)
    return bad.sum()


@jit
def _predict_proba_serial(out, X, indptr, indices, csr, n_rows, params, w0p, sizes, act,
                          output):
    usizes, p_offs, width, top_w = _predict_layout(params, sizes)
    return _predict_rows(out, X, indptr, indices, csr, params, top_w, w0p, usizes, p_offs,
                         act, width, U(0), n_rows, output)


# the index arrays of a dense X (unused)
_NO_INDPTR = read_only(np.zeros(1, dtype=np.int64))
_NO_INDICES = np.zeros(0, dtype=np.int32)
_NO_PANELS = {t: np.empty(0, t) for t in (np.float32, np.float64)}


def predict_proba(out, X, params, layer_sizes, act, output=SOFTMAX):
    """The outputs of the rows of X through the output function ``output`` (SOFTMAX:
    class probabilities; IDENTITY: the logits): rows split between threads (a few rows
    run on the calling thread alone), zero inputs skipped. X is dense, or sparse
    (SparseRows or a SciPy sparse matrix or array, read as compressed sparse rows, never
    made dense). Checks that X is finite on the way (see CHECKS_FINITE_INPUT). Many rows
    through a large model read a copy of the parameters on huge pages (pages.py)."""
    check_predict_shapes(sizes_key(layer_sizes), params, X, out)
    params = predict_params(params, X.shape[0])
    if isinstance(X, np.ndarray):
        x, indptr, indices, csr = read_only(X.ravel()), _NO_INDPTR, _NO_INDICES, False
    else:
        rows = as_sparse_rows(X, params.dtype)
        x, indptr, indices, csr = read_only(rows.values), read_only(rows.indptr), \
            rows.indices, True
    n_rows = np.uint64(X.shape[0])
    w0p = first_layer_panels(params, layer_sizes, X.shape[0])
    args = (out.ravel(), x, indptr, indices, csr, n_rows, params, w0p, layer_sizes, act)
    if X.shape[0] < 2 * PREDICT_CHUNK:
        bad = _predict_proba_serial(*args, int(output))
    elif len(layer_sizes) > 3:
        # the threads' matrix products each on one BLAS thread (see blas.py)
        with one_blas_thread():
            bad = _predict_proba_parallel(*args, numba.get_num_threads(), int(output))
    else:
        bad = _predict_proba_parallel(*args, numba.get_num_threads(), int(output))
    refuse_non_finite(bad)
