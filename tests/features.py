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
