"""Where an MNIST epoch goes on the numba backend, and how close its products come to
the machine's fp32 GEMM rate.

    python benchmarks/profile_epoch.py [--sizes 784,128,10] [--batch 64] [--threads N]

Times each stage function of the fused mini-batch (fastmlp/backends/numba_backend/
epoch.py: hidden layers forward; output layer with softmax, loss and its gradient;
backward with the optimizer update) on random MNIST batches, as medians over many
batches, next to a large NumPy float32 matmul measured in the same run. Calling a
compiled function from Python costs some microseconds that the compiled epoch loop does
not pay: that cost is measured with a function taking the same arguments and doing
nothing, and subtracted. GFLOP/s count the dense-equivalent work (2 flops per
multiply-add of the dense products), so a sparse first layer can exceed the dense rate.
"""

import argparse
import time

import numba
import numpy as np

from fastmlp import load_mnist
from fastmlp.backends import numba_backend as nb
from fastmlp.backends.codes import ADAM, RELU, SOFTMAX, OptimizerStep, as_target
from fastmlp.backends.layout import n_params
from fastmlp.backends.numba_backend import epoch
from fastmlp.backends.numba_backend.workspace import Workspace
from fastmlp.compare import gemm_gflops
from fastmlp.threads import one_blas_thread


@numba.njit
def _nothing(state, net, data, rows, bufs, act, alpha, opt, update, n_blocks):
    return 0


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="784,128,10",
                        help="layer sizes, comma-separated (MNIST input: 784 first)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=numba.get_num_threads())
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)

    (X, y), _ = load_mnist()
    sizes = np.array([int(s) for s in args.sizes.split(",")], dtype=np.int64)
    if sizes[0] != X.shape[1] or sizes.shape[0] < 3:
        parser.error(f"--sizes: MNIST has {X.shape[1]} inputs and one hidden layer at least")
    params = (np.random.default_rng(0).standard_normal(n_params(sizes)) * 0.05).astype(np.float32)
    m, v = np.zeros_like(params), np.zeros_like(params)
    prepared = nb.prepare_inputs(X)
    data = epoch._data(prepared, as_target(y.astype(np.int64), np.float32))
    ws = Workspace(sizes, args.batch, params, m, v, x=prepared)
    state, net, bufs, cols = ws.state(), ws.net(), ws.buffers(), ws.columns()
    f = np.float32
    opt = OptimizerStep(ADAM, f(2e-3), f(0.9), True, f(0.9), f(0.999), f(1e-8), f(2e-3))
    order = np.random.default_rng(1).permutation(X.shape[0]).astype(np.int64)
    n_batches = min(args.batches, X.shape[0] // args.batch)
    stages = {
        "hidden layers forward": lambda rows: epoch.hidden_forward(
            state[0], net, data, rows, bufs, RELU, ws.n_blocks, opt),
        "output layer + softmax cross-entropy": lambda rows: epoch.output_loss(
            state[0], net, data, SOFTMAX, rows, bufs, 1.0 / rows.shape[0], ws.n_blocks, cols),
        "backward + Adam update (every layer)": lambda rows: epoch.backward_update(
            state, net, data, rows, bufs, RELU, 1e-4, float(rows.shape[0]), opt, True,
            ws.n_blocks, cols),
        "call overhead": lambda rows: _nothing(state, net, data, rows, bufs, RELU, 1e-4, opt,
                                               True, ws.n_blocks),
    }
    # the stages run back to back on each batch, in the epoch's order, so that the
    # machine's noise hits them alike; medians over all batches
    times = {name: [] for name in stages}
    # as in the fused epoch, BLAS (the dense layers' products) on the calling thread
    with one_blas_thread():
        for stage in stages.values():
            stage(order[: args.batch])
        for i in range(n_batches):
            rows = order[i * args.batch:(i + 1) * args.batch]
            for name, stage in stages.items():
                times[name].append(_timed(stage, rows))
    overhead = float(np.median(times.pop("call overhead")))
    stage_times = {name: max(float(np.median(t)) - overhead, 0.0) for name, t in times.items()}
    total = sum(stage_times.values())
    n = args.batch
    # dense-equivalent products: forward, then the weight gradients of every layer and
    # the input gradients of every layer but the first
    pairs = list(zip(sizes[:-1].tolist(), sizes[1:].tolist()))
    flops = {
        "hidden layers forward": sum(2 * n * i * o for i, o in pairs[:-1]),
        "output layer + softmax cross-entropy": 2 * n * pairs[-1][0] * pairs[-1][1],
        "backward + Adam update (every layer)": 2 * n * (sum(i * o for i, o in pairs)
                                                         + sum(i * o for i, o in pairs[1:])),
    }
    gemm = gemm_gflops()
    print(f"numba backend, {'-'.join(map(str, sizes))}, {args.threads} threads "
          f"({nb.threading_layer()}), batch {n}, "
          f"median of {n_batches} MNIST batches; NumPy fp32 GEMM 2048^3: {gemm:.0f} GFLOP/s; "
          f"call overhead {overhead * 1e6:.1f} us (subtracted)")
    print(f"{'stage':48s} {'us':>7s} {'share':>6s} {'GFLOP/s':>8s} {'of GEMM':>8s}")
    for name, seconds in stage_times.items():
        rate = flops[name] / seconds / 1e9 if seconds > 0 else float("nan")
        print(f"{name:48s} {seconds * 1e6:7.1f} {seconds / total:6.1%} {rate:8.1f} "
              f"{rate / gemm:8.1%}")
    print(f"{'whole batch':48s} {total * 1e6:7.1f} {1:6.0%}")
    print(f"projected epoch ({X.shape[0] // n} batches): {total * (X.shape[0] / n):.3f} s")


if __name__ == "__main__":
    main()
