"""The backend contract: every kernel a backend provides, declared once.

A backend is one module of this package named ``<name>_backend`` (the registry finds it
by that name). It exposes exactly the kernels below, with these parameter names and
defaults, plus the constants in CONSTANTS and, optionally, the helpers in EXTRAS.
tests/test_contract.py checks every registered backend against this table, and the
kernel, property and benchmark suites run every kernel of every backend, so a new
backend is covered as soon as its module exists.

Conventions (shared by all kernels):

- outputs first and preallocated, then inputs, then scalars;
- arrays C-contiguous, of one float dtype (float32 or float64) per call;
- ``act``, ``output`` and ``OptimizerStep.solver`` are the integer codes of ``codes``;
- what training fits the outputs to is a ``codes.Target`` (the output function, which
  fixes the loss; class labels or target values; optional row weights); int64 class
  indices ``y`` stand for an unweighted softmax Target;
- labels and row indices ``order`` are int64; the backend checks them, the targets'
  values and weights (and every shape it indexes with) once, in Python, before its
  compiled code runs;
- parameters, gradients and optimizer moments are flat vectors in the layout of
  ``layout`` (P = its length).

Legend of the shapes: N rows, I inputs of a layer, O its outputs, K classes, I0 input
features, P parameters.
"""

from __future__ import annotations

from typing import NamedTuple

ESTIMATOR = "estimator"  # FastMLP calls it on every fit or predict
SUPPORT = "tests, benchmarks and `fastmlp compare`"  # only they call it


class Kernel(NamedTuple):
    params: str  # parameter names in order, with defaults as in Python
    shapes: str  # shapes and dtypes of the arguments
    computes: str  # what it computes, and what it returns
    used_by: str  # ESTIMATOR or SUPPORT


KERNELS = {
    "linear_forward": Kernel(
        "out, x, w, b, act", "x (N, I), w (I, O), b (O,), out (N, O)",
        "out = act(x @ w + b)", SUPPORT),
    "linear_backward": Kernel(
        "dw, db, dx, delta, x, w, alpha_n",
        "delta (N, O), x (N, I), w (I, O), dw (I, O), db (O,), dx (N, I) or size 0",
        "dw = x.T @ delta + alpha_n * w, db = delta summed over rows, dx = delta @ w.T "
        "(skipped when dx is empty: the first layer needs no input gradient)", SUPPORT),
    "activation_backward": Kernel(
        "delta, a, act", "delta (N, O), a (N, O)",
        "delta *= act'(z), expressed through the activation's output a = act(z)", SUPPORT),
    "softmax_xent_forward": Kernel(
        "probs, logits, y", "logits (N, K), probs (N, K) (may be logits), y (N,) int64",
        "probs = softmax(logits); returns (summed cross-entropy, count of rows whose "
        "arg-max is y)", SUPPORT),
    "softmax_xent_backward": Kernel(
        "delta, probs, y", "probs (N, K), y (N,) int64, delta (N, K)",
        "delta = (probs - onehot(y)) / N", SUPPORT),
    "sgd_update": Kernel(
        "param, grad, velocity, lr, momentum, nesterov", "param, grad, velocity (P,)",
        "one SGD step with (Nesterov) momentum, as scikit-learn's SGDOptimizer", SUPPORT),
    "adam_update": Kernel(
        "param, grad, m, v, lr_t, beta1, beta2, eps, keep=1.0", "param, grad, m, v (P,)",
        "one Adam step, the bias correction folded into lr_t (codes.adam_lr), each "
        "parameter first multiplied by keep (AdamW's decoupled decay, codes.decay_keep)",
        SUPPORT),
    "prepare_inputs": Kernel(
        "X, dtype=None, scale=None, buffers=None",
        "X (N, I0), dense (of any real or integer dtype, a memory map too) or a checked "
        "SciPy CSR (sparse.checked_csr)",
        "the training data in the form this backend's train_epoch reads, built once per "
        "fit (X itself, or its compressed sparse rows), its values read as dtype (default "
        "X's) times scale (None: 1), without a whole converted copy of a dense X; "
        "buffers: None, or a dict the backend may keep arrays in for its next call to "
        "reuse (a streamed fit passes one for all its blocks; each result is then valid "
        "until the next call)",
        ESTIMATOR),
    "train_epoch": Kernel(
        "params, grads, m, v, layer_sizes, act, data, y, order, batch_size, alpha, opt, t, "
        "loss=0.0",
        "params, grads, m (P,), v (P,) or size 0 for SGD, layer_sizes (L + 1,) int64, "
        "data from prepare_inputs, y a codes.Target of N rows (or (N,) int64 class "
        "indices), order (n,) int64 rows to visit; opt a codes.OptimizerStep",
        "one epoch of mini-batches in the given order (gather, forward, the output's loss "
        "(weighted mean) + alpha/2n ||W||^2, backward, update); returns (summed batch "
        "losses added to ``loss``, correct training predictions, new Adam step count t); "
        "an epoch split into calls on consecutive slices of one order, carrying t, the "
        "schedule's position (opt.seen) and the loss, trains and sums as one call",
        ESTIMATOR),
    "loss_and_grad": Kernel(
        "grads, params, layer_sizes, act, X, y, alpha",
        "grads, params (P,), X (N, I0) dense or a checked SciPy CSR, y a codes.Target (or "
        "(N,) int64 class indices)",
        "grads = gradient of the (weighted) mean loss + alpha/2N ||W||^2 (N: the rows, or "
        "the sum of their weights); returns its value", ESTIMATOR),
    "predict_proba": Kernel(
        "out, X, params, layer_sizes, act, output=SOFTMAX",
        "X (N, I0) dense or a checked SciPy CSR, out (N, K)",
        "the outputs of the rows of X through the output function (codes.OUTPUTS: class "
        "probabilities, per-label probabilities, values, exp(values); IDENTITY gives the "
        "logits)", ESTIMATOR),
}

