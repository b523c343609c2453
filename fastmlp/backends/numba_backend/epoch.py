"""The fused epoch: ``train_epoch`` runs a whole epoch of mini-batches in one compiled
call, so no Python runs between mini-batches; ``loss_and_grad`` runs one batch without
the update.

``prepare_inputs`` has turned X into compressed sparse rows once per fit, so the first
layer reads only the non-zero inputs. Each batch (``_batch``) runs three stages, each a
parallel region split into one block per thread:

1. ``hidden_forward``: the hidden layers, split by output units: a thread owns a block of
   hidden units, and its slice of W (with the Adam moments) stays in that core's cache;
   the first layer sums the rows of W picked by each row's non-zero inputs, the dense
   layers above it are matrix products (BLAS's GEMM on the thread's block, see blas.py),
   or register blocks for small ones (workspace.SMALL_DENSE_BYTES);
2. ``output_loss``: the output layer, split by rows: logits, the output function
   (softmax, logistic, identity or exp), loss, correct count and the gradient of the
   loss in one pass per row; when the first layer is wide, each thread also groups its
   rows' non-zero inputs by column (``_group_by_column``);
3. ``backward_update``: one region per weight layer above the first, split by that
   layer's input units: a thread computes the input gradient of its units from the *old*
   weights, then the weight gradient of its block, then updates it in place (Adam or
   SGD) while it is still in cache; for a dense hidden layer both products are GEMMs
   (register blocks for a small one), for the narrow output layer plain loops. The
   first layer needs no input gradient, so it is done block by block in the region of
   the layer above it: a wide block sums each row of its gradient from the inputs
   grouped by column and steps it at once (``_columns_step``), a narrow one scatters the
   gradient by rows (workspace.column_buffers says which).

No block is written by two threads, so no reduction across threads is needed. The
stages take the workspace's tuples (see workspace.Workspace): ``state`` (params, grads,
m, v), ``net`` (usizes, p_offs, a_offs, rows per buffer), ``data`` (indptr, indices,
values, and the labels, flat values and weights of a codes.Target, whose output code
goes alongside) and ``bufs`` (act_buf, delta_buf, row_loss, row_hit, pen_parts, top_w,
fwd_w, fwd_offs), and
``opt``, a codes.OptimizerStep whose fields have the parameters' dtype.

Legend: N rows in the batch, I inputs of a layer, O its outputs, K classes, I0 input
features.
"""

import numpy as np
from numba import prange

from ...threads import one_blas_thread
from ..checks import check_epoch_inputs, checked_target
from ..codes import (
    ADAM,
    CONSTANT,
    FLUSH_BELOW,
    SOFTMAX,
    OptimizerStep,
    decay_keep,
    loss_denominator,
    max_norm_factor,
    scheduled_lr,
    typed_step,
)
from ._config import U, inline, jit, pjit
from .blas import NO_TRANS, TRANS, gemm
from .inline import (
    PREFETCH_AHEAD,
    activate_f,
    adam_step_f,
    axpy_f,
    column_sums_f,
    derivative_f,
    dropout_f,
    dropout_row_key_f,
    lane_sum_f,
    output_row_f,
    prefetch_row_f,
    scale_f,
    scatter_rows_f,
    sgd_step_f,
    sumsq_f,
    ublock,
    update_f,
)
from .inputs import as_sparse_rows, prepare_inputs
from .intrinsics import (
    BLOCK_ROWS,
    add_cols_block,
    add_rows_block,
    add_rows_wide_csr,
    add_strided_cols_block,
    flush_subnormals,
    panel,
    panel_width,
    restore_fp_mode,
    sum_rows_vector,
    vector_width,
    wide_width,
)
from .workspace import Workspace, segment

# --------------------------------------------------------------------------- stage 1


@pjit
def hidden_forward(params, net, data, rows, bufs, act, n_blocks, opt):
    """Activations of the hidden layers for the rows ``rows`` of X, split by output
    units; W of layer 0 by blocks of columns, the layers above transposed (see
    workspace._to_work_layout), the small ones read from their forward copies. With
    opt.dropout, each layer's outputs then go through dropout_f before the next layer
    reads them."""
    usizes, p_offs, a_offs, b_rows = net
    act_buf, fwd_w, fwd_offs = bufs[0], bufs[6], bufs[7]
    indptr, indices, values = data[0], data[1], data[2]
    n = rows.shape[0]
    top = usizes.shape[0] - 2
    n_in0 = usizes[0]
    # every row of the batch holds all its inputs (dense tabular data): the first layer
    # goes through blocks of rows (_first_layer_dense_rows)
    complete = _rows_complete(indptr, rows, n_in0)
    for layer in range(top):
        n_i = usizes[layer]
        n_o = usizes[layer + 1]
        w_off = p_offs[layer]
        b_off = w_off + n_i * n_o
        for k in prange(n_blocks):
            mode = flush_subnormals()
            o_base, width, c0, c1 = segment(a_offs[layer], b_rows, n_o, n_blocks, k, True)
            if layer == 0 and complete:
                _first_layer_dense_rows(act_buf, o_base, width, params, b_off + c0,
                                        n_in0 * c0, values, indices, indptr, rows, act)
            elif layer == 0:
                for r in range(min(n, PREFETCH_AHEAD)):
                    prefetch_row_f(indices, values, indptr[rows[r]], indptr[rows[r] + 1])
                for r in range(n):
                    if r + PREFETCH_AHEAD < n:
                        ahead = rows[r + PREFETCH_AHEAD]
                        prefetch_row_f(indices, values, indptr[ahead], indptr[ahead + 1])
                    # bias plus the rows of this block of W picked by the row's non-zero
                    # inputs
                    o = o_base + U(r) * width
                    row = rows[r]
                    _first_layer_row_f(act_buf, o, params, b_off + c0, n_in0 * c0, width,
                                       values, indices, U(indptr[row]), U(indptr[row + 1]))
                    activate_f(act_buf, o, width, act)
            elif fwd_offs[layer] >= 0:
                _small_dense_forward(act_buf, o_base, width, c0, params, b_off, fwd_w,
                                     U(fwd_offs[layer]), a_offs[layer - 1], b_rows, n_i,
                                     n_o, n, act, n_blocks)
            else:
                _dense_forward_block(act_buf, o_base, width, c0, params, w_off, b_off,
                                     a_offs[layer - 1], b_rows, n_i, n_o, n, act, n_blocks)
            restore_fp_mode(mode)
        if opt.dropout > 0.0:
            scale = params.dtype.type(1.0 / (1.0 - opt.dropout))
            threshold = U(np.round(opt.dropout * 4294967296.0))
            for k in prange(n_blocks):
                o_base, width, c0, c1 = segment(a_offs[layer], b_rows, n_o, n_blocks, k,
                                                True)
                for r in range(n):
                    key = dropout_row_key_f(U(opt.drop_seed), U(opt.batch), U(layer), U(r))
                    dropout_f(act_buf, o_base + U(r) * width, width, key, c0, threshold,
                              scale)


