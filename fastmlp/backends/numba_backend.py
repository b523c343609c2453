"""The Numba backend: fused, parallel kernels and a compiled whole-epoch training loop.

Legend for shape comments: N = rows in the batch, I = inputs of a layer, O = outputs of a
layer, K = classes, P = length of the flat parameter vector, I0 = input features.

How an epoch runs (``train_epoch``): ``prepare_inputs`` has turned X into compressed
sparse rows once per fit (MNIST is 19 % non-zero, so the first layer does a fifth of the
dense arithmetic). One compiled call loops over the mini-batches; each batch runs three
parallel stages, each split into one block per thread:

1. hidden layers forward, split by output units: a thread owns a block of hidden units,
   and its slice of W (with the Adam moments) stays in that core's cache;
2. output layer, split by rows: logits, softmax, loss, correct count and the gradient of
   the loss in one pass per row;
3. backward, one region per weight layer above the first, split by that layer's input
   units: a thread computes the input gradient of its units from the *old* weights, then
   the weight gradient of its block, then updates it in place (Adam or SGD) while it is
   still in cache. The first layer needs no input gradient, so it is done block by block
   in the region of the layer above it.

No block is written by two threads, so no reduction across threads is needed. Nothing is
allocated per mini-batch: buffers are allocated once per call. During the epoch the
parameters live in a work layout (see _to_work_layout) that keeps each thread's blocks
contiguous; it is converted back when the call returns.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numba
import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _numba_config as cfg
from ._common import (
    ADAM,
    LOGISTIC,
    RELU,
    SGD,
    TANH,
    VECTOR_BYTES,
    SparseRows,
    check_epoch_inputs,
    check_index_array,
    check_shapes,
    padded_top,
    refuse_non_finite,
    sparse_rows,
)

NAME = "numba"
# predict_proba raises ValueError for NaN or infinity in X, checked in the same pass that
# gathers each row's non-zero inputs; the estimator then skips its own pass over X
CHECKS_FINITE_INPUT = True
# A block of units handed to one thread starts on a multiple of this many elements (64
# bytes of float32), so no cache line is written by two threads.
ALIGN = 16
PREDICT_CHUNK = 64

_FLAGS = dict(cache=cfg.CACHE, fastmath=cfg.FASTMATH, error_model=cfg.ERROR_MODEL, nogil=True)
_jit = njit(**_FLAGS)
# Small helpers are inlined at Numba's level: as separate functions every call costs a
# call plus atomic reference-count updates on each array view, which in the inner loops
# cost more than the arithmetic (and the atomics contend between threads).
_inline = njit(**_FLAGS, inline="always")
_pjit = njit(**_FLAGS, parallel=cfg.PARALLEL)


def _scalar(like, value):
    """value as a NumPy scalar of like's dtype: keeps float32 kernels in float32."""
    return like.dtype.type(value)


