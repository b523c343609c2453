import os
import subprocess
import sys
import time

import numpy as np
import pytest

from fastmlp.backends import REFERENCE, backend_names, backend_status, get_backend

# Tolerances for comparing a backend's kernels against the NumPy reference, defined once.
# float32 products of a few hundred terms differ by summation order at about 1e-6 relative.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-5},
    np.dtype(np.float64): {"rtol": 1e-9, "atol": 1e-11},
}

# The suite compiles numba's kernels in its own process where a test asks for them; no
# fit of it starts a background compile (tests of that switch it on themselves).
os.environ.setdefault("FASTMLP_BACKGROUND_COMPILE", "0")

# A comma-separated list of backends that must be present: CI sets it so that a backend
# that failed to build fails the run instead of being skipped.
_REQUIRED = [b for b in os.environ.get("FASTMLP_REQUIRE_BACKENDS", "").split(",") if b]


def pytest_configure(config):
    status = backend_status()
    missing = [f"{name}: {status.get(name, 'unknown backend')}" for name in _REQUIRED
               if status.get(name, "unknown") is not None]
    if missing:
        raise pytest.UsageError("required backends are missing: " + "; ".join(missing))


# ---------------------------------------------------------------- numba's first compile
#
# In a fresh environment numba's kernels compile on first use, for minutes, which the
# suite would otherwise spend waiting. So the quick suite (1) runs numba's float32 cases
# only: its float64 cases are exhaustive (CI runs them), (2) runs the numba cases last,
# and (3) compiles numba's float32 kernels in the background while the other cases run,
# with the product's own warm-up (python -m fastmlp.warmup --background), and waits for
# it before the first numba case. A second run finds them compiled and starts nothing.
# The standalone kernels that `fastmlp compare` times, and the epoch's helpers that
# tests call on their own (no fit compiles them as entry points), compile in a second
# process during that wait, on the core the other cases leave free.

_NUMBA_WARMUP = {"started": False, "waited": False}

_COMPILE_COMPARE_KERNELS = """
import numpy as np
from fastmlp import compare
from fastmlp.backends import get_backend, jit_cache
from fastmlp.backends.codes import RELU
jit_cache.lower_priority()
rng = np.random.default_rng(0)
X = rng.random((256, 784), dtype=np.float32)
backend = get_backend("numba")
for case in compare.kernel_cases(X, np.arange(256) % 10, X[:8], batches=(64,),
                                 dtypes=("float32",)):
    if case.kernel not in ("train_epoch", "predict_proba"):  # the warm-up compiles these
        case.make(backend)[0]()
z = rng.random((6, 11), dtype=np.float32)
backend.activation_backward(z.copy(), z, RELU)
# the dense first layer's blocks and row paths, as tests/test_dense_rows.py calls them
from fastmlp.backends.numba_backend import epoch
U = np.uint64
f = rng.random(400, dtype=np.float32)
idx = np.tile(np.arange(5, dtype=np.int32), 8)
ptr = np.arange(0, 45, 5, dtype=np.int64)
rows = np.arange(6, dtype=np.int64)
epoch._first_layer_dense_rows(f.copy(), U(0), U(16), f, U(0), U(0), f, idx, ptr, rows, RELU)
epoch._first_layer_row_f(f.copy(), U(0), f, U(0), U(0), U(16), f, idx, U(0), U(5))
epoch.activate_f(f.copy(), U(0), U(16), RELU)
epoch._first_layer_dense_grads(f.copy(), U(0), U(16), U(5), f, ptr, rows, f, U(0), U(16))
epoch.scatter_rows_f(f.copy(), U(0), U(16), f, idx, ptr[0], ptr[1], f, U(0), U(16),
                     np.empty(64, dtype=np.float32))
"""
WARMUP_WAIT = 900.0


def _uses_numba(item):
    # "numba" in the name or the parameters, or the marker
    in_name = "numba" in item.name or item.get_closest_marker("numba") is not None
    module = getattr(item, "module", None)
    return in_name or (module is not None
                       and module.__name__.rsplit(".", 1)[-1] in _NUMBA_MODULES)


# modules whose cases run numba's kernels (or load or compile them, test_compile_cache), or
# see how busy the machine is (the thread tests), which the compile would make it
_NUMBA_MODULES = {"test_adaptive_team", "test_blas", "test_compile_cache",
                  "test_default_threads", "test_first_layer_columns", "test_nonzero_places",
                  "test_predict_panels", "test_threads"}


