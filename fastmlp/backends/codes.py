"""Integer codes for activations and solvers, and the optimizer record the kernels take.

Kernels never branch on strings: the estimator resolves names to these codes once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IDENTITY, RELU, TANH, LOGISTIC = 0, 1, 2, 3
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "logistic": LOGISTIC}

SGD, ADAM = 0, 1
SOLVERS = {"sgd": SGD, "adam": ADAM}  # the solvers the fused epochs run
# not a kernel solver: the estimator runs SciPy's L-BFGS-B over the backend's loss_and_grad
LBFGS = 2
ESTIMATOR_SOLVERS = {**SOLVERS, "lbfgs": LBFGS}


class OptimizerStep(NamedTuple):
    """The optimizer's hyperparameters as one record, the form every train_epoch and every
    fused update takes (instead of eight scalars through every signature).

    ``momentum`` and ``nesterov`` are SGD's; ``beta1``, ``beta2`` and ``eps`` Adam's.
    ``lr_t`` is the step size of the current mini-batch: for Adam the bias-corrected rate
    (see ``adam_lr``), for SGD ``lr``. Callers of train_epoch leave it at 0: the epoch
    sets it before every batch.
    """

    solver: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    lr_t: float = 0.0


def optimizer_step(solver, lr, momentum=0.9, nesterov=True, beta1=0.9, beta2=0.999,
                   eps=1e-8) -> OptimizerStep:
    """An OptimizerStep with every field of the type the compiled kernels expect (int,
    float, bool), so they are compiled for one signature only."""
    return OptimizerStep(int(solver), float(lr), float(momentum), bool(nesterov),
                         float(beta1), float(beta2), float(eps), 0.0)


def adam_lr(lr, beta1, beta2, t):
    """Bias-corrected Adam step size after t updates (t >= 1)."""
    return lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
