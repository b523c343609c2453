"""Slow, loop-by-loop versions of the kernels: the oracle the NumPy backend is tested
against. Written for clarity only; nothing here is vectorised."""

import math

import numpy as np

from fastmlp.backends.codes import IDENTITY, LEAKY_RELU, LOGISTIC, RELU, TANH


def activate(z, act):
    if act == RELU:
        return max(z, 0.0)
    if act == LEAKY_RELU:
        return z if z > 0 else 0.01 * z
    if act == TANH:
        return math.tanh(z)
    if act == LOGISTIC:
        return 1.0 / (1.0 + math.exp(-z))
    assert act == IDENTITY
    return z


def derivative_from_output(a, act):
    if act == RELU:
        return 1.0 if a > 0 else 0.0
    if act == LEAKY_RELU:
        return 1.0 if a > 0 else 0.01
    if act == TANH:
        return 1.0 - a * a
    if act == LOGISTIC:
        return a * (1.0 - a)
    return 1.0


def linear_forward(x, w, b, act):
    n, n_in = x.shape
    n_out = w.shape[1]
    out = np.zeros((n, n_out))
    for r in range(n):
        for o in range(n_out):
            s = float(b[o])
            for i in range(n_in):
                s += float(x[r, i]) * float(w[i, o])
            out[r, o] = activate(s, act)
    return out


def softmax_xent(logits, y):
    n, k = logits.shape
    probs = np.zeros((n, k))
    loss = 0.0
    correct = 0
    for r in range(n):
        row = [float(v) for v in logits[r]]
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        total = sum(exps)
        for c in range(k):
            probs[r, c] = exps[c] / total
        loss += -math.log(probs[r, y[r]])
        best = max(range(k), key=lambda c: row[c])
        correct += int(best == y[r])
    return probs, loss, correct


def softmax_xent_backward(probs, y):
    n, k = probs.shape
    delta = np.zeros((n, k))
    for r in range(n):
        for c in range(k):
            delta[r, c] = (probs[r, c] - (1.0 if c == y[r] else 0.0)) / n
    return delta


def linear_backward(delta, x, w, alpha_n):
    n, n_in = x.shape
    n_out = w.shape[1]
    dw = np.zeros((n_in, n_out))
    db = np.zeros(n_out)
    dx = np.zeros((n, n_in))
    for i in range(n_in):
        for o in range(n_out):
            s = alpha_n * float(w[i, o])
            for r in range(n):
                s += float(x[r, i]) * float(delta[r, o])
            dw[i, o] = s
    for o in range(n_out):
        db[o] = sum(float(delta[r, o]) for r in range(n))
    for r in range(n):
        for i in range(n_in):
            dx[r, i] = sum(float(delta[r, o]) * float(w[i, o]) for o in range(n_out))
    return dw, db, dx


def activation_backward(delta, a, act):
    out = np.zeros(delta.shape)
    for idx in np.ndindex(delta.shape):
        out[idx] = float(delta[idx]) * derivative_from_output(float(a[idx]), act)
    return out


def sgd_update(param, grad, velocity, lr, momentum, nesterov):
    param, velocity = param.astype(float), velocity.astype(float)
    for j in range(param.size):
        velocity[j] = momentum * velocity[j] - lr * float(grad[j])
        if nesterov:
            param[j] += momentum * velocity[j] - lr * float(grad[j])
        else:
            param[j] += velocity[j]
    return param, velocity


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps, keep=1.0):
    param, m, v = param.astype(float), m.astype(float), v.astype(float)
    for j in range(param.size):
        g = float(grad[j])
        m[j] = beta1 * m[j] + (1 - beta1) * g
        v[j] = beta2 * v[j] + (1 - beta2) * g * g
        param[j] = keep * param[j] - lr_t * m[j] / (math.sqrt(v[j]) + eps)
    return param, m, v


def max_norm_project(w, max_norm):
    """W (I, O) with each column longer than max_norm scaled back to it."""
    w = w.astype(float)
    for c in range(w.shape[1]):
        norm = math.sqrt(sum(w[i, c] ** 2 for i in range(w.shape[0])))
        if norm > max_norm:
            for i in range(w.shape[0]):
                w[i, c] *= max_norm / norm
    return w
