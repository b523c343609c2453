"""Small helpers the kernels call in their inner loops, inlined into their callers.

They work on flat 1-D arrays at uint64 offsets (see _config.U): ``y, yo`` is the array
and the offset of the first element, ``n`` a count. The ``_f`` ends a name that works on
such flat arrays.
"""

import numpy as np

from ..codes import (
    ADAM,
    EXP,
    FLUSH_BELOW,
    GOLDEN64,
    LEAKY_RELU,
    LEAKY_SLOPE,
    LOGISTIC,
    RELU,
    SOFTMAX,
    TANH,
    mix64,
)
from ._config import ALIGN, U, inline, jit
from .intrinsics import MASK_LANES, MASK_PLACES, compress_places, panel, panel_width, prefetch


@inline
def ublock(d, n_blocks, k):
    """[start, stop) as uint64 of block k when d (uint64) items make n_blocks blocks."""
    nb = U(n_blocks)
    align = U(ALIGN)
    chunk = (d + nb - U(1)) // nb
    chunk = ((chunk + align - U(1)) // align) * align
    start = min(U(k) * chunk, d)
    return start, min(start + chunk, d)


@inline
def axpy_f(y, yo, a, x, xo, n):
    # y[yo : yo + n] += a * x[xo : xo + n]
    # The widths a thread's block usually has, and 10 classes, get a loop of constant
    # length: LLVM unrolls it and drops the per-call overlap checks, which cost more than
    # the few vector FMAs themselves.
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


@inline
def sum_rows_f(out, oo, scale, init, io, vals, vo, by_idx, idx, q0, q1, src, s_base,
                s_stride, width, acc):
    """out[oo : oo + width] = scale * init[io : io + width]
    + sum over q in [q0, q1) of a_q * src[s_base + idx[q] * s_stride : ... + width],
    added in that order, where a_q = vals[vo + idx[q]] if by_idx, else vals[q]; panel by
    panel in acc (see panel), the remainder in place."""
    P = panel_width(out)
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
        scale_f(out, oo + p0, scale, init, io + p0, rest)
        for q in range(q0, q1):
            j = U(idx[q])
            axpy_f(out, oo + p0, vals[vo + j] if by_idx else vals[q], src,
                    s_base + j * s_stride + p0, rest)


# rows of a batch prefetched ahead of the row being summed (see prefetch_row_f)
PREFETCH_AHEAD = 4


@inline
def prefetch_row_f(indices, values, q0, q1):
    """Ask for the cache lines of a compressed row (its column indices and values at
    [q0, q1)) before it is read: the rows of a shuffled batch lie anywhere in X's
    compressed form, and the first lines of each missed every cache
    (docs/archive/performance-log.md).
    """
    q = U(q0)
    end = U(q1)
    while q < end:
        prefetch(indices, q)
        prefetch(values, q)
        q += U(16)
    if end > U(q0):
        prefetch(indices, end - U(1))
        prefetch(values, end - U(1))


@inline
def scatter_rows_f(dst, d_base, d_stride, vals, idx, q0, q1, src, so, width, acc):
    """dst[d_base + idx[q] * d_stride : ... + width] += vals[q] * src[so : so + width] for
    q in [q0, q1): src is read into the panel acc once (see panel) instead of once per
    q. (Prefetching the rows of dst a few places ahead was slower.)"""
    P = panel_width(dst)
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
            axpy_f(dst, d_base + U(idx[q]) * d_stride + p0, vals[q], src, so + p0,
                    width - p0)


@inline
def scale_f(y, yo, a, x, xo, n):
    # y[yo : yo + n] = a * x[xo : xo + n]
    for c in range(n):
        y[yo + c] = a * x[xo + c]


@inline
def dot_f(x, xo, y, yo, n):
    # sum of x[xo:xo+n] * y[yo:yo+n] in one partial sum per lane of a panel (see
    # panel), the lanes then added pairwise in a fixed order: as fast as a reordered
    # sum, and the same bits however it is compiled. (With eight partial sums in scalars
    # LLVM did not vectorise at all.)
    acc = panel(x)
    P = panel_width(x)
    for c in range(P):
        acc[c] = x.dtype.type(0)
    n_p = n - n % P
    for j in range(U(0), n_p, P):
        for c in range(P):
            acc[c] += x[xo + j + c] * y[yo + j + c]
    for c in range(n - n_p):
        acc[c] += x[xo + n_p + c] * y[yo + n_p + c]
    return lane_sum_f(acc, P)


@inline
def lane_sum_f(acc, P):
    # the P partial sums of a panel added pairwise, in a fixed order (acc is overwritten)
    half = P // U(2)
    while half > U(0):
        for c in range(half):
            acc[c] += acc[c + half]
        half //= U(2)
    return acc[0]


@jit
def sumsq_f(x, xo, n):
    return float(dot_f(x, xo, x, xo, n))


@inline
def activate_f(z, zo, n, act):
    zero = z.dtype.type(0)
    one = z.dtype.type(1)
    if act == RELU:
        # a select and a store for every element, not a branch: the sign of a hidden
        # unit is a coin toss, and mispredicted branches cost more than the stores.
        # (NaN stays NaN, as the divergence check needs.)
        for c in range(n):
            v = z[zo + c]
            z[zo + c] = zero if v < zero else v
    elif act == LEAKY_RELU:
        slope = z.dtype.type(LEAKY_SLOPE)
        for c in range(n):
            v = z[zo + c]
            z[zo + c] = v * slope if v < zero else v
    elif act == TANH:
        for c in range(n):
            z[zo + c] = np.tanh(z[zo + c])
    elif act == LOGISTIC:
        for c in range(n):
            z[zo + c] = one / (one + np.exp(-z[zo + c]))


@inline
def act_derivative_f(d, do, a, ao, n, act):
    # d[do:do+n] *= act'(z), through the output a[ao:ao+n] = act(z)
    zero = a.dtype.type(0)
    one = a.dtype.type(1)
    if act == RELU:
        for c in range(n):
            # a select, not a branch (see activate_f)
            d[do + c] = zero if a[ao + c] <= zero else d[do + c]
    elif act == LEAKY_RELU:
        slope = a.dtype.type(LEAKY_SLOPE)
        for c in range(n):
            d[do + c] = d[do + c] * slope if a[ao + c] <= zero else d[do + c]
    elif act == TANH:
        for c in range(n):
            d[do + c] *= one - a[ao + c] * a[ao + c]
    elif act == LOGISTIC:
        for c in range(n):
            d[do + c] *= a[ao + c] * (one - a[ao + c])


# dropout's generator (codes.mix64, codes.dropout_row_key, codes.dropout_kept), compiled
_mix64_f = inline(mix64)


@inline
def dropout_row_key_f(seed, batch, layer, row):
    """codes.dropout_row_key, on uint64 scalars."""
    return _mix64_f(_mix64_f(seed ^ _mix64_f(batch)) ^ ((layer << U(32)) | row))


@inline
def dropout_f(h, ho, n, key, unit0, threshold, scale):
    """Inverted dropout of h[ho : ho + n], units unit0, unit0 + 1, ... of the row keyed
    ``key``: each one kept and multiplied by ``scale`` (1 / (1 - rate), h's dtype), or
    set to 0 (codes.dropout_kept). A select, not a branch."""
    zero = h.dtype.type(0)
    for c in range(n):
        bits = _mix64_f(key + (U(unit0) + U(c)) * GOLDEN64) >> U(32)
        v = h[ho + c]
        h[ho + c] = v * scale if bits >= threshold else zero


@inline
def dropout_derivative_f(d, do, h, ho, n, act, rate):
    """d[do:do+n] *= the derivative of dropout after the activation, read from the
    outputs h[ho:ho+n] that dropout_f left: 0 where h is 0 (a dropped unit), else
    act'(a) at a = h (1 - rate), divided by 1 - rate (numpy_backend._dropout_backward)."""
    zero = h.dtype.type(0)
    one = h.dtype.type(1)
    s = h.dtype.type(1.0 / (1.0 - rate))
    q = h.dtype.type(1.0 - rate)
    for c in range(n):
        v = h[ho + c]
        g = d[do + c] * s if v != zero else zero
        a = v * q
        if act == RELU:
            g = zero if a <= zero else g
        elif act == LEAKY_RELU:
            g = g * h.dtype.type(LEAKY_SLOPE) if a <= zero else g
        elif act == TANH:
            g *= one - a * a
        elif act == LOGISTIC:
            g *= a * (one - a)
        d[do + c] = g


@inline
def derivative_f(d, do, a, ao, n, act, rate):
    """d[do:do+n] *= the derivative of the hidden layer's output function: the
    activation's (act_derivative_f), or with dropout at ``rate`` (> 0), dropout's
    (dropout_derivative_f)."""
    if rate == 0.0:
        act_derivative_f(d, do, a, ao, n, act)
    else:
        dropout_derivative_f(d, do, a, ao, n, act, rate)


@inline
def flush_f(x, tiny):
    """x, or 0 where |x| is below ``tiny`` (codes.FLUSH_BELOW in the arrays' dtype):
    Adam's moments of inputs that are nearly always zero decay into subnormal floats,
    which some CPUs multiply a hundred times slower. A select, not a branch; NaN is
    kept."""
    return tiny - tiny if abs(x) < tiny else x


@inline
def adam_step_f(w, g, mq, vq, opt, one, tiny):
    """Adam's step of one weight: (new weight, new first moment, new second moment) from
    the weight w, its gradient g (L2 term included) and its moments. The one place the
    formula is written; every loop that steps weights calls it. ``one`` and ``tiny`` are
    1 and codes.FLUSH_BELOW in the weights' dtype; moments below ``tiny`` become zero
    (flush_f). The weight is first multiplied by opt.keep_t, AdamW's decoupled decay
    (exactly 1 without it, which leaves every bit as it was)."""
    mq = flush_f(opt.beta1 * mq + (one - opt.beta1) * g, tiny)
    vq = flush_f(opt.beta2 * vq + (one - opt.beta2) * g * g, tiny)
    return w * opt.keep_t - opt.lr_t * mq / (np.sqrt(vq) + opt.eps), mq, vq


@inline
def sgd_step_f(w, g, vel, opt):
    """SGD's step of one weight with momentum (Nesterov's when opt.nesterov): (new weight,
    new velocity) from the weight w, its gradient g (L2 term included) and its velocity."""
    vel = opt.momentum * vel - opt.lr * g
    return w + (opt.momentum * vel - opt.lr * g if opt.nesterov else vel), vel


@jit
def update_f(params, grads, m, v, s, n, opt):
    # one optimizer step (opt, a codes.OptimizerStep) on params[s : s + n], in the flat
    # layout shared by grads, m and v
    if opt.solver == ADAM:
        one = params.dtype.type(1)
        tiny = params.dtype.type(FLUSH_BELOW)
        for q in range(s, s + n):
            params[q], m[q], v[q] = adam_step_f(params[q], grads[q], m[q], v[q], opt, one,
                                                tiny)
    else:
        for q in range(s, s + n):
            params[q], m[q] = sgd_step_f(params[q], grads[q], m[q], opt)


@jit
def column_sums_f(out, oo, delta, do, stride, n_rows, n):
    # out[oo:oo+n] = sum over rows r of delta[do + r*stride : ... + n]
    zero = out.dtype.type(0)
    for c in range(n):
        out[oo + c] = zero
    for r in range(n_rows):
        axpy_f(out, oo, out.dtype.type(1), delta, do + U(r) * stride, n)


@inline
def softmax_f(out, oo, src, so, k, label):
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




@jit
def output_row_f(output, z, zo, d, do, n_k, label, tv, to, scale):
    """One row of the output layer: z[zo:zo+n_k] (the logits) replaced by the output
    function (codes.OUTPUTS), and d[do:do+n_k] = (output - target) * scale, the gradient
    of the row's share of the mean loss. The target is class ``label`` for SOFTMAX, else
    tv[to:to+n_k]. Returns the row's loss (float64) and whether it is predicted right
    (SOFTMAX: the arg-max is the label; LOGISTIC: every label on its side of 0.5)."""
    if output == SOFTMAX:
        loss, hit = softmax_f(z, zo, z, zo, n_k, label)
        scale_f(d, do, scale, z, zo, n_k)
        d[do + label] -= scale
        return loss, hit
    zero = z.dtype.type(0)
    half = z.dtype.type(0.5)
    one = z.dtype.type(1)
    loss = 0.0
    hit = output == LOGISTIC
    for c in range(n_k):
        v = z[zo + c]
        t = tv[to + c]
        zf = float(v)
        tf = float(t)
        if output == LOGISTIC:
            # binary cross-entropy through z: log(1 + e^z) - t z, without overflow
            loss += max(zf, 0.0) + np.log1p(np.exp(-abs(zf))) - tf * zf
            hit &= (v > zero) == (t > half)
            p = one / (one + np.exp(-v))
        elif output == EXP:
            # half the Poisson deviance: e^z - t z + t log t - t
            p = np.exp(v)
            loss += np.exp(zf) - tf * zf - tf + (tf * np.log(tf) if tf > 0.0 else 0.0)
        else:
            # IDENTITY: half the squared error
            p = v
            loss += 0.5 * (zf - tf) * (zf - tf)
        z[zo + c] = p
        d[do + c] = (p - t) * scale
    return loss, hit


@inline
def output_f(z, zo, n, output):
    """z[zo:zo+n] replaced by the output function (prediction; IDENTITY leaves it)."""
    if output == SOFTMAX:
        softmax_f(z, zo, z, zo, n, U(0))
    elif output == EXP:
        for c in range(n):
            z[zo + c] = np.exp(z[zo + c])
    else:
        activate_f(z, zo, n, output)


@inline
def nonzero_places_f(places, po, x, xo, n):
    """Write the places j of the non-zero values of x[xo : xo + n] to places[po : po +
    count] (int32) and return the count (uint64). Eight values at a time
    (compress_places), whose eight places written from places[po + count] never reach
    beyond places[po + n], as the count is at most j; the last n % 8 one at a time. No
    branch depends on the values: one taken at random on image data costs more than the
    stores it saves (an unsigned count spares a wrap-around check on every store)."""
    zero = x.dtype.type(0)
    count = U(0)
    j0 = U(0)
    while j0 + U(MASK_LANES) <= n:
        count += compress_places(places, po + count, x, xo, j0, MASK_PLACES)
        j0 += U(MASK_LANES)
    for j in range(j0, n):
        places[po + count] = j
        count += U(1) if x[xo + j] != zero else U(0)
    return count
