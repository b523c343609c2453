"""fastmlp: fast CPU training of multi-layer perceptrons behind a scikit-learn estimator.

The public names are imported when first used (PEP 562): ``import fastmlp`` alone
imports neither scikit-learn nor a backend, so a command can start work (reading its
data, for one) while the estimators' modules import.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> the submodule that defines it
_PUBLIC = {
    "FastMLP": "estimator",
    "FastMLPRegressor": "regressor",
    "load_mnist": "datasets",
    "load_idx": "datasets",
    "get_backend": "backends",
    "available_backends": "backends",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__():
    return sorted({*globals(), *__all__})
