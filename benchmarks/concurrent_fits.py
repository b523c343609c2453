"""Fits that share the machine: two (or --jobs) processes each fitting the reference
network at the same time, with fastmlp's default threads against ``n_jobs=1``.

    python benchmarks/concurrent_fits.py [--jobs 2] [--epochs 2] [--backends numba,cython,numpy]

A parallel search, two Dask workers, or two users of one machine run fits side by side;
with more threads in all than cores, a compiled epoch whose mini-batches each wait for
every thread of its team can slow down by far more than its share. For each backend and
each thread setting, the processes start together (after loading and compiling) and each
reports the wall time of its fit; the table gives the slowest of them, and the ratio of
the default setting to ``n_jobs=1``. The target is a ratio of at most 1.5.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

from fastmlp.backends import available_backends


def _fit(backend, n_jobs, epochs, rows, barrier, results):
    import warnings

    from fastmlp import FastMLP, load_mnist

    (X, y), _ = load_mnist()
    X, y = X[:rows], y[:rows]
    kw = dict(backend=backend, n_jobs=n_jobs, max_iter=epochs, random_state=0,
              n_iter_no_change=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FastMLP(**{**kw, "max_iter": 1}).fit(X[:512], y[:512])  # compile, fault in pages
        barrier.wait()
        start = time.perf_counter()
        FastMLP(**kw).fit(X, y)
    results.put(time.perf_counter() - start)


def run(backend, n_jobs, jobs, epochs, rows):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(jobs), ctx.Queue()
    procs = [ctx.Process(target=_fit, args=(backend, n_jobs, epochs, rows, barrier, results))
             for _ in range(jobs)]
    for p in procs:
        p.start()
    times = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return max(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--backends", default=",".join(available_backends()[::-1]))
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    rows = []
    for backend in args.backends.split(","):
        default = run(backend, None, args.jobs, args.epochs, args.rows)
        one = run(backend, 1, args.jobs, args.epochs, args.rows)
        alone = run(backend, None, 1, args.epochs, args.rows)
        rows.append({"backend": backend, "default_s": default, "n_jobs_1_s": one,
                     "alone_default_s": alone, "ratio": default / one})
        print(f"{backend}: {args.jobs} at once, default threads {default:.2f} s, n_jobs=1 "
              f"{one:.2f} s (ratio {default / one:.2f}); one alone, default threads "
              f"{alone:.2f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
