"""The NumPy backend: the reference every other backend is tested against, and the
baseline every benchmark is measured against. Plain, vectorised, obviously correct.

Legend for shape comments: N = rows in the batch, I = inputs of a layer, O = outputs of a
layer, K = classes, P = length of the flat parameter vector.

The contract every backend follows is declared in ``contract.py``. Like the compiled
backends, this one checks the labels and row indices it indexes with before using them: a
negative index would silently wrap around in NumPy. Here ``train_epoch`` and
``predict_proba`` (what the estimator calls) are built from the standalone kernels, one
mini-batch at a time in Python.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import xlogy

from .checks import check_index_array, checked_target
from .codes import (
    ADAM,
    EXP,
    FLUSH_BELOW,
    IDENTITY,
    LEAKY_RELU,
    LEAKY_SLOPE,
    LOGISTIC,
    RELU,
    SOFTMAX,
    TANH,
    Target,
    adam_lr,
    decay_keep,
    dropout_kept,
    dropout_row_key,
    dropout_threshold,
    loss_denominator,
    scheduled_lr,
)
from .layout import layer_views
from .sparse import StoredRows, checked_csr

NAME = "numpy"
# BLAS splits its products by its thread count, and sums them in that order
THREAD_INVARIANT = False
CHECKS_FINITE_INPUT = False
PREDICT_CHUNK = 4096


def _activate(z, act):
    # z (N, O), in place
    if act == RELU:
        np.maximum(z, 0, out=z)
    elif act == TANH:
        np.tanh(z, out=z)
    elif act == LEAKY_RELU:
        z[z < 0] *= z.dtype.type(LEAKY_SLOPE)
    elif act == LOGISTIC:
        # 1 / (1 + exp(-z)), written to avoid overflow warnings for very negative z
        np.negative(z, out=z)
        np.clip(z, -88.0, 88.0, out=z)
        np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)
    # IDENTITY: nothing to do


def _matmul(a, b, out):
    """out = a @ b, for a dense or SciPy sparse ``a`` (a sparse product gives a dense
    array, copied into out)."""
    if sp.issparse(a):
        out[...] = a @ b
    else:
        np.matmul(a, b, out=out)


def linear_forward(out, x, w, b, act):
    """out = act(x @ w + b); x may be SciPy sparse."""
    # x (N, I), w (I, O), b (O,), out (N, O)
    _matmul(x, w, out)
    out += b
    _activate(out, act)


def activation_backward(delta, a, act):
    """delta *= act'(z), expressed through the activation's output a = act(z)."""
    # delta (N, O), a (N, O)
    if act == RELU:
        delta[a <= 0] = 0
    elif act == LEAKY_RELU:
        delta[a <= 0] *= delta.dtype.type(LEAKY_SLOPE)
    elif act == TANH:
        delta *= 1 - a * a
    elif act == LOGISTIC:
        delta *= a * (1 - a)
    # IDENTITY: derivative is 1


def _dropout_forward(h, layer, seed, batch, rate):
    """Inverted dropout of a hidden layer's outputs h (N, O), in place: each unit of each
    row kept (and divided by 1 - rate) or set to 0 by codes.dropout_kept, keyed by the
    fit's seed, the batch (samples seen before it), the layer and the row's place."""
    rows = np.arange(h.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):  # the hash multiplies with wrap-around, as meant
        keys = dropout_row_key(np.uint64(seed), np.uint64(batch), np.uint64(layer), rows)
        kept = dropout_kept(keys[:, None], np.arange(h.shape[1], dtype=np.uint64)[None, :],
                            dropout_threshold(rate))
    h[...] = np.where(kept, h * h.dtype.type(1.0 / (1.0 - rate)), h.dtype.type(0))


def _dropout_backward(delta, h, act, rate):
    """delta *= the derivative of dropout after the activation, read from the outputs h
    that _dropout_forward left: 0 where h is 0 (a dropped unit), else act' at
    a = h (1 - rate) divided by 1 - rate."""
    dt = h.dtype.type
    delta[...] = np.where(h != 0, delta * dt(1.0 / (1.0 - rate)), dt(0))
    activation_backward(delta, h * dt(1.0 - rate), act)


def softmax_xent_forward(probs, logits, y):
    """Softmax probabilities, summed cross-entropy and count of correct argmax predictions.

    ``probs`` may be the same array as ``logits`` (computed in place).
    Returns (loss_sum, n_correct); loss_sum is a Python float summed over the N rows.
    """
    # logits (N, K), probs (N, K), y (N,)
    check_index_array("y", y, logits.shape[1], length=logits.shape[0])
    losses, n_correct = _output_rows(probs, logits, SOFTMAX, y, None)
    return float(np.sum(losses, dtype=np.float64)), n_correct


def softmax_xent_backward(delta, probs, y):
    """delta = (probs - onehot(y)) / N: gradient of the mean cross-entropy w.r.t. logits."""
    # probs (N, K), y (N,), delta (N, K)
    check_index_array("y", y, probs.shape[1], length=probs.shape[0])
    _output_delta(delta, probs, SOFTMAX, y, None, probs[:0, 0])


def linear_backward(dw, db, dx, delta, x, w, alpha_n):
    """dw = x.T @ delta + alpha_n * w, db = sum(delta), dx = delta @ w.T.

    ``dx`` of size 0 means the input gradient is not needed (the first layer).
    ``alpha_n`` is the L2 penalty divided by the batch's row count.
    """
    # delta (N, O), x (N, I) (may be SciPy sparse), w (I, O), dw (I, O), db (O,),
    # dx (N, I) or empty
    _matmul(x.T, delta, dw)
    if alpha_n != 0:
        dw += alpha_n * w
    np.sum(delta, axis=0, out=db)
    if dx.size:
        np.matmul(delta, w.T, out=dx)


def sgd_update(param, grad, velocity, lr, momentum, nesterov):
    """SGD with (Nesterov) momentum, as in scikit-learn's SGDOptimizer."""
    # param (P,), grad (P,), velocity (P,)
    velocity *= momentum
    velocity -= lr * grad
    if nesterov:
        param += momentum * velocity - lr * grad
    else:
        param += velocity


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps, keep=1.0):
    """Adam step with the bias correction already folded into ``lr_t``; each parameter
    multiplied by ``keep`` (AdamW's decoupled decay, codes.decay_keep) before it."""
    # param (P,), grad (P,), m (P,), v (P,)
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    # moments below the smallest normal float32 become 0 (codes.FLUSH_BELOW)
    m[np.abs(m) < FLUSH_BELOW] = 0
    v[v < FLUSH_BELOW] = 0
    if keep != 1.0:
        param *= param.dtype.type(keep)
    param -= lr_t * m / (np.sqrt(v) + eps)