@contextmanager
def thread_limit(n):
    """Numba's thread count set to n (capped at the pool size), restored on exit."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def threading_layer() -> str:
    """The threading layer Numba uses (launching a tiny parallel loop if none ran yet)."""
    try:
        return numba.threading_layer()
    except ValueError:
        _touch(np.zeros(2))
        return numba.threading_layer()


def cache_location() -> str:
    """Where compiled kernels are cached: NUMBA_CACHE_DIR if set, else __pycache__ beside
    this module (or Numba's per-user cache folder when that is not writable)."""
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    return here if os.access(os.path.dirname(here), os.W_OK) else "Numba's per-user cache"


@_pjit
def _touch(a):
    for i in prange(a.shape[0]):
        a[i] += 0.0


# --------------------------------------------------------------------------- helpers
#
# The kernels work on flat 1-D arrays with unsigned (uint64) offsets, and creates no
# array views inside its parallel loops. Both choices were measured: a signed index makes
# Numba emit a wrap-around check that stops vectorisation, and every view inside a prange
# body costs atomic reference-count updates on the parent array, which the two threads then
# fight over (two threads ran slower than one). U(x) converts to uint64; never mix it with
# signed integers in index arithmetic (Numba would promote the sum to float64).

U = np.uint64


@_inline
def _ublock(d, n_blocks, k):
    """[start, stop) as uint64 of block k when d (uint64) items make n_blocks blocks."""
    nb = U(n_blocks)
    align = U(ALIGN)
    chunk = (d + nb - U(1)) // nb
    chunk = ((chunk + align - U(1)) // align) * align
    start = min(U(k) * chunk, d)
    return start, min(start + chunk, d)


@_inline
def _axpy_f(y, yo, a, x, xo, n):
    # y[yo : yo + n] += a * x[xo : xo + n]
    # The widths a thread's block usually has, and 10 classes, get a loop of constant
    # length: LLVM unrolls it and drops the per-call overlap checks, which cost more than
    # the few vector FMAs themselves (measured 2.4x on the first layer at width 64).
    if n == U(64):
        for c in range(U(64)):
            y[yo + c] += a * x[xo + c]
    elif n == U(128):
        for c in range(U(128)):
            y[yo + c] += a * x[xo + c]
    elif n == U(32):
        for c in range(U(32)):
            y[yo + c] += a * x[xo + c]
    elif n == U(10):
        # the output layer of a 10-class problem (digits, Fashion-MNIST, CIFAR-10)
        for c in range(U(10)):
            y[yo + c] += a * x[xo + c]
    else:
        for c in range(n):
            y[yo + c] += a * x[xo + c]


# A panel: PANEL_LANES values of a row, summed in registers. Adding rows of a matrix
# into a row of an array makes LLVM load and store that row around every addition,
# because it cannot prove the two arrays apart; a buffer on the stack cannot alias
# anything, so LLVM keeps it in vector registers (measured 2x faster per non-zero input,
# both for the forward pass and for the first layer's gradient): 64 float32 take eight of
# the 16 AVX2 registers. The lane count is the same for float64 (sixteen registers, some
# spilled): with 32 lanes LLVM unrolled the 32-step loops in full and then left them
# scalar, which made float64 epochs 1.9x slower than plain loops (measured).
PANEL_LANES = 64

if numba.config.DISABLE_JIT:

    def _panel(like):
        return np.empty(PANEL_LANES, dtype=like.dtype)

    def _panel_width(like):
        return U(PANEL_LANES)

else:

    @intrinsic
    def _panel_buffer(typingctx, like):
        # a stack buffer of PANEL_LANES values of like's dtype, allocated once per function
        dtype = like.dtype

        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_data_type(dtype),
                                       size=PANEL_LANES)

        return types.CPointer(dtype)(like), codegen

    @intrinsic
    def _panel_width(typingctx, like):
        # PANEL_LANES, as a constant LLVM can unroll loops by
        def codegen(context, builder, signature, args):
            return context.get_constant(types.uint64, PANEL_LANES)

        return types.uint64(like), codegen

    @_inline
    def _panel(like):
        # inlined, so the buffer belongs to the caller's frame
        return carray(_panel_buffer(like), _panel_width(like))


# Vector sums of rows: out[oo : oo + L] = sum over q in [q0, q1) of
# a_q * w[w_base + j * w_stride : ... + L], where j = idx[q] (or q when idx is None),
# a_q = vals[vo + j] for an "indirect" kernel and vals[vo + q] otherwise, and L values
# fill n_bytes. They are written in LLVM IR with explicit vector types: a row of so few
# values gives LLVM's vectorisers nothing to work with, and the same loop in Python-level
# Numba code came out as scalar FMAs with the partial sums spilled to the stack (measured
# 5x slower). The sum runs in n_sums interleaved partial sums, so that consecutive FMAs
# do not wait for each other, added pairwise at the end in a fixed order. No bounds are
# checked: the caller makes sure every row it names holds L values.
VECTOR_SUMS = 4


def _vector_sum_kernel(n_bytes, n_sums, indirect):
    """A vector sum of rows (see above) as a Numba intrinsic, or as plain Python with the
    JIT off."""
    if numba.config.DISABLE_JIT:

        def sum_rows(out, oo, w, w_base, w_stride, vals, vo, idx, q0, q1):
            lanes = n_bytes // w.dtype.itemsize
            acc = np.zeros((n_sums, lanes), dtype=w.dtype)
            n_main = q0 + (q1 - q0) // n_sums * n_sums
            for q in range(q0, q1):
                j = q if idx is None else idx[q]
                off = int(w_base + U(j) * w_stride)
                part = (q - q0) % n_sums if q < n_main else 0
                acc[part] += vals[int(vo) + int(j if indirect else q)] * w[off : off + lanes]
            while acc.shape[0] > 1:
                acc = acc[0::2] + acc[1::2]
            out[oo : oo + lanes] = acc[0]

        return sum_rows

    @intrinsic
    def sum_rows(typingctx, out, oo, w, w_base, w_stride, vals, vo, idx, q0, q1):
        dense = isinstance(idx, types.NoneType)
        lanes = n_bytes // w.dtype.bitwidth * 8

        def codegen(context, builder, signature, args):
            out_v, oo_v, w_v, base_v, stride_v, vals_v, vo_v, idx_v, q0_v, q1_v = args
            out_t, _, w_t, _, _, vals_t, _, idx_t = signature.args[:8]
            ftype = context.get_data_type(w_t.dtype)
            vtype = ir.VectorType(ftype, lanes)
            i32, i64 = ir.IntType(32), ir.IntType(64)

            def data(ty, value):
                return context.make_array(ty)(context, builder, value).data

            out_p, w_p, vals_p = data(out_t, out_v), data(w_t, w_v), data(vals_t, vals_v)
            idx_p = None if dense else data(idx_t, idx_v)
            zeros = ir.Constant(vtype, [ir.Constant(ftype, 0.0)] * lanes)
            sums = [cgutils.alloca_once_value(builder, zeros) for _ in range(n_sums)]
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vtype, [vtype] * 3),
                f"llvm.fma.v{lanes}f{w_t.dtype.bitwidth}")
            splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

            def step(q, acc):
                j = q if dense else builder.sext(builder.load(builder.gep(idx_p, [q])), i64)
                a = builder.load(builder.gep(vals_p, [builder.add(vo_v, j if indirect else q)]))
                row = builder.gep(w_p, [builder.add(base_v, builder.mul(j, stride_v))])
                wv = builder.load(builder.bitcast(row, vtype.as_pointer()),
                                  align=w_t.dtype.bitwidth // 8)
                av = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vtype, None), a, ir.Constant(i32, 0)),
                    ir.Constant(vtype, None), splat)
                builder.store(builder.call(fma, [av, wv, builder.load(acc)]), acc)

            n_parts = ir.Constant(i64, n_sums)
            n_main = builder.udiv(builder.sub(q1_v, q0_v), n_parts)
            with cgutils.for_range(builder, n_main) as loop:
                q = builder.add(q0_v, builder.mul(loop.index, n_parts))
                for part in range(n_sums):
                    step(builder.add(q, ir.Constant(i64, part)), sums[part])
            rest = builder.add(q0_v, builder.mul(n_main, n_parts))
            with cgutils.for_range(builder, builder.sub(q1_v, rest)) as loop:
                step(builder.add(rest, loop.index), sums[0])
            parts = [builder.load(acc) for acc in sums]
            while len(parts) > 1:
                parts = [builder.fadd(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
            dst = builder.gep(out_p, [oo_v])
            builder.store(parts[0], builder.bitcast(dst, vtype.as_pointer()),
                          align=w_t.dtype.bitwidth // 8)
            return context.get_dummy_value()

        u64 = types.uint64
        return types.void(out, u64, w, u64, u64, vals, u64, idx, u64, u64), codegen

    return sum_rows


# the output layer's rows, padded to VECTOR_BYTES (see _common.padded_top)
_sum_rows_v = _vector_sum_kernel(VECTOR_BYTES, VECTOR_SUMS, False)
# predict's first layer: 64 float32 (32 float64) columns of the rows picked by a row's
# non-zero inputs, their values read from X, in eight vector registers; one partial sum
# per column suffices, as the eight vectors are independent
WIDE_BYTES = 256
_sum_rows_wide = _vector_sum_kernel(WIDE_BYTES, 1, True)

def _lane_count(n_bytes):
    """How many values of like's dtype fill n_bytes, as a constant LLVM can unroll by."""
    if numba.config.DISABLE_JIT:
        return lambda like: U(n_bytes // like.dtype.itemsize)

    @intrinsic
    def lanes(typingctx, like):
        count = n_bytes // like.dtype.bitwidth * 8

        def codegen(context, builder, signature, args):
            return context.get_constant(types.uint64, count)

        return types.uint64(like), codegen

    return lanes


_vector_width = _lane_count(VECTOR_BYTES)
_wide_width = _lane_count(WIDE_BYTES)


@_inline
def _sum_rows_f(out, oo, scale, init, io, vals, vo, by_idx, idx, q0, q1, src, s_base,
                s_stride, width, acc):
    """out[oo : oo + width] = scale * init[io : io + width]
    + sum over q in [q0, q1) of a_q * src[s_base + idx[q] * s_stride : ... + width],
    added in that order, where a_q = vals[vo + idx[q]] if by_idx, else vals[q]; panel by
    panel in acc (see _panel), the remainder in place."""
    P = _panel_width(out)
    p0 = U(0)
    while p0 + P <= width:
        for c in range(P):
            acc[c] = scale * init[io + p0 + c]
        for q in range(q0, q1):
            j = U(idx[q])
            a = vals[vo + j] if by_idx else vals[q]
            so = s_base + j * s_stride + p0
            for c in range(P):
                acc[c] += a * src[so + c]
        for c in range(P):
            out[oo + p0 + c] = acc[c]
        p0 += P
    if p0 < width:
        rest = width - p0
        _scale_f(out, oo + p0, scale, init, io + p0, rest)
        for q in range(q0, q1):
            j = U(idx[q])
            _axpy_f(out, oo + p0, vals[vo + j] if by_idx else vals[q], src,
                    s_base + j * s_stride + p0, rest)


@_inline
def _scatter_rows_f(dst, d_base, d_stride, vals, idx, q0, q1, src, so, width, acc):
    """dst[d_base + idx[q] * d_stride : ... + width] += vals[q] * src[so : so + width] for
    q in [q0, q1): src is read into the panel acc once (see _panel) instead of once per
    q. (Prefetching the rows of dst a few places ahead was measured: slower.)"""
    P = _panel_width(dst)
    p0 = U(0)
    while p0 + P <= width:
        for c in range(P):
            acc[c] = src[so + p0 + c]
        for q in range(q0, q1):
            a = vals[q]
            do = d_base + U(idx[q]) * d_stride + p0
            for c in range(P):
                dst[do + c] += a * acc[c]
        p0 += P
    if p0 < width:
        for q in range(q0, q1):
            _axpy_f(dst, d_base + U(idx[q]) * d_stride + p0, vals[q], src, so + p0,
                    width - p0)


@_inline
def _scale_f(y, yo, a, x, xo, n):
    # y[yo : yo + n] = a * x[xo : xo + n]
    for c in range(n):
        y[yo + c] = a * x[xo + c]


@_inline
def _dot_f(x, xo, y, yo, n):
    # sum of x[xo:xo+n] * y[yo:yo+n] in one partial sum per lane of a panel (see
    # _panel), the lanes then added pairwise in a fixed order: as fast as a reordered
    # sum, and the same bits however it is compiled. (With eight partial sums in scalars
    # LLVM did not vectorise at all: the output layer's dot products took 16 % of an
    # epoch.)
    acc = _panel(x)
    P = _panel_width(x)
    for c in range(P):
        acc[c] = x.dtype.type(0)
    n_p = n - n % P
    for j in range(U(0), n_p, P):
        for c in range(P):
            acc[c] += x[xo + j + c] * y[yo + j + c]
    for c in range(n - n_p):
        acc[c] += x[xo + n_p + c] * y[yo + n_p + c]
    half = P // U(2)
    while half > U(0):
        for c in range(half):
            acc[c] += acc[c + half]
        half //= U(2)
    return acc[0]


@_jit
def _sumsq_f(x, xo, n):
    return float(_dot_f(x, xo, x, xo, n))


@_inline
def _activate_f(z, zo, n, act):
    zero = z.dtype.type(0)
    one = z.dtype.type(1)
    if act == RELU:
        # a select and a store for every element, not a branch: the sign of a hidden
        # unit is a coin toss, and mispredicted branches cost more than the stores.
        # (NaN stays NaN, as the divergence check needs.)
        for c in range(n):
            v = z[zo + c]
            z[zo + c] = zero if v < zero else v
    elif act == TANH:
        for c in range(n):
            z[zo + c] = np.tanh(z[zo + c])
    elif act == LOGISTIC:
        for c in range(n):
            z[zo + c] = one / (one + np.exp(-z[zo + c]))


@_inline
def _act_derivative_f(d, do, a, ao, n, act):
    # d[do:do+n] *= act'(z), through the output a[ao:ao+n] = act(z)
    zero = a.dtype.type(0)
    one = a.dtype.type(1)
    if act == RELU:
        for c in range(n):
            # a select, not a branch (see _activate_f)
            d[do + c] = zero if a[ao + c] <= zero else d[do + c]
    elif act == TANH:
        for c in range(n):
            d[do + c] *= one - a[ao + c] * a[ao + c]
    elif act == LOGISTIC:
        for c in range(n):
            d[do + c] *= a[ao + c] * (one - a[ao + c])


@_jit
def _update_f(params, grads, m, v, s, n, solver, lr, momentum, nesterov, beta1, beta2, eps,
              lr_t):
    # one optimizer step on params[s : s + n] (flat layout shared by grads, m, v)
    if solver == ADAM:
        one = params.dtype.type(1)
        for q in range(s, s + n):
            g = grads[q]
            mq = beta1 * m[q] + (one - beta1) * g
            vq = beta2 * v[q] + (one - beta2) * g * g
            m[q] = mq
            v[q] = vq
            params[q] -= lr_t * mq / (np.sqrt(vq) + eps)
    elif nesterov:
        for q in range(s, s + n):
            g = grads[q]
            vel = momentum * m[q] - lr * g
            m[q] = vel
            params[q] += momentum * vel - lr * g
    else:
        for q in range(s, s + n):
            vel = momentum * m[q] - lr * grads[q]
            m[q] = vel
            params[q] += vel


@_jit
def _column_sums_f(out, oo, delta, do, stride, n_rows, n):
    # out[oo:oo+n] = sum over rows r of delta[do + r*stride : ... + n]
    zero = out.dtype.type(0)
    for c in range(n):
        out[oo + c] = zero
    for r in range(n_rows):
        _axpy_f(out, oo, out.dtype.type(1), delta, do + U(r) * stride, n)


@_inline
def _softmax_f(out, oo, src, so, k, label):
    """out[oo:oo+k] = softmax(src[so:so+k]) (may be the same place); returns the row's
    cross-entropy for ``label`` and whether the arg-max is ``label``."""
    best = U(0)
    top = src[so]
    for c in range(U(1), k):
        if src[so + c] > top:
            top = src[so + c]
            best = c
    target = float(src[so + label] - top)
    total = 0.0
    for c in range(k):
        e = np.exp(src[so + c] - top)
        out[oo + c] = e
        total += e
    inv_total = out.dtype.type(1.0 / total)
    for c in range(k):
        out[oo + c] *= inv_total
    return np.log(total) - target, best == label


# --------------------------------------------------------------------------- kernels
#
# The public kernels take 2-D arrays and hand flat views (ravel of C-contiguous arrays,
# no copy) with their shapes to the compiled functions, which split rows or units into
# one block per thread.


@_pjit
def _linear_forward(out, x, w, b, n, n_in, n_out, act, n_blocks):
    # x (N, I), w (I, O), b (O,), out (N, O), all flat
    # each row as in predict: its non-zero inputs' places found without a branch, then
    # the picked rows of W summed panel by panel in registers
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for k in prange(n_blocks):
        r0, r1 = _ublock(n, n_blocks, k)
        nz_idx = np.empty(n_in, dtype=np.int32)
        acc = _panel(out)
        for r in range(r0, r1):
            xo = r * n_in
            cnt = U(0)
            for j in range(n_in):
                nz_idx[cnt] = j
                cnt += U(1) if x[xo + j] != zero else U(0)
            o = r * n_out
            _sum_rows_f(out, o, one, b, U(0), x, xo, True, nz_idx, U(0), cnt, w, U(0), n_out,
                        n_out, acc)
            _activate_f(out, o, n_out, act)


# Narrow layers go to BLAS instead: adding a row of W into fewer than a vector's worth of
# outputs per input is bound by the latency of reloading what was just stored (a
# 64x128x10 product took 36 us that way, 5 us through BLAS). The elementwise passes after
# the product stay serial: a parallel region next to BLAS's own threads made both wait.
NARROW = 32


@_jit
def _linear_forward_blas(out, x, w, b, act):
    np.dot(x, w, out)
    flat = out.reshape(out.size)
    n_out = U(out.shape[1])
    for r in range(out.shape[0]):
        o = U(r) * n_out
        _axpy_f(flat, o, out.dtype.type(1), b, U(0), n_out)
        _activate_f(flat, o, n_out, act)


@_jit
def _linear_backward_blas(dw, db, dx, delta, w, x, alpha_n):
    np.dot(x.T, delta, dw)
    n_out = U(dw.shape[1])
    if alpha_n != 0:
        flat_dw = dw.reshape(dw.size)
        flat_w = w.reshape(w.size)
        _axpy_f(flat_dw, U(0), alpha_n, flat_w, U(0), U(dw.size))
    _column_sums_f(db, U(0), delta.reshape(delta.size), U(0), n_out, U(delta.shape[0]), n_out)
    if dx.size:
        np.dot(delta, w.T, dx)


def _dims(*values):
    return tuple(np.uint64(v) for v in values)


def linear_forward(out, x, w, b, act):
    """out = act(x @ w + b): rows split between threads, zero inputs skipped; narrow
    layers through BLAS."""
    if w.shape[1] < NARROW and x.shape[0] and x.shape[1]:
        _linear_forward_blas(out, x, w, b, act)
        return
    _linear_forward(out.ravel(), x.ravel(), w.ravel(), b, *_dims(*x.shape, w.shape[1]), act,
                    numba.get_num_threads())


@_pjit
def _activation_backward(delta, a, size, act, n_blocks):
    # delta (N * O,), a (N * O,)
    for k in prange(n_blocks):
        s, e = _ublock(size, n_blocks, k)
        _act_derivative_f(delta, s, a, s, e - s, act)


def activation_backward(delta, a, act):
    """delta *= act'(z), expressed through the activation's output a = act(z)."""
    _activation_backward(delta.ravel(), a.ravel(), np.uint64(delta.size), act,
                         numba.get_num_threads())


def relu_backward(delta, a):
    """delta *= (a > 0)."""
    activation_backward(delta, a, RELU)


@_pjit
def _softmax_xent_forward(probs, logits, y, n, k):
    # logits (N, K), probs (N, K), y (N,), flat
    loss = 0.0
    correct = 0
    for r in prange(n):
        o = U(r) * k
        row_loss, hit = _softmax_f(probs, o, logits, o, k, U(y[r]))
        loss += row_loss
        correct += 1 if hit else 0
    return loss, correct


def softmax_xent_forward(probs, logits, y):
    """Softmax probabilities, summed cross-entropy and count of correct predictions.

    ``probs`` may be the same array as ``logits``."""
    check_index_array("y", y, logits.shape[1], length=logits.shape[0])
    loss, correct = _softmax_xent_forward(probs.ravel(), logits.ravel(), y, logits.shape[0],
                                          np.uint64(logits.shape[1]))
    return float(loss), int(correct)


@_pjit
def _softmax_xent_backward(delta, probs, y, n, k):
    # probs (N, K), y (N,), delta (N, K), flat
    inv_n = probs.dtype.type(1.0 / n)
    for r in prange(n):
        o = U(r) * k
        _scale_f(delta, o, inv_n, probs, o, k)
        delta[o + U(y[r])] -= inv_n


def softmax_xent_backward(delta, probs, y):
    """delta = (probs - onehot(y)) / N."""
    check_index_array("y", y, probs.shape[1], length=probs.shape[0])
    _softmax_xent_backward(delta.ravel(), probs.ravel(), y, probs.shape[0],
                           np.uint64(probs.shape[1]))


@_pjit
def _linear_backward(dw, db, dx, delta, x, w, alpha_n, n, n_in, n_out, n_blocks):
    # delta (N, O), x (N, I), w (I, O), dw (I, O), db (O,), dx (N, I) or empty; all flat
    zero = x.dtype.type(0)
    for k in prange(n_blocks):
        i0, i1 = _ublock(n_in, n_blocks, k)
        for i in range(i0, i1):
            g = i * n_out
            _scale_f(dw, g, alpha_n, w, g, n_out)
            for r in range(n):
                xv = x[r * n_in + i]
                if xv != zero:
                    _axpy_f(dw, g, xv, delta, r * n_out, n_out)
        o0, o1 = _ublock(n_out, n_blocks, k)
        _column_sums_f(db, o0, delta, o0, n_out, n, o1 - o0)
        if dx.shape[0]:
            r0, r1 = _ublock(n, n_blocks, k)
            for r in range(r0, r1):
                for i in range(n_in):
                    dx[r * n_in + i] = _dot_f(delta, r * n_out, w, i * n_out, n_out)


def linear_backward(dw, db, dx, delta, x, w, alpha_n):
    """dw = x.T @ delta + alpha_n * w, db = sum(delta), dx = delta @ w.T (skipped if empty);
    narrow layers through BLAS."""
    if w.shape[1] < NARROW and x.shape[0] and x.shape[1]:
        _linear_backward_blas(dw, db, dx, delta, w, x, _scalar(w, alpha_n))
        return
    _linear_backward(dw.ravel(), db, dx.ravel(), delta.ravel(), x.ravel(), w.ravel(),
                     _scalar(w, alpha_n), *_dims(*x.shape, w.shape[1]), numba.get_num_threads())


@_pjit
def _optimizer_update(param, grad, m, v, solver, lr, momentum, nesterov, beta1, beta2, eps,
                      lr_t, n_blocks):
    for k in prange(n_blocks):
        s, e = _ublock(U(param.shape[0]), n_blocks, k)
        _update_f(param, grad, m, v, s, e - s, solver, lr, momentum, nesterov, beta1, beta2,
                  eps, lr_t)


def sgd_update(param, grad, velocity, lr, momentum, nesterov):
    """SGD with (Nesterov) momentum, as in scikit-learn's SGDOptimizer."""
    lr, momentum = _scalar(param, lr), _scalar(param, momentum)
    _optimizer_update(param, grad, velocity, velocity, SGD, lr, momentum, bool(nesterov), lr,
                      lr, lr, lr, numba.get_num_threads())


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """Adam step with the bias correction already folded into ``lr_t``."""
    c = param
    lr_t = _scalar(c, lr_t)
    _optimizer_update(param, grad, m, v, ADAM, lr_t, lr_t, False, _scalar(c, beta1),
                      _scalar(c, beta2), _scalar(c, eps), lr_t, numba.get_num_threads())


# --------------------------------------------------------------------------- fused batch


@_inline
def _segment(a_off, rows, width, n_blocks, k, blocked):
    """Where block k of a layer's units lives in a buffer: (base, row stride, c0, c1).

    Blocked buffers keep each thread's units together, rows of its block one after the
    other: unit c of row r is at base + r * stride + (c - c0). A plain buffer (the output
    layer's) is one block holding whole rows.
    """
    if blocked:
        c0, c1 = _ublock(width, n_blocks, k)
        return a_off + rows * c0, c1 - c0, c0, c1
    if k == 0:
        return a_off, width, U(0), width
    return a_off, width, width, width


@_inline
def _move_block(dst, src, w_off, n_o, outer, b0, b1, work_base, transposed, forward):
    """Move one thread's block of a weight matrix W (I, O) at w_off between the plain
    layout and its work block (outer, b1 - b0), row-major at work_base. Not transposed:
    rows a of W, columns b0:b1; transposed: columns a of W, rows b0:b1."""
    width = b1 - b0
    for a in range(outer):
        for b in range(b0, b1):
            plain = w_off + (b * n_o + a if transposed else a * n_o + b)
            work = work_base + a * width + (b - b0)
            if forward:
                dst[work] = src[plain]
            else:
                dst[plain] = src[work]


@_jit
def _to_work_layout(dst, src, usizes, p_offs, n_blocks, forward):
    """Copy src (the flat layout) into dst (the work layout), or back if not forward.

    The work layout keeps each thread's share of every weight matrix contiguous, so no
    two threads write neighbouring cache lines: with the plain row-major layout, the
    hardware prefetcher of one core kept pulling the lines of the other core's columns
    and two threads ran 5x slower than one (measured). The first layer W (I, O) is
    stored by blocks of output columns, each block (I, width) row-major; every layer
    above stores W transposed, (O, I), by blocks of input units, each block (O, width).
    Biases keep their place. Thread blocks come from _ublock, so the layout depends on
    n_blocks.
    """
    if src.shape[0] == 0:
        return
    n_layers = usizes.shape[0] - 1
    for layer in range(n_layers):
        n_i = usizes[layer]
        n_o = usizes[layer + 1]
        w_off = p_offs[layer]
        for k in range(n_blocks):
            if layer == 0:
                c0, c1 = _ublock(n_o, n_blocks, k)
                _move_block(dst, src, w_off, n_o, n_i, c0, c1, w_off + n_i * c0, False,
                            forward)
            else:
                i0, i1 = _ublock(n_i, n_blocks, k)
                _move_block(dst, src, w_off, n_o, n_o, i0, i1, w_off + n_o * i0, True,
                            forward)
        b_off = w_off + n_i * n_o
        for c in range(n_o):
            dst[b_off + c] = src[b_off + c]


@_inline
def _step_rows_f(params, grads, m, v, s, n, alpha_n, update, solver, lr, momentum, nesterov,
                 beta1, beta2, eps, lr_t):
    """Adds the L2 term alpha_n * w to the gradient in grads[s : s + n] and, if
    ``update``, takes the optimizer step with it in the same pass and clears grads to
    zero for the next batch (otherwise the whole gradient is left there). Returns the sum
    of squared weights before the step (0 without an L2 term)."""
    zero = params.dtype.type(0)
    one = params.dtype.type(1)
    pen = _sumsq_f(params, s, n) if alpha_n != zero else 0.0
    if not update:
        for q in range(s, s + n):
            grads[q] += alpha_n * params[q]
    elif solver == ADAM:
        for q in range(s, s + n):
            w = params[q]
            g = grads[q] + alpha_n * w
            mq = beta1 * m[q] + (one - beta1) * g
            vq = beta2 * v[q] + (one - beta2) * g * g
            m[q] = mq
            v[q] = vq
            params[q] = w - lr_t * mq / (np.sqrt(vq) + eps)
            grads[q] = zero
    else:
        for q in range(s, s + n):
            w = params[q]
            g = grads[q] + alpha_n * w
            vel = momentum * m[q] - lr * g
            m[q] = vel
            params[q] = w + (momentum * vel - lr * g if nesterov else vel)
            grads[q] = zero
    return pen


@_inline
def _first_layer_block(params, grads, m, v, n_in, n_out, d_buf, d_base, d_stride, indptr,
                       indices, values, rows, c0, c1, alpha_n, solver, lr, momentum,
                       nesterov, beta1, beta2, eps, lr_t, update):
    """Gradient and update of the first layer's columns c0:c1, driven by the non-zero
    inputs. Returns the block's sum of squared weights before the update."""
    # W block (n_in, c1 - c0) at params[n_in * c0], its gradient at the same place in
    # grads, all zero on entry (see _step_rows_f); b (n_out,) after all of W; the gradient
    # of row r's pre-activations c0:c1 is d_buf[d_base + r * d_stride ...]
    width = c1 - c0
    w_base = n_in * c0
    n_rows = rows.shape[0]
    acc = _panel(grads)
    for r in range(n_rows):
        row = rows[r]
        _scatter_rows_f(grads, w_base, width, values, indices, indptr[row], indptr[row + 1],
                        d_buf, d_base + U(r) * d_stride, width, acc)
    b_off = n_in * n_out
    _column_sums_f(grads, b_off + c0, d_buf, d_base, d_stride, n_rows, width)
    pen = _step_rows_f(params, grads, m, v, w_base, n_in * width, alpha_n, update, solver,
                       lr, momentum, nesterov, beta1, beta2, eps, lr_t)
    if update:
        _update_f(params, grads, m, v, b_off + c0, width, solver, lr, momentum, nesterov,
                  beta1, beta2, eps, lr_t)
    return pen


@_pjit
def _batch(params, grads, m, v, usizes, p_offs, a_offs, indptr, indices, values, y, rows,
           act_buf, delta_buf, row_loss, row_hit, pen_parts, top_w, act, alpha, solver, lr,
           momentum, nesterov, beta1, beta2, eps, lr_t, update, n_blocks, stages=3):
    """Forward, loss, backward and (if update) optimizer step for the rows ``rows`` of X.

    ``stages`` < 3 stops early (0: at once, 1: after the hidden layers, 2: after the
    output layer); it exists for benchmarks/profile_epoch.py, which times each stage.

    params, grads, m and v are in the work layout (see _to_work_layout); hidden layers'
    activations and gradients are in blocked buffers (see _segment).
    Returns (sum of row losses + alpha/2 ||W||^2, number of correct predictions).
    """
    # indptr/indices/values: X as compressed sparse rows (see prepare_inputs); usizes (L+1,)
    # uint64 layer widths; p_offs (L,) start of each layer in params; a_offs (L,) start of
    # each layer's outputs in act_buf/delta_buf, which hold B rows per layer; top_w the
    # top layer's W (I, Kp) in the plain layout with padded columns, kept in step with
    # its work-layout copy (empty without hidden layers).
    n = rows.shape[0]
    n_layers = usizes.shape[0] - 1
    top = n_layers - 1
    n_in0 = usizes[0]
    b_rows = U(row_loss.shape[0])
    alpha_n = params.dtype.type(alpha / n)
    inv_n = params.dtype.type(1.0 / n)
    zero = params.dtype.type(0)
    one = params.dtype.type(1)

    if stages < 1:
        return 0.0, 0

    # 1. hidden layers forward, split by output units
    for layer in range(top):
        n_i = usizes[layer]
        n_o = usizes[layer + 1]
        w_off = p_offs[layer]
        b_off = w_off + n_i * n_o
        for k in prange(n_blocks):
            o_base, width, c0, c1 = _segment(a_offs[layer], b_rows, n_o, n_blocks, k, True)
            acc = _panel(act_buf)
            for r in range(n):
                o = o_base + U(r) * width
                if layer == 0:
                    # bias plus the rows of this block of W picked by the row's non-zero
                    # inputs
                    row = rows[r]
                    _sum_rows_f(act_buf, o, one, params, b_off + c0, values, U(0), False,
                                indices, indptr[row], indptr[row + 1], params, n_in0 * c0,
                                width, width, acc)
                else:
                    _scale_f(act_buf, o, one, params, b_off + c0, width)
                    # W stored transposed by input blocks: dot products, block by block
                    for k2 in range(n_blocks):
                        i_base, i_width, i0, i1 = _segment(a_offs[layer - 1], b_rows, n_i,
                                                           n_blocks, k2, True)
                        wt_base = w_off + n_o * i0
                        io = i_base + U(r) * i_width
                        for c in range(c0, c1):
                            act_buf[o + (c - c0)] += _dot_f(act_buf, io, params,
                                                            wt_base + c * i_width, i_width)
                _activate_f(act_buf, o, width, act)

    if stages < 2:
        return 0.0, 0

    # 2. output layer, split by rows: logits, softmax, loss, accuracy and its gradient
    n_i = usizes[top]
    n_k = usizes[n_layers]
    w_off = p_offs[top]
    b_off = w_off + n_i * n_k
    k_pad = U(top_w.shape[0]) // n_i if top > 0 else U(0)
    lanes = _vector_width(act_buf)
    for k in prange(n_blocks):
        r0, r1 = _ublock(U(n), n_blocks, k)
        part = _panel(act_buf)
        for r in range(r0, r1):
            o = a_offs[top] + r * n_k
            _scale_f(act_buf, o, one, params, b_off, n_k)
            for k2 in range(n_blocks):
                if top == 0:
                    c0, c1 = _ublock(n_k, n_blocks, k2)
                    width = c1 - c0
                    row = rows[r]
                    for q in range(indptr[row], indptr[row + 1]):
                        _axpy_f(act_buf, o + c0, values[q], params,
                                n_in0 * c0 + U(indices[q]) * width, width)
                else:
                    i_base, i_width, i0, i1 = _segment(a_offs[top - 1], b_rows, n_i,
                                                       n_blocks, k2, True)
                    # vector sums of the padded rows of W picked by this block of hidden
                    # units: with one dot product per class, each ending in a reduction
                    # across its lanes, the MNIST epoch took 10 % longer (measured)
                    io = i_base + r * i_width
                    for c0 in range(U(0), k_pad, lanes):
                        _sum_rows_v(part, U(0), top_w, i0 * k_pad + c0, k_pad, act_buf, io,
                                    None, U(0), i_width)
                        for c in range(min(lanes, n_k - c0)):
                            act_buf[o + c0 + c] += part[c]
            label = U(y[rows[r]])
            loss_r, hit = _softmax_f(act_buf, o, act_buf, o, n_k, label)
            _scale_f(delta_buf, o, inv_n, act_buf, o, n_k)
            delta_buf[o + label] -= inv_n
            row_loss[r] = loss_r
            row_hit[r] = 1 if hit else 0

    if stages < 3:
        return 0.0, 0

    # 3. backward and update: one region per weight layer above the first, split by that
    #    layer's input units; the first layer rides along in the region of the layer above
    for k in range(n_blocks):
        pen_parts[k] = 0.0
    for layer in range(top, 0, -1):
        n_i = usizes[layer]
        n_o = usizes[layer + 1]
        w_off = p_offs[layer]
        b_off = w_off + n_i * n_o
        out_blocked = layer < top
        for k in prange(n_blocks):
            i_base, wi, i0, i1 = _segment(a_offs[layer - 1], b_rows, n_i, n_blocks, k, True)
            wt_base = w_off + n_o * i0
            # input gradient of this block of units, from the weights before the update
            for r in range(n):
                dio = i_base + U(r) * wi
                for i in range(wi):
                    delta_buf[dio + i] = zero
                for k2 in range(n_blocks):
                    d_base, d_stride, c0, c1 = _segment(a_offs[layer], b_rows, n_o, n_blocks,
                                                        k2, out_blocked)
                    dro = d_base + U(r) * d_stride
                    for c in range(c0, c1):
                        _axpy_f(delta_buf, dio, delta_buf[dro + (c - c0)], params,
                                wt_base + c * wi, wi)
                _act_derivative_f(delta_buf, dio, act_buf, dio, wi, act)
            # weight gradient of this block, then its update while it is in cache
            _scale_f(grads, wt_base, alpha_n, params, wt_base, n_o * wi)
            for k2 in range(n_blocks):
                d_base, d_stride, c0, c1 = _segment(a_offs[layer], b_rows, n_o, n_blocks, k2,
                                                    out_blocked)
                for c in range(c0, c1):
                    go = wt_base + c * wi
                    for r in range(n):
                        _axpy_f(grads, go, delta_buf[d_base + U(r) * d_stride + (c - c0)],
                                act_buf, i_base + U(r) * wi, wi)
            pen = 0.0
            if alpha != 0.0:
                pen += _sumsq_f(params, wt_base, n_o * wi)
            if update:
                _update_f(params, grads, m, v, wt_base, n_o * wi, solver, lr, momentum,
                          nesterov, beta1, beta2, eps, lr_t)
                if layer == top:
                    # the forward copy of this block (see top_w)
                    for i in range(wi):
                        for c in range(n_o):
                            top_w[(i0 + i) * k_pad + c] = params[wt_base + c * wi + i]
            # this block's share of the layer's biases
            d_base, d_stride, c0, c1 = _segment(a_offs[layer], b_rows, n_o, n_blocks, k,
                                                out_blocked)
            _column_sums_f(grads, b_off + c0, delta_buf, d_base, d_stride, n, c1 - c0)
            if update:
                _update_f(params, grads, m, v, b_off + c0, c1 - c0, solver, lr, momentum,
                          nesterov, beta1, beta2, eps, lr_t)
            if layer == 1:
                pen += _first_layer_block(params, grads, m, v, n_in0, n_i, delta_buf, i_base,
                                          wi, indptr, indices, values, rows, i0, i1,
                                          alpha_n, solver, lr, momentum, nesterov, beta1,
                                          beta2, eps, lr_t, update)
            pen_parts[k] += pen

    if top == 0:
        # no hidden layer: the only weight layer, split by output columns
        for k in prange(n_blocks):
            c0, c1 = _ublock(n_k, n_blocks, k)
            pen_parts[k] += _first_layer_block(
                params, grads, m, v, n_in0, n_k, delta_buf, a_offs[0] + c0, n_k, indptr,
                indices, values, rows, c0, c1, alpha_n, solver, lr, momentum, nesterov,
                beta1, beta2, eps, lr_t, update)

    loss = 0.0
    hits = 0
    for r in range(n):
        loss += row_loss[r]
        hits += row_hit[r]
    if alpha != 0.0:
        penalty = 0.0
        for k in range(n_blocks):
            penalty += pen_parts[k]
        loss += 0.5 * alpha * penalty
    return loss, hits


# --------------------------------------------------------------------------- epoch, predict


def _aligned_empty(n, dtype, align=64):
    """A 1-D array whose data starts on an ``align``-byte boundary (a cache line).

    Blocks owned by different threads start on multiples of ALIGN elements; with the base
    aligned too, no cache line is written by two threads (measured: unaligned, two threads
    ran slower than one).
    """
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + n * dtype.itemsize].view(dtype)


class _Workspace:
    """Buffers for batches of up to ``rows`` rows, allocated once per call, and the work
    layout copies of the parameters, gradients and optimizer moments."""

    def __init__(self, sizes, rows, params, m, v):
        sizes = np.asarray(sizes, dtype=np.int64)
        widths = sizes[1:]
        dtype = params.dtype
        self.usizes = sizes.astype(np.uint64)
        self.p_offs = np.concatenate(([0], np.cumsum(sizes[:-1] * widths + widths)[:-1]))
        self.p_offs = self.p_offs.astype(np.uint64)
        self.a_offs = (rows * np.concatenate(([0], np.cumsum(widths)[:-1]))).astype(np.uint64)
        total = rows * int(widths.sum())
        self.act_buf = _aligned_empty(total, dtype)
        self.delta_buf = _aligned_empty(total, dtype)
        self.row_loss = np.empty(rows, dtype=np.float64)
        self.row_hit = np.empty(rows, dtype=np.int64)
        self.n_blocks = max(1, numba.get_num_threads())
        self.pen_parts = np.empty(self.n_blocks, dtype=np.float64)
        self.originals = (params, m, v)
        self.work = tuple(_aligned_empty(a.shape[0], dtype) for a in (params, m, v))
        for dst, src in zip(self.work, self.originals):
            _to_work_layout(dst, src, self.usizes, self.p_offs, self.n_blocks, True)
        # the first layer's gradient is summed into zeros, and each update clears it again
        self.grads = _aligned_empty(params.shape[0], dtype)
        self.grads[:] = 0
        # aligned, so that no cache line holds rows that two threads refresh
        self.top_w = np.empty(0, dtype)
        if len(sizes) > 2:
            top = padded_top(params, sizes)
            self.top_w = _aligned_empty(top.shape[0], dtype)
            self.top_w[:] = top

    def layout(self):
        return (self.usizes, self.p_offs, self.a_offs)

    def buffers(self):
        return (self.act_buf, self.delta_buf, self.row_loss, self.row_hit, self.pen_parts,
                self.top_w)

    def write_back(self, grads=None):
        """Copy the work-layout parameters (and moments, and optionally grads) back."""
        for dst, src in zip(self.originals, self.work):
            _to_work_layout(dst, src, self.usizes, self.p_offs, self.n_blocks, False)
        if grads is not None:
            _to_work_layout(grads, self.grads, self.usizes, self.p_offs, self.n_blocks, False)


@_pjit
def _count_row_nonzeros(counts, X):
    # X (N, I0), counts (N,)
    zero = X.dtype.type(0)
    for r in prange(X.shape[0]):
        c = 0
        for j in range(X.shape[1]):
            c += 1 if X[r, j] != zero else 0
        counts[r] = c


@_pjit
def _fill_sparse_rows(indices, values, indptr, X):
    # Without a branch: every input is written at the row's next free place, which only
    # advances past a non-zero (the branch, taken at random on image data, made this
    # pass 20x slower than counting). Once the row's places are filled the rest of the
    # row is skipped, so nothing is written into the next row's places.
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


def prepare_inputs(X):
    """X as SparseRows: the first layer of every batch then reads only the non-zero
    inputs (19 % of MNIST's pixels) without scanning each row again every epoch."""
    return sparse_rows(X, _count_row_nonzeros, _fill_sparse_rows)


def _sparse(data):
    return data if isinstance(data, SparseRows) else prepare_inputs(data)


@_jit
def _epoch(params, grads, m, v, usizes, p_offs, a_offs, indptr, indices, values, y, order,
           batch_size, act_buf, delta_buf, row_loss, row_hit, pen_parts, top_w, act, alpha,
           solver, lr, momentum, nesterov, beta1, beta2, eps, t, n_blocks):
    n = order.shape[0]
    loss = 0.0
    hits = 0
    dt = params.dtype.type
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        lr_t = lr
        if solver == ADAM:
            t += 1
            lr_t = lr * np.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        batch_loss, batch_hits = _batch(
            params, grads, m, v, usizes, p_offs, a_offs, indptr, indices, values, y,
            order[start:stop], act_buf, delta_buf, row_loss, row_hit, pen_parts, top_w, act,
            alpha, solver, dt(lr), dt(momentum), nesterov, dt(beta1), dt(beta2), dt(eps),
            dt(lr_t), True, n_blocks)
        loss += batch_loss
        hits += batch_hits
    return loss, hits, t


def train_epoch(params, grads, m, v, layer_sizes, act, data, y, order, batch_size, alpha,
                solver, lr, momentum, nesterov, beta1, beta2, eps, t):
    """One epoch of mini-batch training in a single compiled call (see the module notes).

    Same contract and results as the NumPy backend's ``train_epoch``; ``data`` is what
    ``prepare_inputs(X)`` returned (a plain X is accepted and converted, at a cost).
    """
    data = _sparse(data)
    check_epoch_inputs(layer_sizes, params, grads, m, v, data, y, order)
    ws = _Workspace(layer_sizes, min(int(batch_size), order.shape[0]), params, m, v)
    p, mw, vw = ws.work
    try:
        loss, hits, t = _epoch(p, ws.grads, mw, vw, *ws.layout(), data.indptr, data.indices,
                               data.values, y, order,
                               int(batch_size), *ws.buffers(), int(act), float(alpha),
                               int(solver), float(lr), float(momentum), bool(nesterov),
                               float(beta1), float(beta2), float(eps), int(t), ws.n_blocks)
    finally:
        ws.write_back(grads)
    return float(loss), int(hits), int(t)


def loss_and_grad(grads, params, layer_sizes, act, X, y, alpha):
    """Gradient of the batch objective (mean cross-entropy + alpha/2N ||W||^2) into grads.

    Returns the objective's value.
    """
    n = X.shape[0]
    check_index_array("y", y, int(layer_sizes[-1]), length=n)
    empty = params[:0]
    ws = _Workspace(layer_sizes, n, params, empty, empty)
    rows = np.arange(n, dtype=np.int64)
    z = _scalar(params, 0)
    p = ws.work[0]
    data = prepare_inputs(X)
    loss, _ = _batch(p, ws.grads, p, p, *ws.layout(), data.indptr, data.indices, data.values,
                     y, rows, *ws.buffers(),
                     int(act), float(alpha), ADAM, z, z, False, z, z, z, z, False, ws.n_blocks)
    ws.write_back(grads)
    return loss / n


@_inline
def _predict_rows(out, X, params, top_w, usizes, p_offs, act, width, r0, r1, softmax):
    # rows r0:r1 of X (N, I0) -> out (N, K), both flat; params in the flat layout;
    # top_w the top layer's W (I, Kp), its columns padded with zeros to a multiple of
    # the vector width (see _sum_rows_v).
    # Returns how many rows hold NaN or infinity (their outputs are left unwritten).
    n_layers = usizes.shape[0] - 1
    top = n_layers - 1
    n_k = usizes[n_layers]
    n_in0 = usizes[0]
    zero = params.dtype.type(0)
    cur = np.empty(width, dtype=out.dtype)
    nxt = np.empty(width, dtype=out.dtype)
    nz_idx = np.empty(n_in0, dtype=np.int32)
    nz_val = np.empty(n_in0, dtype=out.dtype)
    k_pad = U(top_w.shape[0]) // usizes[top]
    logits = np.empty(k_pad, dtype=out.dtype)
    lanes = _vector_width(out)
    wide = _wide_width(out)
    acc = _panel(out)
    n_bad = 0
    for r in range(r0, r1):
        # where the row's non-zero inputs are, found without a branch (an unsigned count:
        # a signed index costs a wrap-around check on every store); the values are read
        # from X through these places, while the row is in cache (storing them as well
        # cost 4 % of a one-thread predict)
        xo = r * n_in0
        cnt = U(0)
        for j in range(n_in0):
            nz_idx[cnt] = j
            cnt += U(1) if X[xo + j] != zero else U(0)
        # NaN and infinity are non-zero, so checking the non-zero values checks the row
        # (v - v is 0 exactly for finite v)
        finite = True
        for t in range(cnt):
            xv = X[xo + U(nz_idx[t])]
            finite &= xv - xv == zero
        if not finite:
            n_bad += 1
            continue
        # hidden layers: W (I, O) row by row, skipping zero inputs
        for layer in range(top):
            n_i = usizes[layer]
            n_o = usizes[layer + 1]
            w_off = p_offs[layer]
            if layer == 0:
                # whole panels in vector registers, then the bias; the last columns
                # (bias included) through the register panel
                p0 = U(0)
                while p0 + wide <= n_o:
                    _sum_rows_wide(nxt, p0, params, w_off + p0, n_o, X, xo, nz_idx, U(0),
                                   cnt)
                    p0 += wide
                for c in range(p0):
                    nxt[c] += params[w_off + n_i * n_o + c]
                if p0 < n_o:
                    _sum_rows_f(nxt, p0, params.dtype.type(1), params,
                                w_off + n_i * n_o + p0, X, xo, True, nz_idx, U(0), cnt,
                                params, w_off + p0, n_o, n_o - p0, acc)
            else:
                _scale_f(nxt, U(0), params.dtype.type(1), params, w_off + n_i * n_o, n_o)
                for j in range(n_i):
                    if cur[j] != zero:
                        _axpy_f(nxt, U(0), cur[j], params, w_off + j * n_o, n_o)
            _activate_f(nxt, U(0), n_o, act)
            cur, nxt = nxt, cur
        # output layer: logits = b + h @ W, as vector sums of the padded rows of W
        n_i = usizes[top]
        if top == 0:
            for t in range(cnt):
                nz_val[t] = X[xo + U(nz_idx[t])]
        for c0 in range(U(0), k_pad, lanes):
            if top == 0:
                _sum_rows_v(logits, c0, top_w, c0, k_pad, nz_val, U(0), nz_idx, U(0), cnt)
            else:
                _sum_rows_v(logits, c0, top_w, c0, k_pad, cur, U(0), None, U(0), n_i)
        o = r * n_k
        b_off = p_offs[top] + n_i * n_k
        for c in range(n_k):
            out[o + c] = params[b_off + c] + logits[c]
        if softmax:
            _softmax_f(out, o, out, o, n_k, U(0))
    return n_bad


@_inline
def _predict_layout(params, sizes):
    """uint64 widths, layer offsets, the widest layer, and the top layer's W with its
    columns padded to whole vectors (as _common.padded_top; built here, as in Python it
    cost a one-row predict 3 us)."""
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
    lanes = _vector_width(params)
    k_pad = (n_k + lanes - U(1)) // lanes * lanes
    top_w = np.zeros(n_i * k_pad, dtype=params.dtype)
    w_off = p_offs[n_layers - 1]
    for i in range(n_i):
        for c in range(n_k):
            top_w[i * k_pad + c] = params[w_off + i * n_k + c]
    return usizes, p_offs, width, top_w


@_pjit
def _predict_proba_parallel(out, X, n_rows, params, sizes, act, n_blocks, softmax):
    usizes, p_offs, width, top_w = _predict_layout(params, sizes)
    bad = np.zeros(n_blocks, dtype=np.int64)
    for k in prange(n_blocks):
        r0, r1 = _ublock(n_rows, n_blocks, k)
        bad[k] = _predict_rows(out, X, params, top_w, usizes, p_offs, act, width, r0, r1,
                               softmax)
    return bad.sum()


@_jit
def _predict_proba_serial(out, X, n_rows, params, sizes, act, softmax):
    usizes, p_offs, width, top_w = _predict_layout(params, sizes)
    return _predict_rows(out, X, params, top_w, usizes, p_offs, act, width, U(0), n_rows,
                         softmax)


def predict_proba(out, X, params, layer_sizes, act, softmax=True):
    """Class probabilities of the rows of X (logits if not ``softmax``): rows split
    between threads (a few rows run on the calling thread alone), zero inputs skipped.
    Checks that X is finite on the way (see CHECKS_FINITE_INPUT)."""
    check_shapes(layer_sizes, params, X=X, out=out)
    n_rows = np.uint64(X.shape[0])
    if X.shape[0] < 2 * PREDICT_CHUNK:
        bad = _predict_proba_serial(out.ravel(), X.ravel(), n_rows, params, layer_sizes,
                                    act, bool(softmax))
    else:
        bad = _predict_proba_parallel(out.ravel(), X.ravel(), n_rows, params, layer_sizes,
                                      act, numba.get_num_threads(), bool(softmax))
    refuse_non_finite(bad)
