"""The network-shape grid: fit time of every backend, ``auto`` and (when installed)
PyTorch CPU and JAX, on four MNIST shapes and two tabular ones, side by side in one run.

    python benchmarks/shape_grid.py                           # medians of 3 runs
    python benchmarks/shape_grid.py --rows 2000 --repeats 1   # a smoke run (CI)

The same grid as ``fastmlp compare --shapes`` (fastmlp/compare.py, ``shape_rows``): each
cell is the median wall time of a fit (Adam, the shape's batch size, float32, the given
threads) measured in alternating order after a warm-up fit; GFLOP/s counts the dense
arithmetic of the forward and both backward products and is compared with this
machine's float32 GEMM rate. JAX trains with its whole epoch compiled by XLA (a
``lax.scan`` of mini-batches, optax's Adam); its compile is reported apart and not
counted, and it runs on XLA's own threads. The tabular shapes train on scikit-learn's
make_friedman1 (a regression) and make_classification, 200,000 rows unless ``--rows``
is smaller.
"""

from __future__ import annotations

import argparse
import json
import sys

from fastmlp import compare, load_mnist
from fastmlp.backends import get_backend
from fastmlp.threads import cpu_count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows of MNIST")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--shapes", default=",".join(compare.all_shapes()),
                        help="comma-separated; the names of compare.SHAPES and "
                             "compare.TABULAR_SHAPES")
    parser.add_argument("--json", help="write the cells as JSON")
    args = parser.parse_args(argv)
    (X, y), test = load_mnist()
    data = ((X[:args.rows], y[:args.rows]), test)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in compare.all_shapes()]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; choose from "
                     + ", ".join(compare.all_shapes()))
    rows, note = compare.shape_rows(data, args.threads, args.repeats,
                                    lambda m: print(m, file=sys.stderr, flush=True),
                                    shapes=shapes,
                                    tabular_rows=min(args.rows, compare.TABULAR_ROWS))
    gemm = compare.gemm_gflops()
    print(f"{args.threads} threads (auto: its default threads), {data[0][0].shape[0]} rows, "
          f"medians of {args.repeats}; auto picks {get_backend('auto').NAME}; "
          f"float32 GEMM {gemm:.0f} GFLOP/s")
    print(compare.format_shape_table(rows, gemm))
    if note:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gemm_gflops_fp32": gemm, "cells": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