def _present_inputs(x):
    """The input features that are non-zero in at least one row of the batch x."""
    if sp.issparse(x):
        return np.unique(x.indices[x.data != 0])
    return np.flatnonzero((x != 0).any(axis=0))


def _lazy_adam_update(params, grads, m, v, layer_sizes, present, lr_t, keep, opt):
    """Adam with a lazy first layer (codes.OptimizerStep.lazy): of the first layer's W,
    only the rows of the inputs in ``present`` take the step; everything after it does."""
    n_w = int(layer_sizes[0]) * int(layer_sizes[1])
    width = int(layer_sizes[1])
    rows = [a[:n_w].reshape(-1, width) for a in (params, grads, m, v)]
    picked = [r[present] for r in rows]  # copies of the present rows
    adam_update(*picked, lr_t, opt.beta1, opt.beta2, opt.eps, keep)
    for r, p in zip(rows, picked):
        r[present] = p
    adam_update(params[n_w:], grads[n_w:], m[n_w:], v[n_w:], lr_t, opt.beta1, opt.beta2,
                opt.eps, keep)


def _allocate_workspace(layer_sizes, rows, dtype, sparse_x=False):
    """Activations of every layer (the input's first: none for a sparse X, whose rows are
    used as they are) and the deltas of every layer above it, for ``rows`` rows."""
    acts = [np.empty((rows, s if i or not sparse_x else 0), dtype=dtype)
            for i, s in enumerate(layer_sizes)]
    deltas = [np.empty((rows, s), dtype=dtype) for s in layer_sizes[1:]]
    return acts, deltas


def _output_rows(out, z, output, labels, values):
    """out = the output function of z (in place when out is z); returns each row's loss
    (N,) under that output's loss, and the count of rows predicted right (the arg-max is
    the label; for LOGISTIC every label's side of 0.5; none for regression)."""
    # z (N, K), out (N, K), labels (N,) for SOFTMAX, values (N, K) otherwise
    if output == SOFTMAX:
        rows = np.arange(z.shape[0])
        n_correct = int(np.count_nonzero(np.argmax(z, axis=1) == labels))
        shifted = z - z.max(axis=1, keepdims=True)
        sum_exp = np.exp(shifted).sum(axis=1)
        losses = np.log(sum_exp) - shifted[rows, labels]
        np.exp(shifted, out=out)
        out /= sum_exp[:, None]
        return losses, n_correct
    z64 = z.astype(np.float64)
    t = values.astype(np.float64)
    if output == LOGISTIC:
        # binary cross-entropy per label, written through z: log(1 + e^z) - t z
        losses = np.sum(np.logaddexp(0.0, z64) - t * z64, axis=1)
        n_correct = int(np.count_nonzero(np.all((z > 0) == (values > 0.5), axis=1)))
        np.copyto(out, z)
        _activate(out, LOGISTIC)
        return losses, n_correct
    if output == EXP:
        # half the Poisson deviance: e^z - t z + t log t - t
        losses = np.sum(np.exp(z64) - t * z64 + xlogy(t, t) - t, axis=1)
        np.exp(z, out=out)
        return losses, 0
    losses = 0.5 * np.sum((z64 - t) ** 2, axis=1)  # IDENTITY: half the squared error
    np.copyto(out, z)
    return losses, 0


