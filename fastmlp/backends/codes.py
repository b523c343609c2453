"""Integer codes for activations and solvers, and the optimizer record the kernels take.

Kernels never branch on strings: the estimator resolves names to these codes once.
"""

from __future__ import annotations

import math
from typing import NamedTuple, get_type_hints

import numpy as np

IDENTITY, RELU, TANH, LOGISTIC = 0, 1, 2, 3
# after the output functions' codes (SOFTMAX, EXP): one space of codes for both
LEAKY_RELU = 6
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "logistic": LOGISTIC,
               "leaky_relu": LEAKY_RELU}
# LEAKY_RELU's slope below zero, PyTorch's default: act(z) = z if z > 0 else
# LEAKY_SLOPE * z; its derivative, read from act(z), is 1 if act(z) > 0 else LEAKY_SLOPE
LEAKY_SLOPE = 0.01

# The output layer's function. Each one is trained with its canonical loss, whose gradient
# with respect to the output layer's pre-activation z is simply (output - target):
# SOFTMAX with cross-entropy over classes, LOGISTIC with binary cross-entropy per label
# (multilabel), IDENTITY with half the squared error, EXP with half the Poisson deviance
# (log link). predict_proba takes these codes too; IDENTITY there returns z itself.
SOFTMAX, EXP = 4, 5
OUTPUTS = {"softmax": SOFTMAX, "logistic": LOGISTIC, "identity": IDENTITY, "exp": EXP}

SGD, ADAM = 0, 1
SOLVERS = {"sgd": SGD, "adam": ADAM}  # the solvers the fused epochs run
# not a kernel solver: the estimator runs SciPy's L-BFGS-B over the backend's loss_and_grad
LBFGS = 2
# Adam with a lazy first layer: the kernels run it as ADAM with OptimizerStep.lazy set
LAZY_ADAM = 3
# Adam with decoupled weight decay: the kernels run it as ADAM with OptimizerStep.weight_decay
ADAMW = 4
ESTIMATOR_SOLVERS = {**SOLVERS, "lbfgs": LBFGS, "lazy_adam": LAZY_ADAM, "adamw": ADAMW}
# the estimator's solver codes that keep Adam's two moments
ADAM_SOLVERS = (ADAM, LAZY_ADAM, ADAMW)


# learning-rate schedules the fused epochs apply before every mini-batch (the per-epoch
# "invscaling" and "adaptive" of SGD are the estimator's, and run as CONSTANT here)
CONSTANT, COSINE, LINEAR = 0, 1, 2
SCHEDULES = {"constant": CONSTANT, "cosine": COSINE, "linear": LINEAR}


class OptimizerStep(NamedTuple):
    """The optimizer's hyperparameters as one record, the form every train_epoch and every
    fused update takes (instead of eight scalars through every signature).

    ``momentum`` and ``nesterov`` are SGD's; ``beta1``, ``beta2`` and ``eps`` Adam's.
    ``lr_t`` is the step size of the current mini-batch: for Adam the bias-corrected rate
    (see ``adam_lr``), for SGD ``lr``. Callers of train_epoch leave it at 0: the epoch
    sets it before every batch.

    ``schedule`` decays the learning rate before every mini-batch (``scheduled_lr``):
    ``seen`` is how many samples the schedule had seen before this epoch and ``horizon``
    how many it spans.

    ``lazy`` (Adam only) steps only the rows of the first layer's W whose input is
    non-zero in at least one row of the batch: the other rows, their moments and their
    L2 term are left as they are for that batch (the first layer's biases and every other
    layer take the full step). Without it every weight takes every step.

    ``weight_decay`` (Adam only) is AdamW's decoupled weight decay (Loshchilov and Hutter):
    before its Adam step every parameter is multiplied by ``keep_t``, which the epoch sets
    before every batch to ``decay_keep(lr, weight_decay)`` at the batch's scheduled (not
    bias-corrected) learning rate. At 0 the factor is exactly 1 and changes no bit.

    ``max_norm``, when positive, bounds the norm of each unit's incoming weight vector
    (a column of its layer's W, the bias left out): after every step a unit whose
    vector is longer is scaled back to that norm (Srivastava et al., 2014). 0 is none.

    ``dropout``, when positive, is the rate at which the hidden layers' outputs are
    dropped during training (inverted dropout: the kept ones are divided by
    1 - dropout), with masks from the counter-based generator below keyed by
    (``drop_seed``, the batch, the layer, the row in the batch, the unit), so that
    they depend on neither the thread count nor the backend. ``batch`` is the samples
    the fit had seen before the current batch; the epoch sets it before every batch.
    """

    solver: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    lr_t: float = 0.0
    schedule: int = CONSTANT
    seen: float = 0.0
    horizon: float = 1.0
    lazy: bool = False
    weight_decay: float = 0.0
    keep_t: float = 1.0
    max_norm: float = 0.0
    dropout: float = 0.0
    drop_seed: int = 0
    batch: float = 0.0


