"""Train multi-layer perceptrons on MNIST-style data, and inspect and time fastmlp's
backends. "fastmlp COMMAND --help" shows a command's options."""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _hidden_sizes(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 128 or 256,128; got {text!r}"
        ) from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = np.nan
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _rate(text: str) -> float:
    value = _non_negative_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text!r}")
    return value


def _load_train_data(args):
    """(X_train, y_train, X_test, y_test, input_scale) for ``fastmlp train``."""
    from .datasets import load_mnist

    if args.data is not None and Path(args.data).is_file():
        # digits written by fastmlp.datasets.write_deformed_mnist, read from the file's
        # memory map as uint8 and scaled to [0, 1] as MNIST is (input_scale: no float
        # copy), tested on MNIST's test set, given the same way
        from .deformed import load_deformed_mnist

        X_train, y_train = load_deformed_mnist(args.data)
        _, (X_test, y_test) = load_mnist(raw=True)
        return X_train, y_train, X_test.reshape(X_test.shape[0], -1), y_test, 1.0 / 255.0
    (X_train, y_train), (X_test, y_test) = load_mnist(args.data)
    return X_train, y_train, X_test, y_test, None


def cmd_train(args) -> int:
    from .backends import backend_names

    if args.backend not in ("auto", *backend_names()):
        print(f"fastmlp train: unknown backend {args.backend!r}; choose from auto, "
              + ", ".join(backend_names()), file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--plot needs matplotlib, which is not installed; install it "
                              "with pip install 'fastmlp[plot]'") from None
    # the data read on a thread (decompression and NumPy's conversion release the GIL)
    # while scikit-learn imports; result() raises what the reading raised
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastmlp-load") as pool:
        data = pool.submit(_load_train_data, args)
        from .estimator import FastMLP

        X_train, y_train, X_test, y_test, input_scale = data.result()
    clf = FastMLP(
        hidden_layer_sizes=args.hidden,
        solver=args.solver,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        max_norm=args.max_norm,
        batch_size=args.batch_size,
        learning_rate_init=args.lr,
        learning_rate=args.schedule,
        max_iter=args.epochs,
        n_iter_no_change=args.epochs + 1,  # run exactly --epochs epochs
        random_state=args.seed,
        backend=args.backend,
        n_jobs=args.threads,
        dtype=args.dtype,
        input_scale=input_scale,
        verbose=True,
    )
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    start = time.perf_counter()
    with warnings.catch_warnings():
        # Stopping after --epochs epochs is what was asked for, not a failure to converge.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y_train, eval_set=(X_test, y_test))
    elapsed = time.perf_counter() - start
    print(f"Training completed in {elapsed:.2f} seconds")
    if args.plot:
        plot_curves(args.plot, clf)
        print(f"Curves written to {args.plot}")
    if args.save:
        clf.save(args.save)
        print(f"Model saved to {args.save}")
    return 0


