import os

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
