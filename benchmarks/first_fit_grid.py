"""First fits in new processes, as a script, a CLI run, a Dask task or a CI job meets them:
each cell is one process that loads the data, makes a 2,000-row warm-up fit (so numba
loads or compiles its kernels and the buffers' code paths run once), then times the full
fit, the first full fit of that process.

    python benchmarks/first_fit_grid.py                       # minimum of 2 rounds
    python benchmarks/first_fit_grid.py --rows 3000 --rounds 1 --shapes 784-128-10,friedman
    python benchmarks/first_fit_grid.py --second --rounds 6 --shapes 784-128-10 \
        --engines numba,cython                                # the first fit against the next

Engines: ``default`` (backend="auto", n_jobs=None: what a user gets), numba and cython on
2 threads and on 1, the numpy backend's default, and PyTorch CPU on 2 threads when it is
installed. Shapes: the four MNIST networks of the shape grid and two dense tabular ones
made by scikit-learn's generators (no download): ``friedman`` (make_friedman1, 200,000 x
40, 40-64-64-1 regression, batch 128, 10 epochs) and ``classification``
(make_classification, 200,000 x 100, 100-256-256-2, batch 256, 5 epochs).

``--second`` times the same fit again in the same process and prints, per cell, the
median over the rounds of the first full fit's time over the second's: what a process
pays once (memory first touched, code paths first run) that a long-lived one does not.

Before the grid, ``fastmlp warmup`` compiles numba's float32 kernels, so ``default`` is
auto as it is once that is done; the table says what auto picked in each cell.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# name -> (data, hidden layers, batch size, epochs)
SHAPES = {
    "784-128-10": ("mnist", (128,), 64, 5),
    "784-512-512-10": ("mnist", (512, 512), 128, 1),
    "784-1024-10": ("mnist", (1024,), 256, 1),
    "784-256x4-10": ("mnist", (256, 256, 256, 256), 64, 1),
    "friedman": ("friedman", (64, 64), 128, 10),
    "classification": ("classification", (256, 256), 256, 5),
}
# engine -> (backend, n_jobs)
ENGINES = {"default": ("auto", None), "numba": ("numba", 2), "numba-1": ("numba", 1),
           "cython": ("cython", 2), "cython-1": ("cython", 1), "numpy": ("numpy", None),
           "pytorch": ("pytorch", 2)}

CHILD = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
data, hidden, batch, epochs, backend, n_jobs, rows, second = json.loads(sys.argv[1])
if data == "mnist":
    from fastmlp import load_mnist
    (X, y), _ = load_mnist()
elif data == "friedman":
    from sklearn.datasets import make_friedman1
    X, y = make_friedman1(n_samples=200_000, n_features=40, random_state=0)
else:
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=200_000, n_features=100, n_informative=30,
                               n_classes=2, random_state=0)
X = np.ascontiguousarray(X[:rows], dtype=np.float32)
y = y[:rows].astype(np.float32) if data == "friedman" else y[:rows]
regression = data == "friedman"
if backend == "pytorch":
    import torch
    torch.set_num_threads(n_jobs)
    torch.manual_seed(0)
    sizes = [X.shape[1], *hidden, 1 if regression else int(y.max()) + 1]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y).reshape(-1, 1) if regression else torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.functional.mse_loss if regression else torch.nn.functional.cross_entropy
    def run(n, epochs):
        for _ in range(epochs):
            perm = torch.randperm(n)
            for i in range(0, n, batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss_fn(model(Xt[idx]), yt[idx]).backward()
                opt.step()
    run(2000, 1)
    start = time.perf_counter()
    run(X.shape[0], epochs)
    result = {"seconds": time.perf_counter() - start, "picked": "pytorch"}
    if second:
        start = time.perf_counter()
        run(X.shape[0], epochs)
        result["second"] = time.perf_counter() - start
    print(json.dumps(result))
    sys.exit(0)
from fastmlp import FastMLP, FastMLPRegressor
cls = FastMLPRegressor if regression else FastMLP
kw = dict(hidden_layer_sizes=tuple(hidden), batch_size=batch, backend=backend, n_jobs=n_jobs,
          random_state=0)
cls(max_iter=1, **kw).fit(X[:2000], y[:2000])
def timed_fit():
    model = cls(max_iter=epochs, n_iter_no_change=epochs + 1, **kw)
    start = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - start, model.backend_
seconds, picked = timed_fit()
result = {"seconds": seconds, "picked": picked}
if second:
    result["second"] = timed_fit()[0]
print(json.dumps(result))
"""


def cell(shape, engine, rows, second=False):
    data, hidden, batch, epochs = SHAPES[shape]
    backend, n_jobs = ENGINES[engine]
    limit = rows if rows else 10**9
    env = dict(os.environ, FASTMLP_BACKGROUND_COMPILE="0")
    out = subprocess.run([sys.executable, "-c", CHILD,
                          json.dumps([data, hidden, batch, epochs, backend, n_jobs, limit,
                                      second])],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="training rows (default: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--second", action="store_true",
                        help="also time a second fit in each process; print first/second")
    parser.add_argument("--json", help="write the cells as JSON")
    args = parser.parse_args(argv)
    from fastmlp.cli import main as fastmlp_main

    fastmlp_main(["warmup", "--dtype", "float32"])
    shapes, engines = args.shapes.split(","), args.engines.split(",")
    times = {(s, e): [] for s in shapes for e in engines}
    ratios = {(s, e): [] for s in shapes for e in engines}
    picked = {}
    for _ in range(args.rounds):
        for shape in shapes:
            for engine in engines:
                result = cell(shape, engine, args.rows, args.second)
                if result is not None:
                    times[shape, engine].append(result["seconds"])
                    if args.second:
                        ratios[shape, engine].append(result["seconds"] / result["second"])
                    picked[shape, engine] = result["picked"]
                print(f"{shape} {engine}: {result}", file=sys.stderr, flush=True)
    best = {k: min(v) for k, v in times.items() if v}
    print(f"first full fit of a new process, minimum of {args.rounds} rounds, seconds")
    print(f"{'shape':16s}" + "".join(f"{e:>10s}" for e in engines)
          + f"{'default/best':>14s}{'cython/numba':>14s}{'auto picked':>13s}")
    for shape in shapes:
        cells = [best.get((shape, e)) for e in engines]
        fastmlp = [best[shape, e] for e in engines if e != "pytorch" and (shape, e) in best]
        default = best.get((shape, "default"))
        ratio = f"{default / min(fastmlp):14.2f}" if default and fastmlp else " " * 14
        cy, nb = best.get((shape, "cython")), best.get((shape, "numba"))
        cy_ratio = f"{cy / nb:14.2f}" if cy and nb else " " * 14
        print(f"{shape:16s}" + "".join(f"{c:10.3f}" if c else f"{'-':>10s}" for c in cells)
              + ratio + cy_ratio + f"{picked.get((shape, 'default'), '-'):>13s}")
    if args.second:
        print(f"first full fit over the second in the same process, median of {args.rounds}")
        print(f"{'shape':16s}" + "".join(f"{e:>10s}" for e in engines))
        for shape in shapes:
            print(f"{shape:16s}" + "".join(
                f"{statistics.median(ratios[shape, e]):10.2f}" if ratios[shape, e]
                else f"{'-':>10s}" for e in engines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"shape": s, "engine": e, "seconds": t}
                       for (s, e), t in times.items()], f, indent=1)


if __name__ == "__main__":
    main()
