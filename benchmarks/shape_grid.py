"""The network-shape grid: fit time of every backend (and PyTorch CPU, when installed) on
MNIST for four shapes, side by side in one run.

    python benchmarks/shape_grid.py                 # the grid, medians of 3 runs
    python benchmarks/shape_grid.py --rows 2000 --repeats 1   # a smoke run (CI)

Each cell is the median wall time of a fit (Adam, the shape's batch size, float32, the
given threads), measured in alternating order so the machine's noise hits every
backend alike, after one warm-up fit (compiling, faulting in pages). GFLOP/s counts
the multiply-adds of the forward and both backward products of every layer
(6 * rows * sum of inputs x outputs per epoch) and is compared with this machine's
float32 GEMM rate. PyTorch runs the same network (nn.Linear + ReLU, cross-entropy,
Adam with the same hyperparameters, a shuffled DataLoader-free loop over index
batches) with torch.set_num_threads(threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np

from fastmlp import FastMLP, available_backends, load_mnist
from fastmlp.backends import get_backend
from fastmlp.compare import gemm_gflops
from fastmlp.threads import cpu_count, thread_limit

# (hidden layers, batch size, epochs)
SHAPES = {
    "784-128-10": ((128,), 64, 5),
    "784-512-512-10": ((512, 512), 128, 1),
    "784-1024-10": ((1024,), 256, 1),
    "784-256-256-256-256-10": ((256, 256, 256, 256), 64, 1),
}


def _fastmlp_fit(backend, hidden, batch, epochs, X, y, threads):
    clf = FastMLP(hidden_layer_sizes=hidden, batch_size=batch, max_iter=epochs,
                  n_iter_no_change=epochs + 1, random_state=0, backend=backend,
                  n_jobs=threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        clf.fit(X, y)
        return time.perf_counter() - start, clf


def _torch_fit(hidden, batch, epochs, X, y, threads):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    sizes = [X.shape[1], *hidden, int(y.max()) + 1]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(Xt.shape[0])
        for s in range(0, Xt.shape[0], batch):
            idx = order[s:s + batch]
            opt.zero_grad()
            loss_fn(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    return time.perf_counter() - start, None


def _flops(hidden, n_rows, epochs, n_in=784, n_out=10):
    sizes = [n_in, *hidden, n_out]
    return 6.0 * n_rows * epochs * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows of MNIST")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--json", help="write the cells as JSON")
    args = parser.parse_args(argv)

    (X, y), _ = load_mnist()
    X, y = np.ascontiguousarray(X[:args.rows]), y[:args.rows]
    runners = {name: name for name in available_backends()}
    runners["auto"] = "auto"
    try:
        import torch  # noqa: F401

        runners["pytorch"] = None
    except ImportError:
        pass
    gemm = gemm_gflops()
    auto = get_backend("auto").NAME
    rows = []
    for shape in args.shapes.split(","):
        hidden, batch, epochs = SHAPES[shape]
        times = {name: [] for name in runners}

        def run(name):
            if name == "pytorch":
                return _torch_fit(hidden, batch, epochs, X, y, args.threads)[0]
            with thread_limit(args.threads):
                return _fastmlp_fit(runners[name], hidden, batch, epochs, X, y,
                                    args.threads)[0]

        for name in runners:  # warm up: compile, fault in pages
            _warm(name, hidden, batch, X, y, args)
        for _ in range(args.repeats):
            for name in runners:
                times[name].append(run(name))
        flops = _flops(hidden, X.shape[0], epochs)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, seconds in medians.items():
            rate = flops / seconds / 1e9
            rows.append({"shape": shape, "batch": batch, "epochs": epochs, "runner": name,
                         "seconds": seconds, "gflops": rate, "share_of_gemm": rate / gemm,
                         "vs_numpy": medians["numpy"] / seconds,
                         "vs_pytorch": (medians["pytorch"] / seconds
                                        if "pytorch" in medians else None)})
    print(f"{args.threads} threads, {X.shape[0]} rows, medians of {args.repeats}; auto picks "
          f"{auto}; float32 GEMM {gemm:.0f} GFLOP/s")
    print(f"{'shape':26s} {'runner':8s} {'seconds':>8s} {'GFLOP/s':>8s} {'of GEMM':>8s} "
          f"{'x numpy':>8s} {'x torch':>8s}")
    for r in rows:
        torch_ratio = f"{r['vs_pytorch']:8.2f}" if r["vs_pytorch"] is not None else " " * 8
        print(f"{r['shape']:26s} {r['runner']:8s} {r['seconds']:8.3f} {r['gflops']:8.1f} "
              f"{r['share_of_gemm']:8.1%} {r['vs_numpy']:8.2f} {torch_ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rows": X.shape[0], "auto": auto,
                       "gemm_gflops": gemm, "cells": rows}, f, indent=1)
    return rows


def _warm(name, hidden, batch, X, y, args):
    if name == "pytorch":
        _torch_fit(hidden, batch, 1, X[:2000], y[:2000], args.threads)
    else:
        with thread_limit(args.threads):
            _fastmlp_fit(name, hidden, batch, 1, X[:2000], y[:2000], args.threads)


if __name__ == "__main__":
    main()
