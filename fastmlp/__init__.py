"""fastmlp: fast CPU training of multi-layer perceptrons behind a scikit-learn estimator."""

from .backends import available_backends, get_backend
from .datasets import load_idx, load_mnist
from .estimator import FastMLP
from .regressor import FastMLPRegressor

__version__ = "0.1.0"

__all__ = ["FastMLP", "FastMLPRegressor", "load_mnist", "load_idx", "get_backend",
           "available_backends", "__version__"]