def _float64(item):
    if item.get_closest_marker("float64") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False

    def is_f64(value):
        try:
            return isinstance(value, (str, type, np.dtype)) and np.dtype(value) == np.float64
        except (TypeError, ValueError):
            return False

    return "float64" in item.name or any(is_f64(v) for v in callspec.params.values())


def _reference_case(item):
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend_name") == REFERENCE


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _uses_numba(item) and _float64(item):
            item.add_marker(pytest.mark.exhaustive)
        # a whole-process or whole-MNIST check that the compiled backends need and the
        # reference, whose kernels every other test checks, repeats at length
        if item.get_closest_marker("reference_exhaustive") and _reference_case(item):
            item.add_marker(pytest.mark.exhaustive)
    items.sort(key=_uses_numba)  # stable: the numba cases last, in their order


def pytest_collection_finish(session):
    from fastmlp.backends import jit_cache

    if (backend_status().get("numba") is not None or jit_cache.jit_disabled()
            or not any(_uses_numba(item) for item in session.items)
            or jit_cache.state("numba", "float32") != "not compiled"):
        return
    env = dict(os.environ, FASTMLP_BACKGROUND_COMPILE="0")
    try:
        log = jit_cache.log_path("numba", "float32")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            subprocess.Popen([sys.executable, "-m", "fastmlp.warmup", "--background",
                              "--backend", "numba", "--dtype", "float32"],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=env)
    except OSError:  # no warm-up: the numba cases compile what they use, as they run
        return
    _NUMBA_WARMUP["started"] = True


def pytest_runtest_setup(item):
    if _NUMBA_WARMUP["started"] and not _NUMBA_WARMUP["waited"] and _uses_numba(item):
        from fastmlp.backends import jit_cache

        kernels = None
        try:  # on the core that the cases before this one kept busy
            kernels = subprocess.Popen(
                [sys.executable, "-c", _COMPILE_COMPARE_KERNELS], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=dict(os.environ, FASTMLP_BACKGROUND_COMPILE="0"))
        except OSError:  # the kernel tests compile them as they run
            pass
        # the warm-up holds this lock while it compiles; give it a moment to take it
        deadline = time.monotonic() + 10
        while (jit_cache.state("numba", "float32") == "not compiled"
               and time.monotonic() < deadline):
            time.sleep(0.2)
        # then until it lets go of the lock, at most WARMUP_WAIT seconds (a warm-up that
        # never ends must not hang the suite: the numba cases would compile themselves)
        deadline = time.monotonic() + WARMUP_WAIT
        while time.monotonic() < deadline:
            with jit_cache.compile_lock("numba", "float32", wait=False) as held:
                if held:
                    break
            time.sleep(0.5)
        if kernels is not None:
            try:
                kernels.wait(max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                kernels.kill()
        _NUMBA_WARMUP["waited"] = True


def _backend_params(names):
    status = backend_status()
    params = []
    for name in names:
        marks = [] if status[name] is None else [pytest.mark.skip(reason=status[name])]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


BACKEND_PARAMS = _backend_params(backend_names())
# every backend but the reference: for tests that compare a backend with the reference,
# which would pass by construction for the reference itself
COMPILED_PARAMS = _backend_params([n for n in backend_names() if n != REFERENCE])


@pytest.fixture(params=BACKEND_PARAMS)
def backend_name(request):
    return request.param


@pytest.fixture
def backend(backend_name):
    return get_backend(backend_name)


@pytest.fixture(params=COMPILED_PARAMS)
def compiled_backend(request):
    """Each backend other than the reference (numpy)."""
    return get_backend(request.param)


@pytest.fixture(scope="session")
def reference():
    return get_backend(REFERENCE)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def tol(dtype):
    return TOLERANCES[dtype]


@pytest.fixture(scope="session")
def mnist():
    from fastmlp import load_mnist

    return load_mnist()


@pytest.fixture(scope="session")
def raw_mnist():
    """MNIST as stored: uint8 pixels, one row of 784 per image; ((X, y), (X_test, y_test))."""
    from fastmlp import load_mnist

    (X, y), (X_test, y_test) = load_mnist(raw=True)
    return (X.reshape(len(X), -1), y), (X_test.reshape(len(X_test), -1), y_test)
