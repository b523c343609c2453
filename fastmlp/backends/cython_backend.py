"""The Cython backend: the kernel set compiled ahead of time from ext/_cykernels.pyx.

Nothing is compiled when it is first used, so a new process pays no start-up cost beyond
the import; this is the backend for short scripts and many worker processes. It needs the
extension that ``pip install`` builds when Cython and a C compiler are there (see setup.py
and FASTMLP_CYTHON); importing this module raises ImportError when it was not built.

This module allocates buffers, lays out offsets and calls the nogil kernels; the kernels
themselves are in the extension. Same contract as every backend (contract.py). The
estimator calls ``prepare_inputs``, ``train_epoch`` and ``predict_proba``; the standalone
kernels exist for the tests, the benchmarks and ``fastmlp compare``. The fused epoch
splits its work so that results are the same bits for any thread count (see the
extension's notes); the thread count is OpenMP's, which ``n_jobs`` sets.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import numpy as np

from ..threads import one_blas_thread
from . import _cykernels as _k
from .checks import (
    check_epoch_inputs,
    check_index_array,
    check_predict_shapes,
    checked_target,
    refuse_non_finite,
    sizes_key,
)
from .codes import SOFTMAX, loss_denominator
from .layout import padded_top
from .pages import predict_params
from .sparse import SparseRows, from_scipy, sparse_rows

NAME = "cython"
# the fused epoch splits its work the same way at any thread count (see the extension)
THREAD_INVARIANT = True
# predict_proba raises ValueError for NaN or infinity in X (checked row by row as it
# predicts); the estimator then skips its own pass over X
CHECKS_FINITE_INPUT = True
OPENMP = _k.OPENMP
# predicting fewer rows than this runs on the calling thread alone
PARALLEL_ROWS = 256
# fewer rows than PARALLEL_ROWS run on the calling thread (see contract.EXTRAS)
SERIAL_PREDICT_ROWS = PARALLEL_ROWS - 1


def describe() -> str:
    """How the extension was built and the threads its loops use, for ``fastmlp info``."""
    built = "with OpenMP" if OPENMP else "without OpenMP (serial)"
    return f"extension built {built}, {max_threads()} threads"


def max_threads() -> int:
    """Threads the extension's parallel loops use (OpenMP's current setting)."""
    return int(_k.max_threads())


@contextmanager
def thread_limit(n):
    """The extension's OpenMP thread count set to n, restored on exit."""
    previous = max_threads()
    _k.set_max_threads(max(1, int(n)))
    try:
        yield
    finally:
        _k.set_max_threads(previous)


# ------------------------------------------------------------------------ standalone kernels
# (for tests, benchmarks and fastmlp compare; the estimator trains and predicts through the
# fused epoch and predict_proba below)

linear_forward = _k.linear_forward
activation_backward = _k.activation_backward
linear_backward = _k.linear_backward


def softmax_xent_forward(probs, logits, y):
    """Softmax probabilities, summed cross-entropy and count of correct predictions."""
    check_index_array("y", y, logits.shape[1], length=logits.shape[0])
    loss, hits = _k.softmax_xent_forward(probs, logits, y)
    return float(loss), int(hits)


def softmax_xent_backward(delta, probs, y):
    """delta = (probs - onehot(y)) / N."""
    check_index_array("y", y, probs.shape[1], length=probs.shape[0])
    _k.softmax_xent_backward(delta, probs, y)


def sgd_update(param, grad, velocity, lr, momentum, nesterov):
    """SGD with (Nesterov) momentum, as in scikit-learn's SGDOptimizer."""
    _k.sgd_update(param, grad, velocity, float(lr), float(momentum), bool(nesterov))


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps, keep=1.0):
    """Adam step with the bias correction already folded into ``lr_t``; each parameter
    multiplied by ``keep`` (AdamW's decoupled decay, codes.decay_keep) before it."""
    _k.adam_update(param, grad, m, v, float(lr_t), float(beta1), float(beta2), float(eps),
                   float(keep))


# ------------------------------------------------------------------------ training


def prepare_inputs(X, dtype=None, scale=None, buffers=None):
    """X as SparseRows (see fastmlp.backends.sparse), built once per fit, with values of
    ``dtype`` times ``scale``."""
    return sparse_rows(X, _k.count_row_nonzeros, _k.fill_sparse_rows, dtype, scale, buffers)


def _sparse(data):
    return data if isinstance(data, SparseRows) else prepare_inputs(data)


def _sparse_of(X, dtype):
    """SparseRows of a sparse X (SparseRows, or SciPy's) with values of ``dtype``."""
    if isinstance(X, SparseRows):
        return X
    return from_scipy(X, dtype)


