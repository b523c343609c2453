"""Optimizer state as plain arrays, and the per-epoch learning-rate schedule.

The per-step arithmetic lives in the backends (``sgd_update``, ``adam_update``); this
module only owns the state those kernels read and write, and the decisions taken between
epochs, mirroring scikit-learn's stochastic optimizers.
"""

from __future__ import annotations

import numpy as np

from .backends.codes import ADAM_SOLVERS, SGD

MIN_ADAPTIVE_LR = 1e-6


class OptimizerState:
    """Moments (Adam) or velocity (SGD) in the flat parameter layout, plus schedule state.

    ``m`` holds the velocity for SGD and the first moment for Adam; ``v`` holds Adam's
    second moment (empty for SGD). ``t`` counts Adam steps for the bias correction.
    """

    def __init__(self, solver_code, n_params, dtype, learning_rate_init, schedule="constant",
                 power_t=0.5):
        self.solver = solver_code
        # L-BFGS keeps no state between fits: both moments stay empty
        self.m = np.zeros(n_params if solver_code == SGD or solver_code in ADAM_SOLVERS
                           else 0, dtype=dtype)
        self.v = np.zeros(n_params if solver_code in ADAM_SOLVERS else 0, dtype=dtype)
        self.t = 0
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.schedule = schedule
        self.power_t = float(power_t)

    def epoch_ended(self, samples_seen: int) -> None:
        """Apply the inverse-scaling schedule (SGD only), by samples seen so far."""
        if self.solver == SGD and self.schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (samples_seen + 1) ** self.power_t

    def should_stop(self) -> tuple[bool, str]:
        """Called when the loss stopped improving. Returns (stop, reason).

        The adaptive schedule divides the learning rate by 5 instead of stopping, until it
        falls below 1e-6.
        """
        if self.solver == SGD and self.schedule == "adaptive":
            if self.learning_rate <= MIN_ADAPTIVE_LR:
                return True, "learning rate too small"
            self.learning_rate /= 5.0
            return False, f"learning rate set to {self.learning_rate:g}"
        return True, "no improvement"
