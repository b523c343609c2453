"""Training at scale: data larger than memory, streamed from disk.

    python benchmarks/scale_run.py --path digits.npy            # the MNIST-8M scale test
    python benchmarks/scale_run.py --path digits.npy --hidden 800 --epochs 3
    python benchmarks/scale_run.py --table                      # stored inputs, in memory
                                                                #   and streamed

The scale test writes ``--rows`` (default 8,100,000: 6.4 GB of uint8) deformed MNIST
digits with ``fastmlp.datasets.write_deformed_mnist`` to ``--path`` (kept, and reused by
the next run; without ``--path`` a temporary file is used and removed), then fits
FastMLP on the file's memory map with ``input_scale=1/255`` (streamed: ``stream="auto"``
streams memory maps of 1 GiB and more) and reports the fit's time, rows/s, peak memory
and accuracy on MNIST's 10,000 test digits. Generating the data takes far longer than
training on it (about 5,000 digits a second on one core).

``--table`` measures, for MNIST tiled to ``--table-rows`` rows (default 600,000 and
2,400,000), one epoch of 784-128-10 on one thread from float32 in memory (prepared
whole), uint8 in memory prepared whole (``stream=False``) and as the default reads it
(a part at a time, in the order of the whole-X fit), and a uint8 memory map as the
default reads it and streamed in blocks (``stream=True``), page cache warm.

Every fit runs in a fresh process, so its peak memory is its own: "peak anon" is the
highest anonymous resident memory sampled every 20 ms (what the fit allocates: the file
pages of a memory map are not in it, as the OS can drop them), "peak RSS" the process's
high-water mark including mapped file pages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

SIMARD_2003 = "784-800-10 on elastically deformed digits: 0.7 % test error (1.6 % without)"


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _PeakAnon:
    """The highest RssAnon seen, sampled on a thread while the block runs."""

    def __enter__(self):
        self.peak, self._stop = _status("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status("RssAnon"))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))


def _child(spec):
    """One fit in this process, as ``spec`` says; prints a JSON line."""
    from fastmlp import FastMLP, load_mnist
    from fastmlp.deformed import load_deformed_mnist

    warnings.simplefilter("ignore", ConvergenceWarning)
    _, (X_test, y_test) = load_mnist(raw=True)
    X_test = X_test.reshape(len(X_test), -1)
    if spec["source"] == "file":
        X, y = load_deformed_mnist(spec["path"])
        if spec.get("rows"):
            X, y = X[:spec["rows"]], y[:spec["rows"]]
    else:  # MNIST tiled, as uint8 or float32
        (X0, y0), _ = load_mnist(raw=True)
        reps = -(-spec["rows"] // X0.shape[0])
        X = np.tile(X0.reshape(len(X0), -1), (reps, 1))[:spec["rows"]]
        y = np.tile(y0, reps)[:spec["rows"]]
        if spec["source"] == "float32":
            X = X.astype(np.float32)
            X *= np.float32(1 / 255)
    scale = None if X.dtype == np.float32 else 1 / 255
    kw = dict(hidden_layer_sizes=tuple(spec["hidden"]), max_iter=spec["epochs"],
              random_state=0, input_scale=scale, n_jobs=spec["threads"],
              learning_rate_init=spec["lr"], learning_rate=spec.get("schedule", "constant"),
              stream=spec.get("stream", "auto"))
    FastMLP(**{**kw, "max_iter": 1}).fit(X[:2000], y[:2000])  # compile, load the cache
    base_anon = _status("RssAnon")
    model = FastMLP(**kw, verbose=spec.get("verbose", False))
    with _PeakAnon() as peak:
        start = time.perf_counter()
        model.fit(X, y)
        elapsed = time.perf_counter() - start
    accuracy = model.score(X_test if scale else X_test.astype(np.float32) / 255, y_test)
    print(json.dumps({**spec, "fit_s": elapsed, "rows_per_s": X.shape[0] * spec["epochs"]
                      / elapsed, "x_bytes": int(X.nbytes),
                      "peak_anon_added": peak.peak - base_anon, "peak_rss": _status("VmHWM"),
                      "test_accuracy": accuracy, "loss_curve": model.loss_curve_}), flush=True)


def _run(spec):
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{spec}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gib(n):
    return f"{n / 2**30:.2f} GiB"


def scale_test(args):
    from fastmlp.datasets import write_deformed_mnist
    from fastmlp.deformed import labels_path

    keep = args.path is not None
    folder = None if keep else tempfile.mkdtemp()
    path = args.path or os.path.join(folder, "digits.npy")
    try:
        if not (os.path.exists(path) and os.path.exists(labels_path(path))
                and np.load(path, mmap_mode="r").shape == (args.rows, 784)):
            start = time.perf_counter()
            write_deformed_mnist(path, args.rows, random_state=0)
            print(f"generated {args.rows:,} digits in {time.perf_counter() - start:.0f} s")
        spec = dict(source="file", path=path, hidden=args.hidden, epochs=args.epochs,
                    threads=args.threads, lr=args.lr, schedule=args.schedule, verbose=True)
        r = _run(spec)
    finally:
        if not keep:
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)
    hidden = "-".join(map(str, args.hidden))
    print(f"784-{hidden}-10, {args.epochs} epoch(s) over {args.rows:,} deformed digits "
          f"({_gib(r['x_bytes'])} uint8 on disk), {args.threads or 'default'} threads, Adam "
          f"{args.lr:g}, {args.schedule} schedule")
    print(f"  fit {r['fit_s']:.1f} s, {r['rows_per_s']:,.0f} rows/s")
    print(f"  peak memory added by the fit {_gib(r['peak_anon_added'])} "
          f"({r['peak_anon_added'] / r['x_bytes']:.3f}x the input); peak RSS with the "
          f"mapped file pages {_gib(r['peak_rss'])}")
    print(f"  test accuracy on MNIST's 10,000 test digits {100 * r['test_accuracy']:.2f} % "
          f"(error {100 - 100 * r['test_accuracy']:.2f} %)")
    print(f"  published: {SIMARD_2003}")
    return r


def table(args):
    from fastmlp import load_mnist

    rows_list = args.table_rows
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for rows in rows_list:
            path = os.path.join(folder, f"tiled{rows}.npy")
            (X0, y0), _ = load_mnist(raw=True)
            reps = -(-rows // X0.shape[0])
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                            shape=(rows, 784))
            for r in range(reps):
                n = min(X0.shape[0], rows - r * X0.shape[0])
                out[r * X0.shape[0]:r * X0.shape[0] + n] = X0.reshape(-1, 784)[:n]
            out.flush()
            del out
            np.save(path.replace(".npy", ".labels.npy"), np.tile(y0, reps)[:rows])
            common = dict(rows=rows, hidden=[128], epochs=1, threads=1, lr=2e-3)
            cases = [("float32 in memory", dict(source="float32")),
                     ("uint8 in memory, whole", dict(source="uint8", stream=False)),
                     ("uint8 in memory", dict(source="uint8")),
                     ("uint8 memory map", dict(source="file", path=path)),
                     ("uint8 memory map, blocks",
                      dict(source="file", path=path, stream=True))]
            for name, extra in cases:
                r = _run({**common, **extra})
                r["case"] = name
                results.append(r)
                print(f"{rows:>10,} {name:<26} X {_gib(r['x_bytes']):>10}  added peak "
                      f"{_gib(r['peak_anon_added']):>10} "
                      f"({r['peak_anon_added'] / r['x_bytes']:.2f}x X)  "
                      f"{r['rows_per_s']:>9,.0f} rows/s  acc {100 * r['test_accuracy']:.2f} %",
                      flush=True)
            os.unlink(path)
    by = {(r["rows"], r["case"]): r for r in results}
    for rows in rows_list:
        f = by[(rows, "float32 in memory")]["rows_per_s"]
        speeds = ", ".join(f"{r['case']} {r['rows_per_s'] / f:.2f}" for r in results
                           if r["rows"] == rows and r["case"] != "float32 in memory")
        print(f"{rows:,} rows, speed against float32 in memory: {speeds}")
    return results


def epoch_ratio(args, repeats=3):
    """One epoch streamed from a memory map against one over the same rows prepared in
    memory (the preparation, once per fit, not counted), alternating, medians."""
    from fastmlp import FastMLP, _stream, available_backends, load_mnist
    from fastmlp.backends import get_backend
    from fastmlp.backends.codes import ADAM, as_target, optimizer_step
    from fastmlp.deformed import load_deformed_mnist
    from fastmlp.threads import thread_limit

    warnings.simplefilter("ignore", ConvergenceWarning)
    n = args.epoch_ratio
    with tempfile.TemporaryDirectory() as folder:
        if args.path:
            X, y = load_deformed_mnist(args.path)
            X, y = X[:n], y[:n]
        else:
            (X0, y0), _ = load_mnist(raw=True)
            reps = -(-n // X0.shape[0])
            np.save(os.path.join(folder, "x.npy"),
                    np.tile(X0.reshape(len(X0), -1), (reps, 1))[:n])
            X, y = np.load(os.path.join(folder, "x.npy"), mmap_mode="r"), np.tile(y0, reps)[:n]
        target = as_target(np.ascontiguousarray(y, dtype=np.int64), np.float32)
        in_memory_X = np.array(X)
        for name in [b for b in ("numba", "cython") if b in available_backends()]:
            backend = get_backend(name)
            model = FastMLP(max_iter=1, random_state=0, input_scale=1 / 255, backend=name,
                            n_jobs=args.threads).fit(in_memory_X[:2000], y[:2000])
            opt = model._optimizer
            sources = {
                "in memory": _stream.InMemory(
                    backend.prepare_inputs(in_memory_X, np.float32, 1 / 255), target, n),
                "streamed": _stream.Streamed(X, target, backend, np.float32, 1 / 255,
                                             _stream.part_rows_for(X, 64))}
            times = {k: [] for k in sources}
            with thread_limit(args.threads, backend):
                for _ in range(repeats):
                    for key, source in sources.items():
                        start = time.perf_counter()
                        for data, part, order in source.parts(np.random.RandomState(0), True):
                            backend.train_epoch(model._params, model._grads, opt.m, opt.v,
                                                model._layer_sizes, 0, data, part, order, 64,
                                                1e-4, optimizer_step(ADAM, 2e-3), 1)
                        times[key].append(time.perf_counter() - start)
            mem, streamed = np.median(times["in memory"]), np.median(times["streamed"])
            print(f"{name}: {n:,} rows, one epoch in memory {mem:.2f} s ({n / mem:,.0f} "
                  f"rows/s), streamed {streamed:.2f} s ({n / streamed:,.0f} rows/s): "
                  f"streamed at {mem / streamed:.2f} of the in-memory speed", flush=True)
            del sources


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8_100_000)
    parser.add_argument("--path", default=None, help="where the digits are (or go)")
    parser.add_argument("--hidden", type=lambda s: [int(h) for h in s.split(",")],
                        default=[128])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--schedule", default="constant",
                        choices=("constant", "cosine", "linear"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epoch-ratio", type=int, default=None, metavar="ROWS",
                        help="time one epoch over ROWS rows streamed against the same epoch "
                             "from the rows prepared in memory (from --path, else tiled "
                             "MNIST), on each compiled backend")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--table-rows", type=lambda s: [int(r) for r in s.split(",")],
                        default=[600_000, 2_400_000])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))
    if args.epoch_ratio:
        return epoch_ratio(args)
    return table(args) if args.table else scale_test(args)


if __name__ == "__main__":
    main()