@inline
def _first_layer_row_f(act_buf, o, params, b_off, w_base, width, values, indices, q0, q1):
    """act_buf[o : o + width] = b + the rows of a thread's block of the first layer's W
    (rows width apart from w_base) picked by one row's non-zero inputs (values[q] in the
    columns indices[q], q in [q0, q1)): the bias first, then the rows added in order,
    whole panels in vector registers (add_rows_wide_csr), the last columns in place. The
    same sums, in the same order, as sum_rows_f."""
    one = params.dtype.type(1)
    scale_f(act_buf, o, one, params, b_off, width)
    wide = wide_width(params)
    p0 = U(0)
    while p0 + wide <= width:
        add_rows_wide_csr(act_buf, o + p0, params, w_base + p0, width, values, U(0), indices,
                          q0, q1)
        p0 += wide
    if p0 < width:
        for q in range(q0, q1):
            axpy_f(act_buf, o + p0, values[q], params, w_base + U(indices[q]) * width + p0,
                   width - p0)


@jit
def _first_layer_dense_rows(act_buf, o_base, width, params, b_off, w_base, values, indices,
                            indptr, rows, act):
    """The first layer's outputs for a thread's block of units (act_buf from o_base, rows
    width apart; W's block row-major from w_base, rows width apart) when every row of the
    batch holds all of its inputs: the bias, then BLOCK_ROWS rows at a time through each
    whole panel of columns (add_rows_block), the columns and rows left over one row at a
    time, then the activation. The same sums in the same order as _first_layer_row_f,
    which reads one row of W per FMA where a block of rows shares it."""
    one = params.dtype.type(1)
    lanes = vector_width(params)
    n = U(rows.shape[0])
    block = U(BLOCK_ROWS)
    whole = n // block * block
    for r0 in range(U(0), whole, block):
        o = o_base + r0 * width
        for r in range(block):
            scale_f(act_buf, o + r * width, one, params, b_off, width)
        k = U(indptr[rows[r0] + 1] - indptr[rows[r0]])
        p0 = U(0)
        while p0 + lanes <= width:
            add_rows_block(act_buf, o + p0, width, params, w_base + p0, width, values,
                           U(indptr[rows[r0]]), U(indptr[rows[r0 + U(1)]]),
                           U(indptr[rows[r0 + U(2)]]), U(indptr[rows[r0 + U(3)]]), k, lanes)
            p0 += lanes
        for r in range(block):
            if p0 < width:
                row = rows[r0 + r]
                for q in range(indptr[row], indptr[row + 1]):
                    axpy_f(act_buf, o + r * width + p0, values[q], params,
                           w_base + U(indices[q]) * width + p0, width - p0)
            activate_f(act_buf, o + r * width, width, act)
    for r in range(whole, n):
        o = o_base + r * width
        row = rows[r]
        _first_layer_row_f(act_buf, o, params, b_off, w_base, width, values, indices,
                           U(indptr[row]), U(indptr[row + 1]))
        activate_f(act_buf, o, width, act)


@jit
def _dense_forward_block(act_buf, o_base, width, c0, params, w_off, b_off, i_off, b_rows,
                         n_i, n_o, n, act, n_blocks):
    """A dense layer's outputs c0:c1 for n rows (the block at o_base, rows width apart):
    one matrix product per block of input units, then the bias and the activation.

    In BLAS's column-major terms the block is Z^T (width, n) = sum over input blocks of
    W[i0:i1, c0:c1]^T A[:, i0:i1]^T: the input block A (n, wi) row-major is A^T
    column-major with leading dimension wi, and W's work block (n_o, wi) row-major is
    W[i0:i1, :] column-major with leading dimension wi."""
    one = params.dtype.type(1)
    zero = params.dtype.type(0)
    for k2 in range(n_blocks):
        i_base, wi, i0, i1 = segment(i_off, b_rows, n_i, n_blocks, k2, True)
        gemm(TRANS, NO_TRANS, width, U(n), wi, one, params, w_off + n_o * i0 + c0 * wi, wi,
             act_buf, i_base, wi, zero if k2 == 0 else one, act_buf, o_base, width)
    for r in range(n):
        o = o_base + U(r) * width
        axpy_f(act_buf, o, one, params, b_off + c0, width)
        activate_f(act_buf, o, width, act)


@inline
def _fma_row(y, yo, a, x, xo, n):
    # y[yo : yo + n] += a * x[xo : xo + n]: axpy_f's arithmetic in one plain loop, for
    # the small dense layers' leftovers, where axpy_f's loops of constant length would
    # only add to the compile
    for c in range(n):
        y[yo + c] += a * x[xo + c]


@inline
def _tail_fits(out, o_last, w, w_last, lanes):
    """Whether a partial block's whole-vector loads, the last at o_last in out and at
    w_last in w, lie inside the arrays (see intrinsics.BLOCK_ROWS)."""
    return o_last + lanes <= U(out.shape[0]) and w_last + lanes <= U(w.shape[0])


