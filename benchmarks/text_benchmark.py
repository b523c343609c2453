"""A text-shaped problem: FastMLP (exact Adam on every backend, and lazy Adam) against
scikit-learn's MLPClassifier, PyTorch with sparse input (when installed) and a linear
model, on TF-IDF features given as a SciPy sparse matrix.

    python benchmarks/text_benchmark.py                        # 11,000 x 100,000, 2 epochs
    python benchmarks/text_benchmark.py --train 1000 --test 500 --terms 5000   # a smoke run

``fastmlp compare --text`` runs the same comparison at the default sizes. What is fitted
and measured: fastmlp/compare_text.py.
"""

from __future__ import annotations

import argparse
import dataclasses

from fastmlp.backends import available_backends, get_backend
from fastmlp.compare_text import TextProblem, format_text_table, text_rows
from fastmlp.threads import cpu_count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in dataclasses.fields(TextProblem):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int,
                            default=field.default)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--backends", default=",".join(available_backends()[::-1]))
    args = parser.parse_args(argv)
    problem = TextProblem(**{f.name: getattr(args, f.name)
                             for f in dataclasses.fields(TextProblem)})
    X, rows = text_rows(problem, args.threads, args.backends.split(","),
                        get_backend("auto").NAME)
    print()
    print(format_text_table(X, rows, problem, args.threads))
    return rows


if __name__ == "__main__":
    main()
