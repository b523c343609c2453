"""What the tests of the training features (AdamW, max-norm, dropout) share."""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning


def fit_quietly(model, X, y):
    """model.fit(X, y), short runs' ConvergenceWarning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def three_classes(n, d, seed=0):
    """n rows of d standard-normal float32 features, and three classes drawn from three
    of them."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)


def skip_unless_thread_invariant(backend_name):
    """Skip unless the backend promises the same bits at any thread count (its
    THREAD_INVARIANT): numpy's BLAS and numba's blocked products sum by the thread count,
    so a feature can only keep a promise the backend makes."""
    import pytest

    from fastmlp.backends import get_backend

    if not get_backend(backend_name).THREAD_INVARIANT:
        pytest.skip(f"{backend_name}'s sums depend on the thread count (THREAD_INVARIANT)")