def _output_delta(delta, out, output, labels, values, weights):
    """delta = (out - target) / N, or with weights (out - target) * w / sum(w): the
    gradient of the batch's (weighted) mean loss with respect to z."""
    n = out.shape[0]
    np.copyto(delta, out)
    if output == SOFTMAX:
        delta[np.arange(n), labels] -= 1
    else:
        delta -= values
    if weights.size == 0:
        delta /= n
    else:
        total = float(np.sum(weights, dtype=np.float64))
        scale = weights * (1.0 / total) if total > 0 else np.zeros_like(weights)
        delta *= scale[:, None]


def _batch_step(layers, grad_layers, act, acts, deltas, target, alpha, drop=None):
    """Forward and backward over one batch already gathered into acts[0]; ``target`` is
    the batch's codes.Target; ``drop`` None, or the (rate, seed, batch) of dropout.

    ``layers`` and ``grad_layers`` are the (W, b) views of the parameters and gradients.
    Returns (the summed (weighted) row losses plus the L2 term alpha/2 ||W||^2,
    n_correct).
    """
    output, labels, values, weights = target
    n = acts[0].shape[0]
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        linear_forward(acts[i + 1], acts[i], w, b, IDENTITY if i == last else act)
        if drop is not None and i < last:
            _dropout_forward(acts[i + 1], i, drop[1], drop[2], drop[0])
    losses, n_correct = _output_rows(acts[-1], acts[-1], output, labels, values)
    if weights.size == 0:
        loss_sum = float(np.sum(losses, dtype=np.float64))
        denom = n
    else:
        loss_sum = float(np.dot(losses.astype(np.float64), weights.astype(np.float64)))
        denom = float(np.sum(weights, dtype=np.float64))
    if alpha != 0:
        penalty = sum(float(np.dot(w.ravel(), w.ravel())) for w, _ in layers)
        loss_sum += 0.5 * alpha * penalty
    _output_delta(deltas[-1], acts[-1], output, labels, values, weights)
    # a batch whose weights are all 0 has no gradient, not even the L2 term's
    alpha_n = alpha / denom if denom > 0 else 0.0
    for i in range(last, -1, -1):
        w = layers[i][0]
        dw, db = grad_layers[i]
        dx = deltas[i - 1] if i > 0 else acts[0][:0, :0]
        linear_backward(dw, db, dx, deltas[i], acts[i], w, alpha_n)
        if i > 0 and drop is not None:
            _dropout_backward(dx, acts[i], act, drop[0])
        elif i > 0:
            activation_backward(dx, acts[i], act)
    return loss_sum, n_correct


def _rows_of(target, idx):
    """The Target of the rows idx."""
    output, labels, values, weights = target
    return Target(output, labels[idx] if output == SOFTMAX else labels,
                  values if output == SOFTMAX else values[idx],
                  weights[idx] if weights.size else weights)


def loss_and_grad(grads, params, layer_sizes, act, X, y, alpha):
    """Gradient of the batch objective (the mean loss + alpha/2N ||W||^2; with weights,
    the weighted mean and alpha/2 sum(w) ||W||^2) into ``grads``; returns its value.
    ``y`` is a codes.Target, or int64 class indices (softmax).
    """
    # X (N, I0), params (P,), grads (P,)
    target = checked_target(y, X.shape[0], int(layer_sizes[-1]), params.dtype)
    acts, deltas = _allocate_workspace(layer_sizes, X.shape[0], params.dtype, sp.issparse(X))
    if sp.issparse(X):
        acts[0] = X
    else:
        acts[0][...] = X
    loss_sum, _ = _batch_step(layer_views(params, layer_sizes), layer_views(grads, layer_sizes),
                              act, acts, deltas, target, alpha)
    return loss_sum / loss_denominator(target, X.shape[0])


def prepare_inputs(X, dtype=None, scale=None, buffers=None):
    """The training data in the form this backend's train_epoch takes: X itself here (a
    SciPy sparse X as a checked CSR matrix of ``dtype`` times ``scale``; see
    sparse.checked_csr). A dense X of another dtype, or to be scaled, stays as it is
    stored (StoredRows): each mini-batch is converted as it is gathered. ``buffers`` is
    not used: nothing is built that a next call could reuse.

    Called once per fit, so a backend can pay for a conversion once, not every epoch.
    """
    if sp.issparse(X):
        csr = checked_csr(X, dtype)
        if scale is not None:
            csr = csr * csr.dtype.type(scale)
        return csr
    if (dtype is None or X.dtype == dtype) and scale is None:
        return X
    return StoredRows(X, np.dtype(X.dtype if dtype is None else dtype), scale)