@jit
def _small_dense_forward(act_buf, o_base, width, c0, params, b_off, fwd_w, f_off, i_off,
                         b_rows, n_i, n_o, n, act, n_blocks):
    """A small dense layer's outputs c0:c1 for n rows (the block at o_base, rows width
    apart), W read from its forward copy (I, O) row-major at f_off: the bias, then the
    rows of W added in the order of the input units, BLOCK_ROWS rows of the batch at a
    time through each vector of columns, the last one partial (add_rows_block: each row
    of W loaded once for the four), the rows left over one FMA at a time, then the
    activation. Each output is one chain of FMAs over the inputs in order, whatever the
    blocks and the CPU."""
    one = params.dtype.type(1)
    lanes = vector_width(params)
    block = U(BLOCK_ROWS)
    un = U(n)
    whole = un // block * block
    for r in range(un):
        scale_f(act_buf, o_base + U(r) * width, one, params, b_off + c0, width)
    for k2 in range(n_blocks):
        i_base, wi, i0, i1 = segment(i_off, b_rows, n_i, n_blocks, k2, True)
        w_base = f_off + i0 * n_o + c0
        for r0 in range(U(0), whole, block):
            o = o_base + r0 * width
            a0 = i_base + r0 * wi
            p0 = U(0)
            while p0 < width:
                cols = min(lanes, width - p0)
                if cols < lanes and not _tail_fits(act_buf, o + U(3) * width + p0, fwd_w,
                                                   w_base + (wi - U(1)) * n_o + p0, lanes):
                    break
                add_rows_block(act_buf, o + p0, width, fwd_w, w_base + p0, n_o, act_buf, a0,
                               a0 + wi, a0 + U(2) * wi, a0 + U(3) * wi, wi, cols)
                p0 += cols
            if p0 < width:
                for r in range(block):
                    ao = a0 + r * wi
                    for i in range(wi):
                        _fma_row(act_buf, o + r * width + p0, act_buf[ao + U(i)], fwd_w,
                                 w_base + U(i) * n_o + p0, width - p0)
        for r in range(whole, un):
            o = o_base + U(r) * width
            ao = i_base + U(r) * wi
            for i in range(wi):
                _fma_row(act_buf, o, act_buf[ao + U(i)], fwd_w, w_base + U(i) * n_o, width)
    for r in range(un):
        activate_f(act_buf, o_base + U(r) * width, width, act)


# --------------------------------------------------------------------------- stage 2


@pjit
def output_loss(params, net, data, output, rows, bufs, inv, n_blocks, cols):
    """Logits, the output function ``output``, each row's (weighted) loss and hit, and the
    gradient of the batch's mean loss with respect to the logits (into delta_buf), split
    by rows; ``inv`` is 1 / (the rows, or the sum of their weights). With the column
    buffers ``cols`` in use, each thread also groups its rows' non-zero inputs by column
    for backward_update (_group_by_column)."""
    usizes, p_offs, a_offs, b_rows = net
    indptr, indices, values, labels, t_values, weights = data
    act_buf, delta_buf, row_loss, row_hit, _, top_w, _, _ = bufs
    n = rows.shape[0]
    top = usizes.shape[0] - 2
    n_in0 = usizes[0]
    n_i = usizes[top]
    n_k = usizes[top + 1]
    b_off = p_offs[top] + n_i * n_k
    k_pad = U(top_w.shape[0]) // n_i if top > 0 else U(0)
    lanes = vector_width(act_buf)
    inv_n = params.dtype.type(inv)
    weighted = weights.shape[0] > 0
    one = params.dtype.type(1)
    for k in prange(n_blocks):
        mode = flush_subnormals()
        r0, r1 = ublock(U(n), n_blocks, k)
        if cols[0].shape[0] > 0:
            _group_by_column(cols, k, n_in0, data, rows, r0, r1)
        part = panel(act_buf)
        for r in range(r0, r1):
            o = a_offs[top] + r * n_k
            scale_f(act_buf, o, one, params, b_off, n_k)
            for k2 in range(n_blocks):
                if top == 0:
                    c0, c1 = ublock(n_k, n_blocks, k2)
                    width = c1 - c0
                    row = rows[r]
                    for q in range(indptr[row], indptr[row + 1]):
                        axpy_f(act_buf, o + c0, values[q], params,
                               n_in0 * c0 + U(indices[q]) * width, width)
                else:
                    i_base, i_width, i0, i1 = segment(a_offs[top - 1], b_rows, n_i,
                                                      n_blocks, k2, True)
                    # vector sums of the padded rows of W picked by this block of hidden
                    # units: one dot product per class, each ending in a reduction across
                    # its lanes, was slower
                    io = i_base + r * i_width
                    for c0 in range(U(0), k_pad, lanes):
                        sum_rows_vector(part, U(0), top_w, i0 * k_pad + c0, k_pad, act_buf,
                                        io, None, U(0), i_width)
                        for c in range(min(lanes, n_k - c0)):
                            act_buf[o + c0 + c] += part[c]
            row = U(rows[r])
            label = U(labels[row]) if output == SOFTMAX else U(0)
            scale = inv_n * weights[row] if weighted else inv_n
            loss_r, hit = output_row_f(output, act_buf, o, delta_buf, o, n_k, label, t_values,
                                       row * n_k, scale)
            row_loss[r] = loss_r * weights[row] if weighted else loss_r
            row_hit[r] = 1 if hit else 0
        restore_fp_mode(mode)