class _Buffers:
    """Offsets and per-batch buffers for batches of up to ``rows`` rows, and the padded
    copy of the top layer's W that the output layer reads (see _cykernels._batch)."""

    def __init__(self, layer_sizes, rows, params):
        dtype = params.dtype
        sizes = np.ascontiguousarray(layer_sizes, dtype=np.int64)
        widths = sizes[1:]
        self.sizes = sizes
        # start of each layer in the flat parameters, and the total as the last entry
        self.p_offs = np.concatenate(([0], np.cumsum(sizes[:-1] * widths + widths)))
        self.p_offs = self.p_offs.astype(np.int64)
        # start of each weight layer's outputs in acts / deltas, (rows, width) each
        self.a_offs = (rows * np.concatenate(([0], np.cumsum(widths)[:-1]))).astype(np.int64)
        total = max(1, rows * int(widths.sum()))
        self.acts = np.empty(total, dtype=dtype)
        self.deltas = np.empty(total, dtype=dtype)
        self.row_loss = np.empty(max(1, rows), dtype=np.float64)
        self.row_hit = np.empty(max(1, rows), dtype=np.intc)
        self.pen_rows = np.empty(int(sizes[:-1].sum()), dtype=np.float64)
        # without hidden layers the first layer is the output layer, and these go unused
        self.top_w = padded_top(params, sizes) if len(sizes) > 2 else np.zeros(1, dtype)
        k_pad = self.top_w.shape[0] // int(sizes[-2])
        self.logit_rows = np.empty(max(1, rows * k_pad), dtype=dtype)

    def network(self):
        """The extension's ``net``: (sizes, p_offs, a_offs)."""
        return self.sizes, self.p_offs, self.a_offs

    def arrays(self):
        """The extension's ``buffers``, in its order."""
        return (self.acts, self.deltas, self.row_loss, self.row_hit, self.pen_rows,
                self.top_w, self.logit_rows)


def train_epoch(params, grads, m, v, layer_sizes, act, data, y, order, batch_size, alpha, opt,
                t, loss=0.0):
    """One epoch of mini-batch training in one call into the extension (no Python between
    mini-batches, nothing allocated per mini-batch). Same contract as the NumPy backend's;
    ``data`` is what ``prepare_inputs`` returned (a plain X is converted, at a cost)."""
    if order.shape[0] == 0:
        return 0.0, 0, int(t)
    data = _sparse(data)
    target = check_epoch_inputs(layer_sizes, params, grads, m, v, data, y, order)
    buf = _Buffers(layer_sizes, min(int(batch_size), order.shape[0]), params)
    xy = (data.indptr, data.indices, data.values, _target_tuple(target))
    # the extension reads opt (a codes.OptimizerStep) by position into a record of its
    # own; its threads each call BLAS on their block of the dense layers' products
    with one_blas_thread():
        loss, hits, t = _k.train_epoch(params, grads, m, v, buf.network(), xy, order,
                                       int(batch_size), buf.arrays(), int(act), float(alpha),
                                       opt, int(t), float(loss))
    return float(loss), int(hits), int(t)


def loss_and_grad(grads, params, layer_sizes, act, X, y, alpha):
    """Gradient of the batch objective (the (weighted) mean loss + the L2 term) into grads,
    as the NumPy backend's; returns the objective's value."""
    n = X.shape[0]
    target = checked_target(y, n, int(layer_sizes[-1]), params.dtype)
    buf = _Buffers(layer_sizes, n, params)
    data = prepare_inputs(X)
    xy = (data.indptr, data.indices, data.values, _target_tuple(target))
    with one_blas_thread():
        loss = _k.loss_and_grad(params, grads, buf.network(), xy,
                                np.arange(n, dtype=np.int64), buf.arrays(), int(act),
                                float(alpha))
    return loss / loss_denominator(target, n)


def _target_tuple(target):
    """A codes.Target as the tuple the extension reads (flat values)."""
    output, labels, values, weights = target
    return (int(output), labels, values.reshape(-1), weights)


@functools.lru_cache(maxsize=64)
def _predict_layout(sizes_key):
    """(layout, widest layer) of a network, kept for the next call: a
    one-row prediction costs microseconds, and building these costs several. The layout
    is the kernel's one array of the layer sizes followed by the layers' parameter
    offsets."""
    sizes = np.array(sizes_key, dtype=np.int64)
    widths = sizes[1:]
    p_offs = np.concatenate(([0], np.cumsum(sizes[:-1] * widths + widths))).astype(np.int64)
    layout = np.concatenate((sizes, p_offs))
    layout.setflags(write=False)
    return layout, int(widths.max())


def predict_proba(out, X, params, layer_sizes, act, output=SOFTMAX):
    """The outputs of the rows of X through the output function ``output`` (SOFTMAX:
    class probabilities; IDENTITY: the logits): zero inputs skipped, rows split between
    threads when there are many; with two hidden layers or more, blocks of rows go
    through the dense layers as matrix products. Many rows through a large model read a
    copy of the parameters on huge pages (pages.py)."""
    key = sizes_key(layer_sizes)
    check_predict_shapes(key, params, X, out)
    layout, width = _predict_layout(key)
    params = predict_params(params, X.shape[0])
    parallel = X.shape[0] >= PARALLEL_ROWS
    if isinstance(X, np.ndarray):
        kernel, args = _k.predict_proba, (X,)
    else:
        rows = _sparse_of(X, params.dtype)
        kernel = _PREDICT_CSR[params.dtype.type]
        args = (rows.values, rows.indptr, rows.indices)
    if parallel and len(key) > 3:
        # with two hidden layers or more, the threads' matrix products each on one BLAS
        # thread
        with one_blas_thread():
            bad = kernel(out, *args, params, layout, width, int(act), parallel, int(output))
    else:
        bad = kernel(out, *args, params, layout, width, int(act), parallel, int(output))
    refuse_non_finite(bad)


# the kernel's specialisations, picked by dtype here rather than by Cython's dispatcher,
# which inspects every argument on each call
_PREDICT_CSR = {np.float32: _k.predict_proba_csr["float"],
                np.float64: _k.predict_proba_csr["double"]}
