"""The standalone kernels of the contract: one layer's forward and backward, the softmax
cross-entropy, the optimizer updates. The estimator does not call them (it trains through
the fused epoch in epoch.py and predicts through predict.py); they exist for the tests,
the benchmarks and ``fastmlp compare``, which time each step on its own.

The public kernels take 2-D arrays and hand flat views (ravel of C-contiguous arrays, no
copy) with their shapes to the compiled functions, which split rows or units into one
block per thread.
"""

import numba
import numpy as np
from numba import prange

from ..checks import check_index_array
from ..codes import ADAM, CONSTANT, SGD, OptimizerStep
from ._config import U, jit, pjit
from .inline import (
    act_derivative_f,
    activate_f,
    axpy_f,
    column_sums_f,
    dot_f,
    nonzero_places_f,
    scale_f,
    softmax_f,
    sum_rows_f,
    ublock,
    update_f,
)
from .intrinsics import panel


def _scalar(like, value):
    """value as a NumPy scalar of like's dtype: keeps float32 kernels in float32."""
    return like.dtype.type(value)

#
# The public kernels take 2-D arrays and hand flat views (ravel of C-contiguous arrays,
# no copy) with their shapes to the compiled functions, which split rows or units into
# one block per thread.


@pjit
def _linear_forward(out, x, w, b, n, n_in, n_out, act, n_blocks):
    # x (N, I), w (I, O), b (O,), out (N, O), all flat
    # each row as in predict: its non-zero inputs' places found without a branch, then
    # the picked rows of W summed panel by panel in registers
    one = x.dtype.type(1)
    for k in prange(n_blocks):
        r0, r1 = ublock(n, n_blocks, k)
        nz_idx = np.empty(n_in, dtype=np.int32)
        acc = panel(out)
        for r in range(r0, r1):
            xo = r * n_in
            cnt = nonzero_places_f(nz_idx, U(0), x, xo, n_in)
            o = r * n_out
            sum_rows_f(out, o, one, b, U(0), x, xo, True, nz_idx, U(0), cnt, w, U(0), n_out,
                        n_out, acc)
            activate_f(out, o, n_out, act)


# Narrow layers go to BLAS instead: adding a row of W into fewer than a vector's worth of
# outputs per input is bound by the latency of reloading what was just stored (a
# 64x128x10 product took several times longer that way). The elementwise passes after
# the product stay serial: a parallel region next to BLAS's own threads made both wait.
NARROW = 32


@jit
def _linear_forward_blas(out, x, w, b, act):
    np.dot(x, w, out)
    flat = out.reshape(out.size)
    n_out = U(out.shape[1])
    for r in range(out.shape[0]):
        o = U(r) * n_out
        axpy_f(flat, o, out.dtype.type(1), b, U(0), n_out)
        activate_f(flat, o, n_out, act)


@jit
def _linear_backward_blas(dw, db, dx, delta, w, x, alpha_n):
    np.dot(x.T, delta, dw)
    n_out = U(dw.shape[1])
    if alpha_n != 0:
        flat_dw = dw.reshape(dw.size)
        flat_w = w.reshape(w.size)
        axpy_f(flat_dw, U(0), alpha_n, flat_w, U(0), U(dw.size))
    column_sums_f(db, U(0), delta.reshape(delta.size), U(0), n_out, U(delta.shape[0]), n_out)
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


@pjit
def _activation_backward(delta, a, size, act, n_blocks):
    # delta (N * O,), a (N * O,)
    for k in prange(n_blocks):
        s, e = ublock(size, n_blocks, k)
        act_derivative_f(delta, s, a, s, e - s, act)


def activation_backward(delta, a, act):
    """delta *= act'(z), expressed through the activation's output a = act(z)."""
    _activation_backward(delta.ravel(), a.ravel(), np.uint64(delta.size), act,
                         numba.get_num_threads())


@pjit
def _softmax_xent_forward(probs, logits, y, n, k):
    # logits (N, K), probs (N, K), y (N,), flat
    loss = 0.0
    correct = 0
    for r in prange(n):
        o = U(r) * k
        row_loss, hit = softmax_f(probs, o, logits, o, k, U(y[r]))
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


