"""Shared set-up for the benchmark suites: backends, the machine's GEMM rate, and a helper
that records what every row needs (threads, dtype, error against the reference, GFLOP/s)."""

import numpy as np
import pytest

from fastmlp import compare
from fastmlp.backends import available_backends, get_backend
from fastmlp.threads import blas_info, cpu_count

BACKENDS = available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return get_backend(request.param)


@pytest.fixture(scope="session")
def gemm_gflops():
    """fp32 GFLOP/s of a large NumPy matmul on this machine: the ceiling rows are compared to."""
    return compare.gemm_gflops()


def threads_in_use():
    blas = blas_info()
    return {"cpus": cpu_count(), "blas_threads": [b["num_threads"] for b in blas]}


def record(benchmark, *, dtype, flops=None, max_error=None, gemm=None, **extra):
    """Attach the shared extra_info; GFLOP/s come from the median once the run is over."""
    benchmark.extra_info.update(threads_in_use())
    benchmark.extra_info["dtype"] = np.dtype(dtype).name
    if max_error is not None:
        benchmark.extra_info["max_abs_error_vs_numpy"] = float(max_error)
    if flops is not None:
        benchmark.extra_info["flops"] = float(flops)
    if gemm is not None:
        benchmark.extra_info["machine_fp32_gemm_gflops"] = round(gemm, 1)
    benchmark.extra_info.update(extra)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    for bench in output_json["benchmarks"]:
        flops = bench["extra_info"].get("flops")
        median = bench["stats"].get("median") if bench.get("stats") else None
        if flops and median:
            gflops = flops / median / 1e9
            bench["extra_info"]["gflops"] = round(gflops, 2)
            gemm = bench["extra_info"].get("machine_fp32_gemm_gflops")
            if gemm:
                bench["extra_info"]["fraction_of_gemm"] = round(gflops / gemm, 3)
