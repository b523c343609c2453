"""What the numba backend's kernels cost to compile: each compiled function's own time
(its compile, less the functions it called that compiled on the way), for one fit and
predict of the default kind, in a new process with an empty cache.

    python benchmarks/compile_times.py [--dtype float32] [--rows 2000] [--top 25]
    python benchmarks/compile_times.py --warmup   # everything `fastmlp warmup` compiles

Run in a child interpreter whose cache folder (FASTMLP_CACHE_DIR) is a new empty one, so
nothing is loaded from an earlier compile; the child also loads MNIST and builds the
model, but the table counts compile events only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time, warnings
import numpy as np
from numba.core import event
warnings.simplefilter("ignore")
from fastmlp import FastMLP, load_mnist
(X, y), _ = load_mnist()
X, y = X[:{rows}], y[:{rows}]
events = []
class Listener(event.Listener):
    def on_start(self, e):
        events.append(("start", e.data["dispatcher"].py_func.__qualname__,
                       e.data["dispatcher"].py_func.__module__, time.perf_counter()))
    def on_end(self, e):
        events.append(("end", e.data["dispatcher"].py_func.__qualname__,
                       e.data["dispatcher"].py_func.__module__, time.perf_counter()))
t0 = time.perf_counter()
with event.install_listener("numba:compile", Listener()):
    if {warmup}:
        from fastmlp.warmup import warm_up
        warm_up("numba", "{dtype}")
    else:
        FastMLP(max_iter=1, random_state=0, backend="numba", dtype="{dtype}").fit(X, y) \
            .predict(X[:100])
total = time.perf_counter() - t0
# own time: a compile's span less the spans of the compiles nested in it
own, stack = {{}}, []
for kind, name, module, t in events:
    key = module.rsplit(".", 1)[-1] + "." + name
    if kind == "start":
        stack.append([key, t, 0.0])
    else:
        key, start, nested = stack.pop()
        span = t - start
        own[key] = own.get(key, 0.0) + span - nested
        if stack:
            stack[-1][2] += span
print(json.dumps({{"total": total, "own": own}}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--warmup", action="store_true",
                        help="time the whole warm-up instead of one fit and predict")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, FASTMLP_CACHE_DIR=cache, FASTMLP_BACKGROUND_COMPILE="0")
        code = CHILD.format(rows=args.rows, dtype=args.dtype, warmup=args.warmup)
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    own = sorted(result["own"].items(), key=lambda kv: -kv[1])
    compiled = sum(seconds for _, seconds in own)
    what = "warm-up" if args.warmup else "first fit and predict"
    print(f"{what} ({args.dtype}): {result['total']:.1f} s, of which {compiled:.1f} s "
          f"compiling {len(own)} functions")
    for name, seconds in own[:args.top]:
        print(f"  {seconds:6.2f} s  {name}")


if __name__ == "__main__":
    main()