@pjit
def _softmax_xent_backward(delta, probs, y, n, k):
    # probs (N, K), y (N,), delta (N, K), flat
    inv_n = probs.dtype.type(1.0 / n)
    for r in prange(n):
        o = U(r) * k
        scale_f(delta, o, inv_n, probs, o, k)
        delta[o + U(y[r])] -= inv_n


def softmax_xent_backward(delta, probs, y):
    """delta = (probs - onehot(y)) / N."""
    check_index_array("y", y, probs.shape[1], length=probs.shape[0])
    _softmax_xent_backward(delta.ravel(), probs.ravel(), y, probs.shape[0],
                           np.uint64(probs.shape[1]))


@pjit
def _linear_backward(dw, db, dx, delta, x, w, alpha_n, n, n_in, n_out, n_blocks):
    # delta (N, O), x (N, I), w (I, O), dw (I, O), db (O,), dx (N, I) or empty; all flat
    zero = x.dtype.type(0)
    for k in prange(n_blocks):
        i0, i1 = ublock(n_in, n_blocks, k)
        for i in range(i0, i1):
            g = i * n_out
            scale_f(dw, g, alpha_n, w, g, n_out)
            for r in range(n):
                xv = x[r * n_in + i]
                if xv != zero:
                    axpy_f(dw, g, xv, delta, r * n_out, n_out)
        o0, o1 = ublock(n_out, n_blocks, k)
        column_sums_f(db, o0, delta, o0, n_out, n, o1 - o0)
        if dx.shape[0]:
            r0, r1 = ublock(n, n_blocks, k)
            for r in range(r0, r1):
                for i in range(n_in):
                    dx[r * n_in + i] = dot_f(delta, r * n_out, w, i * n_out, n_out)


def linear_backward(dw, db, dx, delta, x, w, alpha_n):
    """dw = x.T @ delta + alpha_n * w, db = sum(delta), dx = delta @ w.T (skipped if empty);
    narrow layers through BLAS."""
    if w.shape[1] < NARROW and x.shape[0] and x.shape[1]:
        _linear_backward_blas(dw, db, dx, delta, w, x, _scalar(w, alpha_n))
        return
    _linear_backward(dw.ravel(), db, dx.ravel(), delta.ravel(), x.ravel(), w.ravel(),
                     _scalar(w, alpha_n), *_dims(*x.shape, w.shape[1]), numba.get_num_threads())


@pjit
def _optimizer_update(param, grad, m, v, opt, n_blocks):
    for k in prange(n_blocks):
        s, e = ublock(U(param.shape[0]), n_blocks, k)
        update_f(param, grad, m, v, s, e - s, opt)


def sgd_update(param, grad, velocity, lr, momentum, nesterov):
    """SGD with (Nesterov) momentum, as in scikit-learn's SGDOptimizer."""
    c = param
    lr = _scalar(c, lr)
    # the Adam fields repeat lr: one type for every field of the dtype, one compiled update
    opt = OptimizerStep(SGD, lr, _scalar(c, momentum), bool(nesterov), lr, lr, lr, lr,
                        CONSTANT, 0.0, 1.0, False, lr, lr)
    _optimizer_update(param, grad, velocity, velocity, opt, numba.get_num_threads())


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps, keep=1.0):
    """Adam step with the bias correction already folded into ``lr_t``; each parameter
    multiplied by ``keep`` (AdamW's decoupled decay, codes.decay_keep) before it."""
    c = param
    lr_t = _scalar(c, lr_t)
    opt = OptimizerStep(ADAM, lr_t, lr_t, False, _scalar(c, beta1), _scalar(c, beta2),
                        _scalar(c, eps), lr_t, CONSTANT, 0.0, 1.0, False, lr_t,
                        _scalar(c, keep))  # weight_decay repeats lr_t: keep_t is the factor
    _optimizer_update(param, grad, m, v, opt, numba.get_num_threads())
