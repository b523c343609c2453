"""Where an MNIST epoch goes on the numba backend, and how close its products come to
the machine's fp32 GEMM rate.

    python benchmarks/profile_epoch.py [--batch 64] [--threads N]

Times the stages of the fused mini-batch (hidden layers forward; output layer with
softmax, loss and its gradient; backward with the optimizer update) on random MNIST
batches, as medians over many batches, next to a large NumPy float32 matmul measured in
the same run. GFLOP/s count the dense-equivalent work (2 flops per multiply-add of the
dense products), so a sparse first layer can exceed the dense rate.
"""

import argparse
import time

import numba
import numpy as np

from fastmlp import load_mnist
from fastmlp.backends import numba_backend as nb
from fastmlp.backends._common import ADAM, RELU, n_params
from fastmlp.compare import gemm_gflops


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=numba.get_num_threads())
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)

    (X, y), _ = load_mnist()
    sizes = np.array([784, 128, 10], dtype=np.int64)
    params = (np.random.default_rng(0).standard_normal(n_params(sizes)) * 0.05).astype(np.float32)
    m, v = np.zeros_like(params), np.zeros_like(params)
    data = nb.prepare_inputs(X)
    ws = nb._Workspace(sizes, args.batch, params, m, v)
    p, mw, vw = ws.work
    f = np.float32
    order = np.random.default_rng(1).permutation(X.shape[0])
    n_batches = min(args.batches, X.shape[0] // args.batch)

    def batch(rows, stages):
        return nb._batch(p, ws.grads, mw, vw, *ws.layout(), data.indptr, data.indices,
                         data.values, y, rows, *ws.buffers(), RELU, 1e-4, ADAM, f(2e-3),
                         f(0.9), True, f(0.9), f(0.999), f(1e-8), f(2e-3), True,
                         ws.n_blocks, stages)

    # the three truncations run back to back on each batch, so that the machine's noise
    # hits them alike; medians over all batches
    times = {0: [], 1: [], 2: [], 3: []}
    for stages in times:
        batch(order[: args.batch], stages)
    for i in range(n_batches):
        rows = order[i * args.batch:(i + 1) * args.batch]
        for stages in times:
            times[stages].append(_timed(lambda: batch(rows, stages)))
    medians = {stages: float(np.median(t)) for stages, t in times.items()}
    # stages=0 returns at once: the cost of calling the kernel from Python, which the
    # compiled epoch loop does not pay
    stage_times = {
        "hidden layer forward (784x128, sparse input)": medians[1] - medians[0],
        "output layer + softmax cross-entropy": medians[2] - medians[1],
        "backward + Adam update (both layers)": medians[3] - medians[2],
    }
    total = medians[3] - medians[0]
    n = args.batch
    flops = {
        "hidden layer forward (784x128, sparse input)": 2 * n * 784 * 128,
        "output layer + softmax cross-entropy": 2 * n * 128 * 10,
        "backward + Adam update (both layers)": 2 * n * (784 * 128 + 2 * 128 * 10),
    }
    gemm = gemm_gflops()
    print(f"numba backend, {args.threads} threads ({nb.threading_layer()}), batch {n}, "
          f"median of {n_batches} MNIST batches; NumPy fp32 GEMM 2048^3: {gemm:.0f} GFLOP/s")
    print(f"{'stage':48s} {'us':>7s} {'share':>6s} {'GFLOP/s':>8s} {'of GEMM':>8s}")
    for name, seconds in stage_times.items():
        rate = flops[name] / seconds / 1e9 if seconds > 0 else float("nan")
        print(f"{name:48s} {seconds * 1e6:7.1f} {seconds / total:6.1%} {rate:8.1f} "
              f"{rate / gemm:8.1%}")
    print(f"{'whole batch':48s} {total * 1e6:7.1f} {1:6.0%}")
    print(f"projected epoch ({X.shape[0] // n} batches): {total * (X.shape[0] / n):.3f} s")


if __name__ == "__main__":
    main()