@jit
def _group_by_column(cols, k, n_in, data, rows, r0, r1):
    """Part k of the column buffers (workspace.column_buffers): the non-zero inputs of
    the batch's rows r0:r1 grouped by input column, each column's in the order of the
    rows, by a counting sort."""
    col_ptr, col_rows, col_vals = cols
    indptr, indices, values = data[0], data[1], data[2]
    base = U(k) * (n_in + U(2))
    n_parts = U(col_ptr.shape[0]) // (n_in + U(2))
    e0 = U(k) * (U(col_rows.shape[0]) // n_parts)
    for i in range(n_in + U(2)):
        col_ptr[base + i] = 0
    # column i's count at i + 2, then the counts summed, so that col_ptr[i + 1] is where
    # column i starts; each entry placed moves it on, to where column i ends
    for r in range(r0, r1):
        row = rows[r]
        for q in range(indptr[row], indptr[row + 1]):
            col_ptr[base + U(indices[q]) + U(2)] += 1
    for i in range(U(2), n_in + U(2)):
        col_ptr[base + i] += col_ptr[base + i - U(1)]
    for r in range(r0, r1):
        row = rows[r]
        for q in range(indptr[row], indptr[row + 1]):
            at = base + U(indices[q]) + U(1)
            e = e0 + U(col_ptr[at])
            col_ptr[at] += 1
            col_rows[e] = r
            col_vals[e] = values[q]


# --------------------------------------------------------------------------- stage 3


@jit
def _step_rows_f(params, grads, m, v, s, n, alpha_n, update, opt):
    """Adds the L2 term alpha_n * w to the gradient in grads[s : s + n] and, if
    ``update``, takes the optimizer step with it in the same pass and clears grads to
    zero for the next batch (otherwise the whole gradient is left there). Returns the sum
    of squared weights before the step (0 without an L2 term)."""
    pen = sumsq_f(params, s, n) if alpha_n != params.dtype.type(0) else 0.0
    _l2_step_f(params, grads, m, v, s, n, alpha_n, update, opt)
    return pen


@jit
def _l2_step_f(params, grads, m, v, s, n, alpha_n, update, opt):
    """_step_rows_f without the sum of squares."""
    zero = params.dtype.type(0)
    one = params.dtype.type(1)
    if not update:
        for q in range(s, s + n):
            grads[q] += alpha_n * params[q]
    elif opt.solver == ADAM:
        tiny = params.dtype.type(FLUSH_BELOW)
        for q in range(s, s + n):
            w = params[q]
            params[q], m[q], v[q] = adam_step_f(w, grads[q] + alpha_n * w, m[q], v[q], opt,
                                                one, tiny)
            grads[q] = zero
    else:
        for q in range(s, s + n):
            w = params[q]
            params[q], m[q] = sgd_step_f(w, grads[q] + alpha_n * w, m[q], opt)
            grads[q] = zero


@jit
def _first_layer_block(state, n_in, n_out, d_buf, d_base, d_stride, data, rows, c0, c1,
                       alpha_n, opt, update, cols):
    """Gradient and update of the first layer's columns c0:c1, driven by the non-zero
    inputs: by columns (_columns_step) when the column buffers ``cols`` are in use and the
    step is taken, else by rows. Returns the block's sum of squared weights before the
    update."""
    # W block (n_in, c1 - c0) at params[n_in * c0], its gradient at the same place in
    # grads, all zero on entry (see _step_rows_f); b (n_out,) after all of W; the gradient
    # of row r's pre-activations c0:c1 is d_buf[d_base + r * d_stride ...]
    params, grads, m, v = state
    indptr, indices, values = data[0], data[1], data[2]
    width = c1 - c0
    w_base = n_in * c0
    n_rows = rows.shape[0]
    b_off = n_in * n_out
    column_sums_f(grads, b_off + c0, d_buf, d_base, d_stride, n_rows, width)
    if not (update and opt.lazy) and _rows_complete(indptr, rows, n_in):
        _first_layer_dense_grads(grads, w_base, width, n_in, values, indptr, rows, d_buf,
                                 d_base, d_stride)
        pen = _step_rows_f(params, grads, m, v, w_base, n_in * width, alpha_n, update, opt)
        if update:
            update_f(params, grads, m, v, b_off + c0, width, opt)
        return pen
    if update and not opt.lazy and cols[0].shape[0] > 0:
        pen = _columns_step(params, m, v, w_base, width, n_in, d_buf, d_base, d_stride, cols,
                            alpha_n, opt)
        update_f(params, grads, m, v, b_off + c0, width, opt)
        return pen
    acc = panel(grads)
    for r in range(n_rows):
        row = rows[r]
        scatter_rows_f(grads, w_base, width, values, indices, indptr[row], indptr[row + 1],
                       d_buf, d_base + U(r) * d_stride, width, acc)
    if update and opt.lazy:
        pen = _lazy_step_rows_f(params, grads, m, v, w_base, width, n_in, alpha_n, opt,
                                indptr, indices, values, rows)
    else:
        pen = _step_rows_f(params, grads, m, v, w_base, n_in * width, alpha_n, update, opt)
    if update:
        update_f(params, grads, m, v, b_off + c0, width, opt)
    return pen


@jit
def _rows_complete(indptr, rows, n_in):
    """Whether every row of the batch holds all n_in of its inputs."""
    for r in range(rows.shape[0]):
        if U(indptr[rows[r] + 1] - indptr[rows[r]]) != n_in:
            return False
    return True


@jit
def _first_layer_dense_grads(grads, w_base, width, n_in, values, indptr, rows, d_buf,
                             d_base, d_stride):
    """The gradient of a thread's block of the first layer's W (n_in rows of width at
    w_base in grads, zero on entry) when every row of the batch holds all its inputs:
    BLOCK_ROWS inputs at a time, a panel of columns at a time, summed over the batch's
    rows in registers (add_cols_block); the inputs and columns left over one FMA at a
    time. Each gradient adds the rows' terms in their order from zero, as scatter_rows_f
    (and _columns_step) add them, so the same bits; each row of the output gradient it
    loads serves four inputs."""
    n = rows.shape[0]
    starts = np.empty(n, dtype=np.uint64)
    for r in range(n):
        starts[r] = U(indptr[rows[r]])
    lanes = vector_width(grads)
    block = U(BLOCK_ROWS)
    whole = n_in // block * block
    p_end = width // lanes * lanes
    for i0 in range(U(0), whole, block):
        for p0 in range(U(0), p_end, lanes):
            add_cols_block(grads, w_base + i0 * width + p0, width, d_buf, d_base + p0,
                           d_stride, values, starts, i0, U(n), lanes)
    for i in range(n_in):
        c_from = p_end if i < whole else U(0)
        if c_from < width:
            go = w_base + U(i) * width
            for r in range(n):
                a = values[starts[r] + U(i)]
                so = d_base + U(r) * d_stride
                for c in range(c_from, width):
                    grads[go + c] += a * d_buf[so + c]


@jit
def _columns_step(params, m, v, w_base, width, n_in, d_buf, d_base, d_stride, cols, alpha_n,
                  opt):
    """The first layer's gradient by columns, and the step with it: each row of this
    block of W (an input column) gets its gradient summed in a panel of registers from
    the batch's entries of that column (workspace.column_buffers), in the order of the
    rows, and takes the step at once, so the gradient is never stored. The same sums in
    the same order as scattering it by rows (scatter_rows_f), and the same step as
    _step_rows_f, so the same bits; but each gradient row is summed in registers instead
    of loaded and stored once per entry, and the step reads three arrays instead of four.
    ``width`` is a whole number of panels. Returns the block's sum of squared weights
    before the step (0 without an L2 term), summed on the way in the lanes and order of
    sumsq_f, so the same bits as that separate pass over the block."""
    col_ptr, col_rows, col_vals = cols
    n_parts = U(col_ptr.shape[0]) // (n_in + U(2))
    cap = U(col_rows.shape[0]) // n_parts
    P = panel_width(params)
    acc = panel(params)
    squares = panel(params)
    zero = params.dtype.type(0)
    penalised = alpha_n != zero
    for c in range(P):
        squares[c] = zero
    for i in range(n_in):
        for p0 in range(U(0), width, P):
            for c in range(P):
                acc[c] = zero
            for k in range(n_parts):
                at = k * (n_in + U(2)) + U(i)
                for e in range(k * cap + U(col_ptr[at]), k * cap + U(col_ptr[at + U(1)])):
                    a = col_vals[e]
                    so = d_base + U(col_rows[e]) * d_stride + p0
                    for c in range(P):
                        acc[c] += a * d_buf[so + c]
            wo = w_base + U(i) * width + p0
            if penalised:
                for c in range(P):
                    squares[c] += params[wo + c] * params[wo + c]
            _panel_step_f(params, m, v, wo, acc, P, alpha_n, opt)
    return float(lane_sum_f(squares, P)) if penalised else 0.0


@inline
def _panel_step_f(params, m, v, wo, g_sum, P, alpha_n, opt):
    """The step of _l2_step_f on params[wo : wo + P], the gradient sums in g_sum."""
    one = params.dtype.type(1)
    if opt.solver == ADAM:
        tiny = params.dtype.type(FLUSH_BELOW)
        for c in range(P):
            q = wo + c
            w = params[q]
            params[q], m[q], v[q] = adam_step_f(w, g_sum[c] + alpha_n * w, m[q], v[q], opt,
                                                one, tiny)
    else:
        for c in range(P):
            q = wo + c
            w = params[q]
            params[q], m[q] = sgd_step_f(w, g_sum[c] + alpha_n * w, m[q], opt)


@jit
def _lazy_step_rows_f(params, grads, m, v, w_base, width, n_in, alpha_n, opt, indptr,
                      indices, values, rows):
    """The lazy update of a first-layer block (OptimizerStep.lazy): only the rows of W
    (each ``width`` weights from w_base) whose input is non-zero in some row of the batch
    take the step, with their L2 term. Every thread finds those inputs itself, in its own
    marks, so the blocks need nothing from each other. Returns the block's sum of squared
    weights before the step (of every row: the loss is the same as without lazy)."""
    pen = sumsq_f(params, w_base, n_in * width) if alpha_n != 0 else 0.0
    seen = np.zeros(n_in, np.uint8)
    for r in range(rows.shape[0]):
        row = rows[r]
        for q in range(indptr[row], indptr[row + 1]):
            i = indices[q]
            if values[q] != 0 and seen[i] == 0:
                seen[i] = 1
                _l2_step_f(params, grads, m, v, w_base + U(i) * width, width, alpha_n, True,
                           opt)
    return pen


@jit
def _input_gradient_f(delta_buf, act_buf, params, wt_base, i_base, wi, n, o_off, b_rows, n_o,
                      n_blocks, out_blocked, act, drop):
    """delta of one block of a layer's input units (wi units at i_base of the blocked
    buffer, W transposed at wt_base) from the layer's output delta at o_off, through
    the weights before the update, times the activation's derivative."""
    zero = params.dtype.type(0)
    for r in range(n):
        dio = i_base + U(r) * wi
        for i in range(wi):
            delta_buf[dio + i] = zero
        for k2 in range(n_blocks):
            d_base, d_stride, c0, c1 = segment(o_off, b_rows, n_o, n_blocks, k2, out_blocked)
            dro = d_base + U(r) * d_stride
            for c in range(c0, c1):
                axpy_f(delta_buf, dio, delta_buf[dro + (c - c0)], params, wt_base + c * wi,
                       wi)
        derivative_f(delta_buf, dio, act_buf, dio, wi, act, drop)


@jit
def _weight_gradient_f(grads, params, delta_buf, act_buf, wt_base, i_base, wi, n, o_off,
                       b_rows, n_o, n_blocks, out_blocked, alpha_n):
    """Gradient of one block of W (transposed, at wt_base): the L2 term plus the sum over
    rows of the block's inputs times the layer's output delta."""
    scale_f(grads, wt_base, alpha_n, params, wt_base, n_o * wi)
    for k2 in range(n_blocks):
        d_base, d_stride, c0, c1 = segment(o_off, b_rows, n_o, n_blocks, k2, out_blocked)
        for c in range(c0, c1):
            go = wt_base + c * wi
            for r in range(n):
                axpy_f(grads, go, delta_buf[d_base + U(r) * d_stride + (c - c0)], act_buf,
                       i_base + U(r) * wi, wi)


@jit
def _dense_gradients(grads, params, delta_buf, act_buf, wt_base, i_base, wi, n, o_off,
                     b_rows, n_o, n_blocks, alpha_n, act, drop):
    """For one block of a dense hidden layer's input units (wi units at i_base, W's work
    block (n_o, wi) at wt_base, read as W[i0:i1, :] column-major with leading dimension
    wi; see _dense_forward_block): their delta from the layer's output delta (blocked)
    through the weights before the update, then the block's weight gradient, the L2 term
    alpha_n * W plus A[:, i0:i1]^T times the output delta, each as one matrix product per
    block of output units."""
    one = params.dtype.type(1)
    zero = params.dtype.type(0)
    un = U(n)
    for k2 in range(n_blocks):
        d_base, width, c0, c1 = segment(o_off, b_rows, n_o, n_blocks, k2, True)
        # dA^T (wi, n) += W[i0:i1, c0:c1] (wi, width) dZ^T (width, n)
        gemm(NO_TRANS, NO_TRANS, wi, un, width, one, params, wt_base + c0 * wi, wi,
             delta_buf, d_base, width, zero if k2 == 0 else one, delta_buf, i_base, wi)
    for r in range(n):
        dio = i_base + U(r) * wi
        derivative_f(delta_buf, dio, act_buf, dio, wi, act, drop)
    scale_f(grads, wt_base, alpha_n, params, wt_base, n_o * wi)
    for k2 in range(n_blocks):
        d_base, width, c0, c1 = segment(o_off, b_rows, n_o, n_blocks, k2, True)
        # G[i0:i1, c0:c1] (wi, width) += A^T (wi, n) dZ (n, width)
        gemm(NO_TRANS, TRANS, wi, width, un, one, act_buf, i_base, wi, delta_buf, d_base,
             width, one, grads, wt_base + c0 * wi, wi)


@jit
def _small_dense_gradients(grads, params, delta_buf, act_buf, wt_base, i_base, wi, n, o_off,
                           b_rows, n_o, n_blocks, alpha_n, act, drop):
    """_dense_gradients for a small dense layer, through register blocks instead of
    matrix products. The input gradient of a row adds the output units' terms in their
    order from zero, BLOCK_ROWS rows at a time through each vector of the block's input
    units, the last one partial (add_rows_block over W's work block, whose rows are the
    output units); the weight gradient adds the rows' terms in their order to
    alpha_n * W, BLOCK_ROWS output units at a time (add_strided_cols_block: each row of
    the block's inputs loaded once for the four). What is left over goes one FMA at a
    time, in the same order, so every value is one chain of FMAs whatever the blocks and
    the CPU."""
    zero = params.dtype.type(0)
    lanes = vector_width(params)
    block = U(BLOCK_ROWS)
    un = U(n)
    whole = un // block * block
    for r in range(un):
        dio = i_base + U(r) * wi
        for i in range(wi):
            delta_buf[dio + U(i)] = zero
    for k2 in range(n_blocks):
        d_base, width, c0, c1 = segment(o_off, b_rows, n_o, n_blocks, k2, True)
        w_base = wt_base + c0 * wi
        for r0 in range(U(0), whole, block):
            o = i_base + r0 * wi
            d0 = d_base + r0 * width
            p0 = U(0)
            while p0 < wi:
                cols = min(lanes, wi - p0)
                if cols < lanes and not _tail_fits(delta_buf, o + U(3) * wi + p0, params,
                                                   w_base + (width - U(1)) * wi + p0, lanes):
                    break
                add_rows_block(delta_buf, o + p0, wi, params, w_base + p0, wi, delta_buf, d0,
                               d0 + width, d0 + U(2) * width, d0 + U(3) * width, width, cols)
                p0 += cols
            if p0 < wi:
                for r in range(block):
                    for c in range(width):
                        _fma_row(delta_buf, o + r * wi + p0, delta_buf[d0 + r * width + U(c)],
                                 params, w_base + U(c) * wi + p0, wi - p0)
        for r in range(whole, un):
            for c in range(width):
                _fma_row(delta_buf, i_base + U(r) * wi,
                         delta_buf[d_base + U(r) * width + U(c)], params, w_base + U(c) * wi,
                         wi)
    for r in range(un):
        dio = i_base + U(r) * wi
        derivative_f(delta_buf, dio, act_buf, dio, wi, act, drop)
    scale_f(grads, wt_base, alpha_n, params, wt_base, n_o * wi)
    for k2 in range(n_blocks):
        d_base, width, c0, c1 = segment(o_off, b_rows, n_o, n_blocks, k2, True)
        c_whole = width // block * block
        for cc in range(U(0), c_whole, block):
            go = wt_base + (c0 + cc) * wi
            p0 = U(0)
            while p0 < wi:
                cols = min(lanes, wi - p0)
                if cols < lanes and not _tail_fits(grads, go + U(3) * wi + p0, act_buf,
                                                   i_base + (un - U(1)) * wi + p0, lanes):
                    break
                add_strided_cols_block(grads, go + p0, wi, act_buf, i_base + p0, wi,
                                       delta_buf, d_base + cc, width, un, cols)
                p0 += cols
            if p0 < wi:
                for c in range(block):
                    for r in range(un):
                        _fma_row(grads, go + c * wi + p0,
                                 delta_buf[d_base + U(r) * width + cc + c], act_buf,
                                 i_base + U(r) * wi + p0, wi - p0)
        for c in range(c_whole, width):
            go = wt_base + (c0 + U(c)) * wi
            for r in range(un):
                _fma_row(grads, go, delta_buf[d_base + U(r) * width + U(c)], act_buf,
                         i_base + U(r) * wi, wi)


@inline
def _forward_copy_f(params, wt_base, wi, i0, n_o, is_top, top_w, k_pad, f_off, fwd_w):
    """The forward copy of one thread's block of a layer above the first (W transposed,
    (n_o, wi) at wt_base), after its weights changed: the top layer's into top_w, a small
    dense layer's into fwd_w; other layers have none."""
    if is_top:
        for i in range(wi):
            for c in range(n_o):
                top_w[(i0 + i) * k_pad + c] = params[wt_base + c * wi + i]
    elif f_off >= 0:
        for i in range(wi):
            fo = U(f_off) + (i0 + U(i)) * n_o
            for c in range(n_o):
                fwd_w[fo + U(c)] = params[wt_base + U(c) * wi + U(i)]


# max_norm's factor, compiled from the one definition in codes.py
_max_norm_factor = jit(max_norm_factor)


@pjit
def max_norm_stage(params, net, bufs, max_norm, n_blocks):
    """Every unit whose incoming weights are longer than max_norm scaled back to it
    (codes.OptimizerStep.max_norm), after the step, in the work layout (workspace.py):
    the first layer's units are the columns of its blocks; above it, unit o's weights
    are row o of each block of input units. Each unit's squares are summed in float64 in
    the order of its inputs, whatever the blocks, so the bits do not depend on the
    thread count; the forward copies follow."""
    usizes, p_offs, _, _ = net
    top_w, fwd_w, fwd_offs = bufs[5], bufs[6], bufs[7]
    top = usizes.shape[0] - 2
    k_pad = U(top_w.shape[0]) // usizes[top] if top > 0 else U(0)
    dt = params.dtype.type
    for layer in range(top + 1):
        n_i = usizes[layer]
        n_o = usizes[layer + 1]
        w_off = p_offs[layer]
        if layer == 0:
            for k in prange(n_blocks):
                c0, c1 = ublock(n_o, n_blocks, k)
                width = c1 - c0
                base = w_off + n_i * c0
                sums = np.zeros(width)
                for i in range(n_i):
                    for c in range(width):
                        x = float(params[base + i * width + c])
                        sums[c] += x * x
                for c in range(width):
                    sums[c] = _max_norm_factor(sums[c], max_norm)
                for i in range(n_i):
                    for c in range(width):
                        params[base + i * width + c] *= dt(sums[c])
            continue
        for o in prange(n_o):
            total = 0.0
            for k in range(n_blocks):
                i0, i1 = ublock(n_i, n_blocks, k)
                row = w_off + n_o * i0 + U(o) * (i1 - i0)
                for i in range(i1 - i0):
                    x = float(params[row + i])
                    total += x * x
            factor = _max_norm_factor(total, max_norm)
            if factor != 1.0:
                for k in range(n_blocks):
                    i0, i1 = ublock(n_i, n_blocks, k)
                    row = w_off + n_o * i0 + U(o) * (i1 - i0)
                    for i in range(i1 - i0):
                        params[row + i] *= dt(factor)
        f_off = fwd_offs[layer]
        for k in prange(n_blocks):
            i0, i1 = ublock(n_i, n_blocks, k)
            _forward_copy_f(params, w_off + n_o * i0, i1 - i0, i0, n_o, layer == top, top_w,
                            k_pad, f_off, fwd_w)


@pjit
def backward_update(state, net, data, rows, bufs, act, alpha, denom, opt, update, n_blocks,
                    cols):
    """Backward through every layer and, if ``update``, the optimizer step, top down; the
    blocks' sums of squared weights (for the L2 term of the loss) go to pen_parts. The L2
    term's gradient is alpha / denom * W (denom: the rows, or the sum of their weights;
    none when that is 0)."""
    params, grads, m, v = state
    usizes, p_offs, a_offs, b_rows = net
    act_buf, delta_buf, _, _, pen_parts, top_w, fwd_w, fwd_offs = bufs
    n = rows.shape[0]
    top = usizes.shape[0] - 2
    n_in0 = usizes[0]
    k_pad = U(top_w.shape[0]) // usizes[top] if top > 0 else U(0)
    alpha_n = params.dtype.type(alpha / denom if denom > 0.0 else 0.0)
    for k in range(n_blocks):
        pen_parts[k] = 0.0
    for layer in range(top, 0, -1):
        n_i = usizes[layer]
        n_o = usizes[layer + 1]
        w_off = p_offs[layer]
        b_off = w_off + n_i * n_o
        out_blocked = layer < top
        f_off = fwd_offs[layer]
        for k in prange(n_blocks):
            mode = flush_subnormals()
            i_base, wi, i0, i1 = segment(a_offs[layer - 1], b_rows, n_i, n_blocks, k, True)
            wt_base = w_off + n_o * i0
            if f_off >= 0:
                # a small dense hidden layer: register blocks
                _small_dense_gradients(grads, params, delta_buf, act_buf, wt_base, i_base, wi,
                                       n, a_offs[layer], b_rows, n_o, n_blocks, alpha_n, act,
                                       opt.dropout)
            elif out_blocked:
                # a dense hidden layer: matrix products
                _dense_gradients(grads, params, delta_buf, act_buf, wt_base, i_base, wi, n,
                                 a_offs[layer], b_rows, n_o, n_blocks, alpha_n, act,
                                 opt.dropout)
            else:
                # the output layer, too narrow for matrix products to pay
                _input_gradient_f(delta_buf, act_buf, params, wt_base, i_base, wi, n,
                                  a_offs[layer], b_rows, n_o, n_blocks, out_blocked, act,
                                  opt.dropout)
                # weight gradient of this block, then its update while it is in cache
                _weight_gradient_f(grads, params, delta_buf, act_buf, wt_base, i_base, wi,
                                   n, a_offs[layer], b_rows, n_o, n_blocks, out_blocked,
                                   alpha_n)
            pen = 0.0
            if alpha != 0.0:
                pen += sumsq_f(params, wt_base, n_o * wi)
            if update:
                update_f(params, grads, m, v, wt_base, n_o * wi, opt)
                _forward_copy_f(params, wt_base, wi, i0, n_o, layer == top, top_w, k_pad,
                                f_off, fwd_w)
            # this block's share of the layer's biases
            d_base, d_stride, c0, c1 = segment(a_offs[layer], b_rows, n_o, n_blocks, k,
                                               out_blocked)
            column_sums_f(grads, b_off + c0, delta_buf, d_base, d_stride, n, c1 - c0)
            if update:
                update_f(params, grads, m, v, b_off + c0, c1 - c0, opt)
            if layer == 1:
                pen += _first_layer_block(state, n_in0, n_i, delta_buf, i_base, wi, data,
                                          rows, i0, i1, alpha_n, opt, update, cols)
            pen_parts[k] += pen
            restore_fp_mode(mode)
    if top == 0:
        _only_layer_update(state, net, data, rows, delta_buf, pen_parts, alpha_n, opt, update,
                           n_blocks, cols)


@pjit
def _only_layer_update(state, net, data, rows, delta_buf, pen_parts, alpha_n, opt, update,
                       n_blocks, cols):
    """Without hidden layers: the gradient and update of the only weight layer, split by
    output columns."""
    usizes, _, a_offs, _ = net
    n_in0 = usizes[0]
    n_k = usizes[1]
    for k in prange(n_blocks):
        mode = flush_subnormals()
        c0, c1 = ublock(n_k, n_blocks, k)
        pen_parts[k] += _first_layer_block(state, n_in0, n_k, delta_buf, a_offs[0] + c0, n_k,
                                           data, rows, c0, c1, alpha_n, opt, update, cols)
        restore_fp_mode(mode)


# --------------------------------------------------------------------------- the batch


@jit
def _batch(state, net, data, output, rows, bufs, act, alpha, opt, update, n_blocks, cols):
    """Forward, loss, backward and (if update) optimizer step for the rows ``rows`` of X.
    Returns (sum of the (weighted) row losses + alpha/2 ||W||^2, number of correct
    predictions)."""
    weights = data[5]
    if weights.shape[0] == 0:
        denom = float(rows.shape[0])
    else:
        denom = 0.0
        for r in range(rows.shape[0]):
            denom += weights[rows[r]]
    hidden_forward(state[0], net, data, rows, bufs, act, n_blocks, opt)
    output_loss(state[0], net, data, output, rows, bufs, 1.0 / denom if denom > 0.0 else 0.0,
                n_blocks, cols)
    backward_update(state, net, data, rows, bufs, act, alpha, denom, opt, update, n_blocks,
                    cols)
    if update and opt.max_norm > 0.0:
        max_norm_stage(state[0], net, bufs, opt.max_norm, n_blocks)
    row_loss, row_hit, pen_parts = bufs[2], bufs[3], bufs[4]
    loss = 0.0
    hits = 0
    for r in range(rows.shape[0]):
        loss += row_loss[r]
        hits += row_hit[r]
    if alpha != 0.0:
        penalty = 0.0
        for k in range(n_blocks):
            penalty += pen_parts[k]
        loss += 0.5 * alpha * penalty
    return loss, hits


# the schedule's rate, compiled from the one definition in codes.py
_scheduled_lr = jit(scheduled_lr)
_decay_keep = jit(decay_keep)


@jit
def _epoch(state, net, data, output, order, batch_size, bufs, act, alpha, opt, t, update,
           n_blocks, loss_start, cols):
    """Every mini-batch of ``order``; returns (``loss_start`` plus the summed losses, hits,
    Adam step count).
    Without ``update``, one batch of all of ``order`` leaves its gradient in grads
    (loss_and_grad; one compiled entry point for both saves compiling the batch twice)."""
    n = order.shape[0]
    loss = loss_start
    hits = 0
    dt = state[0].dtype.type
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        lr = _scheduled_lr(opt.lr, opt.schedule, opt.seen + start, opt.horizon)
        lr_t = lr
        if opt.solver == ADAM:
            t += 1
            lr_t = lr * np.sqrt(1.0 - opt.beta2**t) / (1.0 - opt.beta1**t)
        step = OptimizerStep(opt.solver, dt(lr), dt(opt.momentum), opt.nesterov,
                             dt(opt.beta1), dt(opt.beta2), dt(opt.eps), dt(lr_t), opt.schedule,
                             opt.seen, opt.horizon, opt.lazy, dt(opt.weight_decay),
                             dt(_decay_keep(lr, opt.weight_decay)), opt.max_norm,
                             opt.dropout, opt.drop_seed, opt.seen + start)
        batch_loss, batch_hits = _batch(state, net, data, output, order[start:stop], bufs, act,
                                        alpha, step, update, n_blocks, cols)
        loss += batch_loss
        hits += batch_hits
    return loss, hits, t


def _data(sparse_x, target):
    """The compiled stages' ``data``: the sparse rows of X and the target's arrays (the
    values flat). One tuple of arrays only: a parallel region does not take a tuple that
    also holds a number."""
    return (sparse_x.indptr, sparse_x.indices, sparse_x.values, target.labels,
            target.values.reshape(-1), target.weights)


def train_epoch(params, grads, m, v, layer_sizes, act, data, y, order, batch_size, alpha, opt,
                t, loss=0.0):
    """One epoch of mini-batch training in a single compiled call (see the module notes).

    Same contract and results as the NumPy backend's ``train_epoch``; ``data`` is what
    ``prepare_inputs(X)`` returned (a plain X is accepted and converted, at a cost).
    """
    data = as_sparse_rows(data)
    target = check_epoch_inputs(layer_sizes, params, grads, m, v, data, y, order)
    # the lazy step sums the first layer's gradient by rows
    ws = Workspace(layer_sizes, min(int(batch_size), order.shape[0]), params, m, v, grads,
                   None if opt.lazy else data)
    opt = typed_step(opt)
    try:
        with one_blas_thread():
            loss, hits, t = _epoch(ws.state(), ws.net(), _data(data, target),
                                   int(target.output), order, int(batch_size),
                                   ws.buffers(), int(act), float(alpha), opt, int(t), True,
                                   ws.n_blocks, float(loss), ws.columns())
    finally:
        # grads is scratch for the caller after an epoch (the contract promises nothing
        # of it): a large model's arrays go back through it
        ws.write_back()
    return float(loss), int(hits), int(t)


def loss_and_grad(grads, params, layer_sizes, act, X, y, alpha):
    """Gradient of the batch objective (the (weighted) mean loss + the L2 term) into grads,
    as the NumPy backend's; returns the objective's value."""
    n = X.shape[0]
    target = checked_target(y, n, int(layer_sizes[-1]), params.dtype)
    empty = params[:0]
    ws = Workspace(layer_sizes, n, params, empty, empty)
    data = prepare_inputs(X)
    p = ws.work[0]
    with one_blas_thread():
        loss, _, _ = _epoch((p, ws.grads, p, p), ws.net(), _data(data, target),
                            int(target.output), np.arange(n, dtype=np.int64), max(n, 1),
                            ws.buffers(), int(act), float(alpha), _NO_STEP, 0, False,
                            ws.n_blocks, 0.0, ws.columns())
    ws.write_back(grads)
    return loss / loss_denominator(target, n)


# the optimizer record of loss_and_grad, which takes no step
_NO_STEP = OptimizerStep(0, 0.0, 0.0, False, 0.0, 0.0, 0.0, 0.0, CONSTANT, 0.0, 1.0, False)