# name -> type of the constants every backend module defines
CONSTANTS = {
    "NAME": str,  # its name in the registry
    # whether predict_proba itself raises ValueError for NaN or infinity in X (then the
    # estimator skips its own pass over X)
    "CHECKS_FINITE_INPUT": bool,
    # whether train_epoch gives the same bits at any thread count
    "THREAD_INVARIANT": bool,
}

# optional helpers a backend may define beyond the kernels
EXTRAS = {
    "thread_limit": "context manager: the backend's own thread pool limited to n threads",
    "threading_layer": "the threading layer in use (numba)",
    "cache_location": "where compiled code is cached (numba)",
    "max_threads": "threads the backend's parallel regions use now",
    "work_blocks": "context manager: train_epoch's work split into n blocks whatever the "
                   "thread count, so its results do not depend on it (numba)",
    "SMALL_BATCH_WORK": "float: a default-thread fit whose mini-batches hold fewer "
                        "multiply-adds than this (threads.batch_work) trains on one thread",
    "SERIAL_PREDICT_ROWS": "int: predict_proba of at most this many rows runs on the calling "
                           "thread alone, so the estimator sets no thread limit around it",
    "all_finite": "all_finite(X) -> bool: whether a dense, C-contiguous float X holds no NaN "
                  "or infinity, checked on the backend's threads; the estimator uses it for "
                  "large X before a fit, and on False lets scikit-learn's check say what is "
                  "wrong (numba)",
    "describe": "describe() -> str: one line for `fastmlp info` on how the backend runs here "
                "(threads, threading layer, how it was built)",
}


def kernel_names(used_by=None) -> tuple[str, ...]:
    """The kernels of the contract, or those used by ``used_by`` (ESTIMATOR, SUPPORT)."""
    return tuple(n for n, k in KERNELS.items() if used_by is None or k.used_by == used_by)


def summary() -> str:
    """The contract as a Markdown table (docs/design.md shows it)."""
    lines = ["| kernel | arguments | shapes | used by |", "|---|---|---|---|"]
    for name, k in KERNELS.items():
        lines.append(f"| `{name}` | `{k.params}` | {k.shapes} | {k.used_by} |")
    return "\n".join(lines)
