"""Per-kernel benchmarks: one group per kernel, shape, dtype and batch size, one row per
backend. The cases are the ones ``fastmlp compare`` runs (fastmlp/compare.py), so the
two report the same measurements.

Run: pytest benchmarks --benchmark-only --benchmark-group-by=group
"""

import time

import numpy as np
import pytest

from fastmlp import load_mnist
from fastmlp.backends import get_backend
from fastmlp.compare import BLAS_PAUSE, kernel_cases, max_abs_error

from .conftest import record

_DATA = load_mnist()
CASES = kernel_cases(_DATA[0][0], _DATA[0][1], _DATA[1][0])


@pytest.fixture(scope="module")
def references():
    """The NumPy backend's result of each case, computed once."""
    out = {}
    numpy_backend = get_backend("numpy")
    for case in CASES:
        run, outputs = case.make(numpy_backend)
        run()
        out[case.group] = [a.astype(np.float64) for a in outputs()]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.group.replace(" ", "_") for c in CASES])
def test_kernel(benchmark, backend, gemm_gflops, references, case):
    run, outputs = case.make(backend)
    run()  # compiles JIT backends, faults memory in
    error = max_abs_error(outputs(), references[case.group])
    time.sleep(BLAS_PAUSE)  # let OpenBLAS's idle threads stop spinning (see fastmlp.compare)
    benchmark.group = case.group
    if case.kernel == "train_epoch":
        benchmark.pedantic(run, rounds=5, iterations=1)
    else:
        benchmark(run)
    record(benchmark, dtype=case.dtype, flops=case.flops, gemm=gemm_gflops, max_error=error,
           batch=case.batch)