def plot_curves(path, clf) -> None:
    """A PNG of the fit's per-epoch curves: the training loss, and the training and test
    accuracy (``train_scores_``, ``eval_scores_``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(clf.loss_curve_) + 1)
    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    loss.plot(epochs, clf.loss_curve_, marker="o", label="train")
    loss.set(xlabel="epoch", ylabel="loss (cross-entropy + L2)", title="Loss")
    accuracy.plot(epochs, [100 * a for a in clf.train_scores_], marker="o", label="train")
    accuracy.plot(epochs, [100 * a for a in clf.eval_scores_], marker="o", label="test")
    accuracy.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (loss, accuracy):
        ax.legend()
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_deform(args) -> int:
    from .deformed import write_deformed_mnist

    path, labels = write_deformed_mnist(args.path, args.rows, random_state=args.seed)
    print(f"wrote {args.rows} digits to {path} and their labels to {labels}")
    return 0


def cmd_info(args) -> int:
    from . import __version__
    from .backends import (
        AUTO_REASONS,
        RUN_TIME_COMPILED,
        auto_candidates,
        backend_status,
        get_backend,
        jit_cache,
    )
    from .threads import blas_info, cpu_count, default_threads

    print(f"fastmlp {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}, {cpu_count()} CPUs")
    threads, why = default_threads()
    print(f"default threads (n_jobs=None): {threads}, set by {why}"
          + ("; fits on numba and cython may drop to one thread while other processes keep "
             "a core busy, and the numpy backend's epochs run on one (its results follow "
             "its thread count)" if threads > 1 else ""))
    import sklearn
    import threadpoolctl

    versions = [f"numpy {np.__version__}", f"scikit-learn {sklearn.__version__}",
                f"threadpoolctl {threadpoolctl.__version__}"]
    print("libraries: " + ", ".join(versions))
    print("backends:")
    status = backend_status()
    picks = {dtype: next((name for name in auto_candidates(dtype) if status.get(name) is None),
                         None) for dtype in ("float32", "float64")}
    for name, why in status.items():
        mark = "available" if why is None else f"not available ({why})"
        chosen = "  <- auto" if name == picks["float32"] else ""
        print(f"  {name:8s} {mark}{chosen}")
    for dtype, auto in picks.items():
        if auto is not None:
            print(f"auto picks {auto} for {dtype}: "
                  f"{AUTO_REASONS.get(auto, 'the first available')}")
    for name in sorted(RUN_TIME_COMPILED):
        if status.get(name) is None:
            states = ", ".join(f"{dtype} {jit_cache.state(name, dtype)}"
                               for dtype in ("float32", "float64"))
            print(f"{name} kernels: {states} (compiled code in {jit_cache.code_dir()}; "
                  "`fastmlp warmup` compiles them now; background compiles "
                  f"{'on' if jit_cache.background_enabled() else 'off'}, "
                  "FASTMLP_BACKGROUND_COMPILE)")
    for name, why in status.items():
        # what each loaded backend says of itself (an optional part of the contract)
        describe = getattr(get_backend(name), "describe", None) if why is None else None
        if describe is not None:
            print(f"{name}: {describe()}")
    for entry in blas_info():
        print(f"BLAS: {entry['internal_api']} {entry['version']}, {entry['num_threads']} threads,"
              f" threading {entry['threading_layer']}, core {entry['architecture']}")
    return 0


def cmd_warmup(args) -> int:
    from .backends import RUN_TIME_COMPILED, jit_cache
    from .warmup import warm_up

    dtypes = ("float32", "float64") if args.dtype == "all" else (args.dtype,)
    for name in sorted(RUN_TIME_COMPILED):
        for dtype in dtypes:
            # wait for a background compile of the same kernels rather than race it
            with jit_cache.compile_lock(name, dtype, wait=True):
                if jit_cache.ready(name, dtype):
                    print(f"{name} {dtype}: already compiled ({jit_cache.code_dir()})")
                    continue
                seconds = warm_up(name, dtype, progress=print)
                print(f"{name} {dtype}: compiled in {seconds:.1f} s, cached in "
                      f"{jit_cache.code_dir()}")
    return 0


def cmd_compare(args) -> int:
    from .compare import main as compare_main

    return compare_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastmlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train an MLP on MNIST (or IDX data) and report accuracy",
        description="Train an MLP on MNIST (or any MNIST-style IDX data) with FastMLP, "
                    "printing the loss and the training and test accuracy after every "
                    "epoch.")
    train.add_argument("--hidden", type=_hidden_sizes, default=(128,),
                       help="hidden layer sizes, comma separated (default 128; 'none' for none)")
    train.add_argument("--epochs", type=_positive_int, default=5, help="epochs (default 5)")
    train.add_argument("--batch-size", type=_positive_int, default=64,
                       help="mini-batch size (default 64)")
    # the defaults were chosen by measuring test accuracy over seeds (docs/performance.md)
    train.add_argument("--lr", type=_positive_float, default=4e-3,
                       help="initial learning rate (default 4e-3)")
    train.add_argument("--schedule", choices=("cosine", "linear", "constant"), default="cosine",
                       help="learning-rate decay over the epochs, applied before every "
                            "mini-batch (default cosine)")
    train.add_argument("--solver", choices=("adam", "sgd", "adamw"), default="adam",
                       help="optimizer (default adam); adamw is Adam with decoupled weight "
                            "decay")
    train.add_argument("--weight-decay", type=_non_negative_float, default=0.01,
                       help="adamw's decoupled weight decay (default 0.01)")
    train.add_argument("--dropout", type=_rate, default=0.0,
                       help="rate at which the hidden units are dropped during training "
                            "(default 0: none)")
    train.add_argument("--max-norm", type=_positive_float, default=None,
                       help="bound on each unit's incoming weight norm (default: none)")
    train.add_argument("--backend", default="auto", help="kernel backend (default auto)")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="threads for kernels and BLAS (default: library defaults)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="floating-point type of the weights and arithmetic (default "
                            "float32)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--data", default=None,
                       help="folder with the four MNIST-style IDX files (default: bundled "
                            "MNIST), or a .npy file of deformed digits from fastmlp deform "
                            "(then tested on MNIST's test set)")
    train.add_argument("--save", default=None,
                       help="write the trained model to this file (fastmlp's .npz model "
                            "format; read it with FastMLP.load)")
    train.add_argument("--plot", metavar="PATH", default=None,
                       help="write the per-epoch loss and accuracy curves (train and test) "
                            "as a PNG (needs matplotlib: pip install 'fastmlp[plot]')")
    train.set_defaults(func=cmd_train)

    deform = sub.add_parser(
        "deform", help="write deformed MNIST training digits (elastic distortion, rotation, "
                       "shift) to a uint8 .npy file and their labels beside it, for "
                       "fastmlp train --data",
        description="Write deformed copies of MNIST's training digits (elastic "
                    "distortion, rotation, shift) to a uint8 .npy file, and their labels "
                    "to NAME.labels.npy beside it; fastmlp train --data NAME.npy trains "
                    "on them.")
    deform.add_argument("path", help="the .npy file to write (labels: NAME.labels.npy)")
    deform.add_argument("--rows", type=int, required=True, help="how many digits")
    deform.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    deform.set_defaults(func=cmd_deform)

    info = sub.add_parser(
        "info", help="version, backends, threads and BLAS",
        description="Show fastmlp's version, its backends and which one auto picks, the "
                    "default thread count and what set it, and the BLAS in use.")
    info.set_defaults(func=cmd_info)

    warmup = sub.add_parser(
        "warmup", help="compile the numba backend's kernels now, with progress (auto uses "
                       "numba only once they are compiled; otherwise a fit starts their "
                       "compile in the background)",
        description="Compile the numba backend's kernels now, with progress, into the "
                    "cache every later process reads. Until they are compiled, "
                    "backend='auto' uses another backend and a fit starts their compile "
                    "in the background.")
    warmup.add_argument("--dtype", choices=("float32", "float64", "all"), default="float32",
                        help="the kernels of which dtype (default float32)")
    warmup.set_defaults(func=cmd_warmup)

    compare = sub.add_parser(
        "compare", help="every kernel on every backend, and the MNIST fit against "
                        "scikit-learn (and PyTorch when installed)",
        description="Time every kernel on every backend, and the MNIST fit against "
                    "scikit-learn's MLPClassifier (and PyTorch when installed), at one "
                    "thread and at the larger thread count.")
    compare.add_argument("--quick", action="store_true",
                         help="float32, batches 64 and 256, a 10,000-row epoch and a 1-epoch "
                              "fit: well under a minute once kernels are compiled")
    compare.add_argument("--json", metavar="PATH", help="write every row, with the machine, "
                         "thread counts and library versions, as JSON")
    compare.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (needs "
                         "matplotlib: pip install 'fastmlp[plot]')")
    compare.add_argument("--shapes", action="store_true",
                         help="the network-shape grid instead: every backend, auto and "
                              "(when installed) PyTorch on 784-128-10, 784-512-512-10, "
                              "784-1024-10 and 784-256-256-256-256-10, with GFLOP/s (with "
                              "--quick: 2,000 rows, one fit each)")
    compare.add_argument("--text", action="store_true",
                         help="the text problem instead: 11,000 x 100,000 TF-IDF rows as a "
                              "SciPy sparse matrix, 100,000-128-20, 2 epochs; every backend "
                              "(exact and lazy Adam), MLPClassifier, PyTorch with sparse "
                              "input when installed, and a linear model (with --quick: "
                              "1,000 x 5,000)")
    compare.add_argument("--threads", type=int, default=None,
                         help="the larger thread count (default: all CPUs); rows are also "
                              "measured at 1 thread")
    compare.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside this try
        return code
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"fastmlp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader of the output went away (`fastmlp info | head -1`): stop quietly,
        # with stdout pointed at nothing so that Python's own flush at exit cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run(argv=None) -> int:
    """The ``fastmlp`` command: ``main``, then the end of the process without the cyclic
    garbage collector's walk over every object that scikit-learn, SciPy and the data
    left, which at the interpreter's exit costs a short command a noticeable part of its
    time. Frozen objects are still freed by their reference counts; only a cycle's memory is
    left to the operating system, which takes the whole process back a moment later."""
    code = main(argv)
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(run())