def train_epoch(params, grads, m, v, layer_sizes, act, data, y, order, batch_size, alpha, opt,
                t, loss=0.0):
    """One epoch of mini-batch training over the rows of X in the given order.

    ``data`` is what ``prepare_inputs`` returned for the training data (X itself here);
    ``y`` a codes.Target (or int64 class indices, for softmax); ``opt`` the optimizer's
    hyperparameters (a codes.OptimizerStep).

    ``m`` and ``v`` are the optimizer state: velocity (and an unused v) for SGD, the
    first and second moments for Adam. ``t`` is the number of Adam steps done so far.
    Returns (loss_sum, n_correct, t): the sum over batches of (the batch's summed, or
    weighted, row losses + alpha/2 ||W||^2), the count of correct predictions made during
    training, and the new step count.
    """
    # params, grads, m, v (P,), X (rows, I0), order (n,)
    X = data
    sparse_x = sp.issparse(X)
    target = checked_target(y, X.shape[0], int(layer_sizes[-1]), params.dtype)
    check_index_array("order", order, X.shape[0])
    n = order.shape[0]
    full_acts, full_deltas = _allocate_workspace(layer_sizes, min(batch_size, n), params.dtype,
                                                 sparse_x)
    layers = layer_views(params, layer_sizes)
    grad_layers = layer_views(grads, layer_sizes)
    loss_total = float(loss)
    correct_total = 0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        rows = idx.shape[0]
        acts = [a[:rows] for a in full_acts]
        deltas = [d[:rows] for d in full_deltas]
        if sparse_x:
            acts[0] = X[idx]
        elif isinstance(X, StoredRows):
            X.gather(idx, acts[0])
        else:
            np.take(X, idx, axis=0, out=acts[0])
        drop = (None if opt.dropout == 0 else
                (opt.dropout, opt.drop_seed, int(opt.seen) + start))
        loss_sum, n_correct = _batch_step(layers, grad_layers, act, acts, deltas,
                                          _rows_of(target, idx), alpha, drop)
        loss_total += loss_sum
        correct_total += n_correct
        lr = scheduled_lr(opt.lr, opt.schedule, opt.seen + start, opt.horizon)
        if opt.solver == ADAM:
            t += 1
            lr_t = adam_lr(lr, opt.beta1, opt.beta2, t)
            keep = decay_keep(lr, opt.weight_decay)
            if opt.lazy:
                _lazy_adam_update(params, grads, m, v, layer_sizes, _present_inputs(acts[0]),
                                  lr_t, keep, opt)
            else:
                adam_update(params, grads, m, v, lr_t, opt.beta1, opt.beta2, opt.eps, keep)
        else:
            sgd_update(params, grads, m, lr, opt.momentum, opt.nesterov)
        if opt.max_norm > 0:
            _max_norm_project(layers, opt.max_norm)
    return loss_total, correct_total, t


def _max_norm_project(layers, max_norm):
    """Scale back every unit whose incoming weights (a column of its layer's W) are
    longer than ``max_norm`` (codes.OptimizerStep.max_norm), in place; biases are left.
    Each column's squares are summed in float64; the factor is codes.max_norm_factor's,
    for all columns at once."""
    for w, _ in layers:
        norms = np.sqrt(np.add.reduce(np.square(w, dtype=np.float64), axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            factors = np.where(norms > max_norm, max_norm / norms, 1.0)
        w *= factors.astype(w.dtype)


def predict_proba(out, X, params, layer_sizes, act, output=SOFTMAX):
    """The network's outputs for the rows of X through the output function ``output``
    (codes.OUTPUTS: SOFTMAX gives class probabilities, IDENTITY the pre-activations),
    in chunks so memory stays bounded."""
    # X (N, I0), out (N, K)
    n = X.shape[0]
    layers = layer_views(params, layer_sizes)
    last = len(layers) - 1
    chunk = min(PREDICT_CHUNK, n)
    bufs = [np.empty((chunk, s), dtype=params.dtype) for s in layer_sizes[1:-1]]
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        h = X[start:stop]
        for i, (w, b) in enumerate(layers):
            target = out[start:stop] if i == last else bufs[i][: stop - start]
            linear_forward(target, h, w, b, IDENTITY if i == last else act)
            h = target
        z = out[start:stop]
        if output == SOFTMAX:
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
        elif output == EXP:
            np.exp(z, out=z)
        else:
            _activate(z, output)  # LOGISTIC, or IDENTITY (nothing)
