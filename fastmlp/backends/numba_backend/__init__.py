"""The Numba backend: fused, parallel kernels and a compiled whole-epoch training loop.

Its modules, by topic:

- ``_config``: the Numba flags and decorators, in one place;
- ``intrinsics``: what is written in LLVM IR (register panels, vector sums of rows);
- ``inline``: small helpers inlined into the kernels' inner loops;
- ``kernels``: the standalone kernels of the contract, for the tests, the benchmarks and
  ``fastmlp compare`` (the estimator does not call them);
- ``inputs``: X as compressed sparse rows, built once per fit;
- ``workspace`` and ``epoch``: the fused epoch, in stages (what the estimator trains
  with);
- ``predict``: prediction (what the estimator predicts with).
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
from numba import prange

from ._cache import cache_location
from ._config import pjit as _pjit
from .epoch import loss_and_grad, train_epoch
from .inputs import all_finite, prepare_inputs
from .kernels import (
    activation_backward,
    adam_update,
    linear_backward,
    linear_forward,
    sgd_update,
    softmax_xent_backward,
    softmax_xent_forward,
)
from .predict import SERIAL_PREDICT_ROWS, predict_proba
from .workspace import work_blocks

NAME = "numba"
# train_epoch's arithmetic follows its blocks of work, one a thread unless work_blocks
# fixes their count
THREAD_INVARIANT = False
# a mini-batch of fewer multiply-adds than this (threads.batch_work) trains faster as one
# block on one thread: each of its stages is a parallel region, and below it the
# threads' meetings cost more than a second thread gives (docs/archive/performance-log.md)
SMALL_BATCH_WORK = 4e5
# predict_proba raises ValueError for NaN or infinity in X, checked in the same pass that
# gathers each row's non-zero inputs; the estimator then skips its own pass over X
CHECKS_FINITE_INPUT = True

__all__ = ["NAME", "CHECKS_FINITE_INPUT", "linear_forward", "linear_backward",
           "activation_backward", "softmax_xent_forward", "softmax_xent_backward",
           "sgd_update", "adam_update", "prepare_inputs", "train_epoch", "loss_and_grad",
           "predict_proba", "thread_limit", "threading_layer", "cache_location",
           "work_blocks", "THREAD_INVARIANT", "SERIAL_PREDICT_ROWS", "SMALL_BATCH_WORK",
           "all_finite", "describe"]


@contextmanager
def thread_limit(n):
    """Numba's thread count set to n (capped at the pool size), restored on exit."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def describe() -> str:
    """Numba's threads, its pool and its threading layer, for ``fastmlp info``."""
    return (f"numba {numba.__version__}, {numba.get_num_threads()} threads (pool of "
            f"{numba.config.NUMBA_NUM_THREADS}), threading layer {threading_layer()}")


def threading_layer() -> str:
    """The threading layer Numba uses (launching a tiny parallel loop if none ran yet)."""
    try:
        return numba.threading_layer()
    except ValueError:
        _touch(np.zeros(2))
        return numba.threading_layer()


@_pjit
def _touch(a):
    for i in prange(a.shape[0]):
        a[i] += 0.0
