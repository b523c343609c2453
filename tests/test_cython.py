"""What is particular to the compiled extension: thread-count independence, no numba in
its path, and an installation without it."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP
from fastmlp.backends import available_backends

ROOT = Path(__file__).resolve().parents[1]
needs_cython = pytest.mark.skipif("cython" not in available_backends(),
                                  reason="cython extension not built")


def _data(seed=0, n=400, d=30, k=4):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d)).astype(np.float32)
    X[X < 0.5] = 0  # sparse rows, as the first layer is built for
    return X, rng.integers(0, k, n)


@needs_cython
@pytest.mark.parametrize("hidden", [(), (16,), (24, 8)], ids=["none", "one", "two"])
def test_weights_do_not_depend_on_the_thread_count(hidden):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = [FastMLP(hidden_layer_sizes=hidden, max_iter=3, random_state=0, n_jobs=n,
                        backend="cython").fit(X, y) for n in (1, 2)]
    np.testing.assert_array_equal(fits[0]._params, fits[1]._params)
    assert fits[0].loss_ == fits[1].loss_


@needs_cython
def test_cython_path_never_imports_numba():
    script = ("import sys, warnings, numpy as np\n"
              "warnings.simplefilter('ignore')\n"
              "from fastmlp import FastMLP\n"
              "X = np.random.default_rng(0).random((60, 5))\n"
              "c = FastMLP(max_iter=2, backend='cython').fit(X, np.arange(60) % 3)\n"
              "c.predict(X)\n"
              "print('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


@needs_cython
def test_reports_its_threads_and_restores_them():
    from fastmlp.backends import cython_backend

    assert isinstance(cython_backend.OPENMP, bool)
    before = cython_backend.max_threads()
    assert before >= 1
    with pytest.raises(RuntimeError):
        with cython_backend.thread_limit(1):
            assert cython_backend.max_threads() == 1
            raise RuntimeError("inside")
    assert cython_backend.max_threads() == before


@pytest.mark.exhaustive  # a whole pip install: half a minute
@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_install_without_the_extension(tmp_path):
    """FASTMLP_CYTHON=0 installs the pure-Python package: numpy and numba still work,
    auto falls back to what needs no compile, and asking for cython explains how to
    build it."""
    target = tmp_path / "site"
    env = dict(os.environ, FASTMLP_CYTHON="0")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(ROOT)], env=env, check=True,
                   capture_output=True, text=True)
    assert not list(target.glob("fastmlp/backends/_cykernels*"))
    script = (
        "import warnings, numpy as np\n"
        "warnings.simplefilter('ignore')\n"
        "import fastmlp\n"
        "from fastmlp import FastMLP\n"
        "from fastmlp.backends import available_backends\n"
        "assert fastmlp.__file__.startswith(%r), fastmlp.__file__\n"
        "X = np.random.default_rng(0).random((60, 5)).astype(np.float32)\n"
        "y = np.arange(60) %% 3\n"
        "for name in ('numpy', 'numba'):\n"
        "    assert FastMLP(max_iter=2, backend=name).fit(X, y).score(X, y) > 0.2\n"
        "print(FastMLP(max_iter=1).fit(X, y).backend_)\n"
        "print(','.join(available_backends()))\n"
        "try:\n"
        "    FastMLP(backend='cython').fit(X, y)\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    ) % str(target)
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    # numba's kernels are not marked compiled for this installation (a fit asked for
    # numba by name compiles them, but only a warm-up covers every path): auto takes the
    # next backend that compiles nothing, numpy here
    assert out[0] == "numpy"
    assert out[1] == "numpy,numba"
    # the compiled code went to the user's cache, never into the installed package
    assert not list(target.rglob("*.nbi")) and not list(target.rglob("*.nbc"))
    assert out[2].startswith("ImportError: fastmlp backend 'cython' is not available")
    assert "FASTMLP_CYTHON=1 pip install" in out[2]


@needs_cython
def test_the_prediction_kernel_refuses_arrays_that_do_not_fit():
    # the extension's predict_proba takes its arrays through the buffer protocol, not as
    # typed memoryviews: it checks their dtype, dimensions and shapes itself
    from fastmlp.backends import _cykernels as k
    from fastmlp.backends.cython_backend import _predict_layout

    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = FastMLP(hidden_layer_sizes=(16,), max_iter=2, random_state=0,
                      backend="cython").fit(X, y)
    layout, width = _predict_layout(tuple(clf._layer_sizes.tolist()))
    params = clf._params
    out = np.empty((5, 4), np.float32)
    act = clf._activation_code
    k.predict_proba(out, X[:5], params, layout, width, act, False)
    np.testing.assert_array_equal(out, clf.predict_proba(X[:5]))
    bad_calls = {
        "X": (out, X[:5].astype(np.float64), params, layout),
        "out": (out.astype(np.float64), X[:5], params, layout),
        "layout": (out, X[:5], params, layout.astype(np.int32)),
        "read-only out": (np.empty((5, 4), np.float32)[::1].view(), X[:5], params, layout),
        "shapes": (np.empty((5, 3), np.float32), X[:5], params, layout),
        "columns": (out, np.ascontiguousarray(X[:5, :-1]), params, layout),
        "params": (out, X[:5], params[:-1], layout),
        "layout size": (out, X[:5], params, layout[:-1]),
    }
    bad_calls["read-only out"][0].flags.writeable = False
    for o, x, p, lay in bad_calls.values():
        with pytest.raises(ValueError):
            k.predict_proba(o, x, p, lay, width, act, False)