# the Python type of each field of OptimizerStep, in its order
_STEP_TYPES = tuple(get_type_hints(OptimizerStep).values())


def typed_step(opt) -> OptimizerStep:
    """``opt`` (an OptimizerStep, or its fields in order) with every field of the type the
    compiled kernels expect (int, float, bool), so that they are compiled for one
    signature only, whatever numbers a caller built it from (NumPy scalars, say). The one
    place an OptimizerStep is typed for the kernels."""
    return OptimizerStep(*(kind(value) for kind, value in zip(_STEP_TYPES, opt, strict=True)))


def optimizer_step(solver, lr, momentum=0.9, nesterov=True, beta1=0.9, beta2=0.999,
                   eps=1e-8, schedule=CONSTANT, seen=0.0, horizon=1.0,
                   weight_decay=0.0, max_norm=0.0, dropout=0.0,
                   drop_seed=0) -> OptimizerStep:
    """An OptimizerStep for ``solver``, a code of ESTIMATOR_SOLVERS other than LBFGS
    (LAZY_ADAM becomes ADAM with ``lazy`` set; ADAMW becomes ADAM with ``weight_decay``,
    which the other solvers ignore), typed for the kernels (typed_step)."""
    lazy = int(solver) == LAZY_ADAM
    decay = weight_decay if int(solver) == ADAMW else 0.0
    return typed_step((ADAM if int(solver) in ADAM_SOLVERS else solver, lr, momentum,
                       nesterov, beta1, beta2, eps, 0.0, schedule, seen, max(horizon, 1.0),
                       lazy, decay, 1.0, max_norm, dropout, drop_seed, 0.0))


class Target(NamedTuple):
    """What a training kernel fits the network's outputs to, as one record.

    ``output`` is the output function (SOFTMAX, LOGISTIC, IDENTITY or EXP, see OUTPUTS),
    which also fixes the loss. With SOFTMAX the targets are ``labels`` (N,) int64 class
    indices; with the others ``values`` (N, K) of the parameters' dtype (0/1 indicators
    for LOGISTIC, counts or rates >= 0 for EXP). The unused one is empty. ``weights``
    (N,) of the parameters' dtype scales each row's loss and gradient, and each batch's
    mean becomes a weighted mean (as scikit-learn defines sample_weight); empty means
    every row weighs 1.
    """

    output: int
    labels: np.ndarray
    values: np.ndarray
    weights: np.ndarray


def as_target(y, dtype) -> Target:
    """A Target from what a kernel was given: a Target as it is, or class indices
    (the int64 ``y`` of softmax classification) as an unweighted SOFTMAX Target."""
    if isinstance(y, Target):
        return y
    empty = np.empty(0, dtype=dtype)
    return Target(SOFTMAX, y, empty.reshape(0, 1), empty)


