"""Dropout and max-norm on MNIST, against the paper's table and PyTorch CPU in one run.

    python benchmarks/dropout_mnist.py                      # 784-1024x3-10, 50 epochs
    python benchmarks/dropout_mnist.py --rows 2000 --epochs 1 --hidden 64,64 --no-torch

Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting"
(JMLR 2014), Table 2, MNIST test error: a standard net (Simard et al. 2003, 800 units)
1.60 %; dropout, 3 layers of 1024 ReLU units, 1.25 %; the same with max-norm, 1.06 %.

Both engines train the same network (ReLU hidden layers, softmax output, cross-entropy)
on the 60,000 training images scaled to [0, 1]: mini-batch SGD with momentum (no
Nesterov), the learning rate decayed by a cosine over the run before every mini-batch,
dropout after every hidden layer (none on the inputs, which fastmlp does not drop) and
each unit's incoming weights bounded by ``--max-norm`` after every step (PyTorch:
``torch.renorm`` of each Linear's weight by output rows). PyTorch's momentum is
``v = m v + g; w -= lr v``, fastmlp's scikit-learn's ``v = m v - lr g; w += v``: the
same steps at a constant rate, within one step's difference of rate as it decays. The
times are of training alone (the data in memory, the kernels compiled beforehand by a
one-batch fit), with the same thread count; the test error is of the 10,000 test
images after the last epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import numpy as np

from fastmlp import FastMLP, load_mnist
from fastmlp.threads import cpu_count

PAPER = [("standard net, 800 units (Simard et al. 2003)", 1.60),
         ("dropout, 3 x 1024 ReLU", 1.25),
         ("dropout + max-norm, 3 x 1024 ReLU", 1.06)]


def _fastmlp(args, X, y, X_test, y_test):
    kw = dict(hidden_layer_sizes=args.hidden, solver="sgd", learning_rate="cosine",
              learning_rate_init=args.lr, momentum=args.momentum, nesterovs_momentum=False,
              alpha=0.0, dropout=args.dropout, max_norm=args.max_norm or None,
              batch_size=args.batch, random_state=args.seed, backend=args.backend,
              n_jobs=args.threads, n_iter_no_change=args.epochs + 1, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # compiles (or loads) the kernels of this shape, outside the timing
        FastMLP(**{**kw, "max_iter": 1}).fit(X[:args.batch], y[:args.batch])
        model = FastMLP(**{**kw, "max_iter": args.epochs})
        start = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - start
    return seconds, 100.0 * (1.0 - model.score(X_test, y_test)), model.backend_


def _torch(args, X, y, X_test, y_test):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    layers, n_in = [], X.shape[1]
    for width in args.hidden:
        layers += [torch.nn.Linear(n_in, width), torch.nn.ReLU(), torch.nn.Dropout(args.dropout)]
        n_in = width
    layers.append(torch.nn.Linear(n_in, 10))
    model = torch.nn.Sequential(*layers)
    linear = [m for m in model if isinstance(m, torch.nn.Linear)]
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    n, horizon, seen = X.shape[0], args.epochs * X.shape[0], 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(n)
        for s in range(0, n, args.batch):
            idx = perm[s:s + args.batch]
            # the cosine schedule of fastmlp (codes.scheduled_lr), before every batch
            for group in opt.param_groups:
                group["lr"] = args.lr * 0.5 * (1.0 + math.cos(math.pi * min(seen / horizon,
                                                                           1.0)))
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X_t[idx]), y_t[idx]).backward()
            opt.step()
            if args.max_norm:
                with torch.no_grad():
                    for m in linear:
                        m.weight.copy_(torch.renorm(m.weight, 2, 0, args.max_norm))
            seen += idx.shape[0]
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(X_test)).argmax(1).numpy()
    return seconds, 100.0 * float(np.mean(pred != y_test)), torch.__version__


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--rows", type=int, default=60_000, help="training rows of MNIST")
    parser.add_argument("--hidden", default="1024,1024,1024",
                        type=lambda s: tuple(int(w) for w in s.split(",")))
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--max-norm", type=float, default=3.5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--no-torch", action="store_true", help="fastmlp alone")
    parser.add_argument("--json", help="write the results as JSON")
    args = parser.parse_args(argv)
    (X, y), (X_test, y_test) = load_mnist()  # float32 in [0, 1]
    X, y = np.ascontiguousarray(X[:args.rows]), y[:args.rows]
    shape = "-".join(map(str, (784, *args.hidden, 10)))
    print(f"{shape}, dropout {args.dropout}, max-norm {args.max_norm}, SGD lr {args.lr} "
          f"(cosine) momentum {args.momentum}, batch {args.batch}, {args.epochs} epochs, "
          f"{X.shape[0]} rows, {args.threads} threads", flush=True)
    results = {}
    seconds, error, backend = _fastmlp(args, X, y, X_test, y_test)
    results["fastmlp"] = {"seconds": seconds, "test_error": error, "backend": backend}
    print(f"fastmlp ({backend}): {seconds:.1f} s, test error {error:.2f} %", flush=True)
    if not args.no_torch:
        ran = _torch(args, X, y, X_test, y_test)
        if ran is None:
            print("PyTorch: not installed", file=sys.stderr)
        else:
            seconds, error, version = ran
            results["pytorch"] = {"seconds": seconds, "test_error": error,
                                  "version": version}
            print(f"PyTorch {version}: {seconds:.1f} s, test error {error:.2f} %", flush=True)
    print()
    print("| engine | test error | train time | s / epoch |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['test_error']:.2f} % | {r['seconds']:.1f} s | "
              f"{r['seconds'] / args.epochs:.2f} |")
    if "pytorch" in results:
        print(f"\nPyTorch / fastmlp time: "
              f"{results['pytorch']['seconds'] / results['fastmlp']['seconds']:.2f}x")
    print("\nthe paper's (Table 2): " + "; ".join(f"{name} {err:.2f} %"
                                                 for name, err in PAPER))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "json"},
                       "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
