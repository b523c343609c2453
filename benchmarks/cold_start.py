"""Compilation cost as a user meets it: the first fit in a new process, with an empty and
with a warm compiled-code cache, against a steady-state fit in the same process.

    python benchmarks/cold_start.py [--backend numba|cython|numpy] [--rows 10000]

Each measurement runs in a fresh interpreter. The first run points NUMBA_CACHE_DIR at a
new empty folder (a cold cache); the second reuses it (a warm cache). The cython
backend compiles nothing at run time, so for it both runs measure the same thing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, warnings
t0 = time.perf_counter()
import fastmlp
from fastmlp import FastMLP, load_mnist
t_import = time.perf_counter() - t0
(X, y), _ = load_mnist()
X, y = X[:{rows}], y[:{rows}]
warnings.simplefilter("ignore")
def fit():
    start = time.perf_counter()
    FastMLP(max_iter=1, random_state=0, backend="{backend}").fit(X, y)
    return time.perf_counter() - start
first = fit()
steady = min(fit() for _ in range(3))
print(json.dumps({{"import_s": t_import, "first_fit_s": first, "steady_fit_s": steady}}))
"""


def run(backend, rows, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", CHILD.format(backend=backend, rows=rows)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--rows", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        for label in ("empty cache", "warm cache"):
            r = run(args.backend, args.rows, cache_dir)
            overhead = r["first_fit_s"] - r["steady_fit_s"]
            print(f"{args.backend:6s} {label:11s}: import {r['import_s']:.2f} s, first fit "
                  f"{r['first_fit_s']:.2f} s, steady fit {r['steady_fit_s']:.2f} s, "
                  f"first-fit overhead {overhead:.2f} s")


if __name__ == "__main__":
    main()