def rows_of(target: Target, idx) -> Target:
    """The Target of the rows ``idx`` (an index array or a slice), as C-contiguous
    arrays (copies where indexing does not give them)."""
    output, labels, values, weights = target

    def take(a):
        return np.ascontiguousarray(a[idx]) if a.shape[0] else a

    return Target(output, take(labels), take(values), take(weights))


def loss_denominator(target, n_rows) -> float:
    """What a Target's summed loss over n_rows rows is divided by to make the mean the
    kernels minimise: the row count, or the sum of the weights (1 if they sum to 0)."""
    if target.weights.size == 0:
        return n_rows
    total = float(np.sum(target.weights, dtype=np.float64))
    return total if total > 0 else 1.0


def scheduled_lr(lr, schedule, seen, horizon):
    """The learning rate of a mini-batch that starts after ``seen`` of the ``horizon``
    samples the schedule spans: ``lr`` for CONSTANT; for COSINE
    ``lr * (1 + cos(pi * seen / horizon)) / 2``; for LINEAR ``lr * (1 - seen / horizon)``;
    0 past the horizon. Every backend computes it in float64 in this order."""
    if schedule == CONSTANT:
        return lr
    frac = min(seen / horizon, 1.0)
    if schedule == COSINE:
        return lr * (0.5 * (1.0 + math.cos(math.pi * frac)))
    return lr * (1.0 - frac)


# Adam's moments of smaller magnitude are set to 0 after each update (in every backend
# and dtype): the first moments of inputs that are nearly always zero decay into
# subnormal floats within an epoch, which Intel CPUs multiply about a hundred times
# slower, and a moment this small moves a weight by less than 1e-30.
FLUSH_BELOW = 2.0**-126


def max_norm_factor(sumsq, max_norm):
    """What a unit's incoming weights are multiplied by under ``max_norm`` (> 0), from the
    sum of their squares (float64): ``max_norm / norm`` when the norm is larger, else 1.
    Every backend computes it in this order."""
    norm = math.sqrt(sumsq)
    return max_norm / norm if norm > max_norm else 1.0


def decay_keep(lr, weight_decay):
    """The factor AdamW multiplies every parameter by before a step at the (scheduled)
    learning rate ``lr``: ``1 - lr * weight_decay``, in float64; exactly 1 without decay.
    Every backend computes it in this order."""
    return 1.0 - lr * weight_decay


def adam_lr(lr, beta1, beta2, t):
    """Bias-corrected Adam step size after t updates (t >= 1)."""
    return lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)


# ------------------------------------------------------------------ dropout's masks
#
# A counter-based generator: the bits of a unit's mask are a hash of its coordinates, so
# any thread of any backend computes them alone, in any order. The hash is the finaliser
# of SplitMix64 (Steele, Lea and Flood, 2014), on uint64 with wrap-around; the functions
# below serve NumPy arrays and Numba's scalars alike (the extension has them in C).

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
GOLDEN64 = np.uint64(0x9E3779B97F4A7C15)
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)


def mix64(z):
    """SplitMix64's finaliser of the uint64 z (or of each value of a uint64 array)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def dropout_row_key(seed, batch, layer, row):
    """The key of one row's mask in one hidden layer during one batch (uint64s: the fit's
    seed, the samples seen before the batch, the layer, the row's place in the batch)."""
    return mix64(mix64(seed ^ mix64(batch)) ^ ((layer << _S32) | row))


def dropout_kept(row_key, unit, threshold):
    """Whether ``unit`` (uint64) of the row keyed ``row_key`` is kept: the high 32 bits
    of its hash are at least ``threshold`` (dropout_threshold)."""
    return (mix64(row_key + unit * GOLDEN64) >> _S32) >= threshold


def dropout_threshold(rate):
    """The uint64 below which a unit's 32 bits drop it: a unit is dropped with
    probability threshold / 2**32, rate rounded to the nearest multiple of 2**-32."""
    return np.uint64(round(rate * 2.0**32))
