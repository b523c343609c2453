"""The hyperparameters of FastMLP and FastMLPRegressor as a declared table of
constraints, and the checker that applies it, in the spirit of scikit-learn's
``_parameter_constraints``.

``PARAMETER_CONSTRAINTS`` maps each checked parameter to its rule, in the order they are
checked (the first bad parameter is the one reported). A rule is called as
``rule(name, value)``; it raises TypeError for a value of the wrong type and ValueError
for one out of range, both naming the parameter, the value and what is allowed, and
returns the value resolved for training (a code, a dtype, a backend module). The
parameters in ``UNCHECKED`` are taken as given.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .backends import get_backend
from .backends.codes import ACTIVATIONS, ESTIMATOR_SOLVERS

LEARNING_RATES = ("constant", "invscaling", "adaptive", "cosine", "linear")
DTYPES = {"float32": np.float32, "float64": np.float64}


def _is_special(value, specials):
    """Whether value is one of the special values (None, "auto") a rule accepts as they
    are; strings compare by value, anything else by identity."""
    return any(value is s or (isinstance(s, str) and isinstance(value, str) and value == s)
               for s in specials)


@dataclass(frozen=True)
class Interval:
    """A finite number of type ``kind`` (numbers.Integral or numbers.Real; booleans are
    refused) between ``low`` and ``high`` (None: unbounded). ``closed`` says which ends
    belong to the range: "both", "left", "right" or "neither". ``also`` lists special
    values accepted as they are."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    also: tuple = ()

    def __call__(self, name, value):
        if _is_special(value, self.also):
            return value
        if isinstance(value, bool) or not isinstance(value, self.kind):
            what = "an integer" if self.kind is numbers.Integral else "a real number"
            raise TypeError(f"{name} must be {what}, got {value!r}")
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        low_open = self.closed in ("right", "neither")
        high_open = self.closed in ("left", "neither")
        low, high = self.low, self.high
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
            hi = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
            raise ValueError(f"{name} must be in the range {lo}, {hi}; got {value!r}")
        return value


@dataclass(frozen=True)
class Choice:
    """One of the strings of ``options``. A mapping resolves the name to its value (an
    activation to its code); ``name_of`` turns other accepted spellings into a name
    first (the numpy type np.float32 into "float32")."""

    options: Mapping | tuple
    name_of: object = None

    def __call__(self, name, value):
        key = value if self.name_of is None else self.name_of(value)
        if not isinstance(key, str) or key not in self.options:
            raise ValueError(f"{name}={value!r} is not supported; allowed values are "
                             + ", ".join(repr(option) for option in self.options))
        return self.options[key] if isinstance(self.options, Mapping) else key


def _dtype_name(value):
    if isinstance(value, str):
        return value
    # np.dtype("float32") compares equal to np.float32 too
    return np.dtype(value).name if value in (np.float32, np.float64) else repr(value)


def hidden_layer_sizes(name, value):
    """A positive integer, or a sequence of them (possibly empty); resolved to a tuple."""
    sizes = value
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of positive integers, got {value!r}") from None
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
            raise ValueError(f"{name} must contain positive integers, got {value!r}")
    return sizes


def n_jobs(name, value):
    """None, or a non-zero integer (negative counts back from the number of CPUs)."""
    if value is None:
        return None
    Interval(numbers.Integral)(name, value)
    if value == 0:
        raise ValueError(f"{name} must be a positive integer, -1 (all CPUs) or None; got 0")
    return value


def input_scale(name, value):
    """None (no scaling), or a positive finite factor applied to every input as X is
    prepared; 1 is the same as None."""
    if value is None:
        return None
    Interval(numbers.Real, 0.0, None, closed="neither")(name, value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number or None; got {value!r}")
    return None if value == 1 else float(value)


def stream(name, value):
    """"auto", True or False (NumPy's bools too)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value == "auto":
        return value
    raise ValueError(f"{name} must be 'auto', True or False; got {value!r}")


def patience(name, value):
    """A whole number of epochs (at least 1), or infinity (np.inf): never stop for lack
    of improvement, as scikit-learn allows."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value == np.inf:
        return value
    return Interval(numbers.Integral, 1, None, closed="left")(name, value)


def max_norm(name, value):
    """None (no constraint), or the positive finite bound of each unit's incoming weight
    norm."""
    if value is None:
        return None
    return Interval(_Real, 0.0, None, closed="neither")(name, value)


def early_stopping(name, value):
    """A flag (any truthy value holds out a validation split, as in scikit-learn), or
    "eval_set": stop on the scores of the eval_set that fit is given."""
    if isinstance(value, str):
        if value != "eval_set":
            raise ValueError(f"{name} must be True, False or 'eval_set'; got {value!r}")
        return value
    return bool(value)


def scoring(name, value):
    """None (the estimator's own score: accuracy or R^2), a scikit-learn scorer name, or
    a callable ``scorer(estimator, X, y)``; returns the scorer, or None."""
    if value is None:
        return None
    if isinstance(value, str) or callable(value):
        from sklearn.metrics import get_scorer

        try:
            return get_scorer(value)
        except ValueError as exc:
            raise ValueError(f"{name}={value!r} is not a scorer: {exc}") from None
    raise ValueError(f"{name} must be None, a scorer name (such as 'f1_macro') or a callable "
                     f"scorer(estimator, X, y); got {value!r}")


def class_weight(name, value):
    """None, "balanced" or a dict of label -> weight (its labels are checked against the
    classes when fitting)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        return Choice(("balanced",))(name, value)
    raise TypeError(f"{name} must be None, 'balanced' or a dict mapping labels to weights, "
                    f"got {value!r}")


def backend(name, value, dtype="float32"):
    """A backend name, resolved to its module; ``get_backend`` raises for an unknown or
    unavailable one. "auto" is resolved for work of ``dtype`` (the one resolved before
    it in the table)."""
    return get_backend(value, dtype)


_Integral, _Real = numbers.Integral, numbers.Real

PARAMETER_CONSTRAINTS = {
    "hidden_layer_sizes": hidden_layer_sizes,
    "batch_size": Interval(_Integral, 1, None, closed="left", also=("auto",)),
    "alpha": Interval(_Real, 0.0, None, closed="left"),
    "learning_rate_init": Interval(_Real, 0.0, None, closed="neither"),
    "power_t": Interval(_Real, 0.0, None, closed="left"),
    "max_iter": Interval(_Integral, 1, None, closed="left"),
    "tol": Interval(_Real, 0.0, None, closed="left"),
    "n_iter_no_change": patience,
    "momentum": Interval(_Real, 0.0, 1.0, closed="both"),
    "validation_fraction": Interval(_Real, 0.0, 1.0, closed="neither"),
    "beta_1": Interval(_Real, 0.0, 1.0, closed="left"),
    "beta_2": Interval(_Real, 0.0, 1.0, closed="left"),
    "epsilon": Interval(_Real, 0.0, None, closed="neither"),
    "weight_decay": Interval(_Real, 0.0, None, closed="left"),
    "max_norm": max_norm,
    "dropout": Interval(_Real, 0.0, 1.0, closed="left"),
    "max_fun": Interval(_Integral, 1, None, closed="left"),
    "n_jobs": n_jobs,
    "input_scale": input_scale,
    "stream": stream,
    "dtype": Choice(DTYPES, name_of=_dtype_name),
    "activation": Choice(ACTIVATIONS),
    "solver": Choice(ESTIMATOR_SOLVERS),
    "learning_rate": Choice(LEARNING_RATES),
    "loss": Choice(("squared_error", "poisson")),  # FastMLPRegressor's
    "class_weight": class_weight,  # FastMLP's
    "early_stopping": early_stopping,
    "scoring": scoring,
    # last: resolving it imports the backend
    "backend": backend,
}

# flags and seeds: any truthy value is a flag, and random_state is whatever
# sklearn.utils.check_random_state takes
UNCHECKED = ("shuffle", "random_state", "verbose", "warm_start", "nesterovs_momentum")


@dataclass(frozen=True, kw_only=True)
class Resolved:
    """The parameters as training uses them, one field per entry of
    ``PARAMETER_CONSTRAINTS`` (in its order), each what its rule returned. A parameter
    only one estimator has (``loss``, ``class_weight``) is None for the other."""

    hidden_layer_sizes: tuple[int, ...]
    batch_size: int | str  # or "auto"
    alpha: float
    learning_rate_init: float
    power_t: float
    max_iter: int
    tol: float
    n_iter_no_change: int | float  # or np.inf
    momentum: float
    validation_fraction: float
    beta_1: float
    beta_2: float
    epsilon: float
    weight_decay: float
    max_norm: float | None
    dropout: float
    max_fun: int
    n_jobs: int | None
    input_scale: float | None  # None: no scaling (1 resolves to None)
    stream: bool | str  # or "auto"
    dtype: type  # np.float32 or np.float64
    activation: int  # code, see fastmlp/backends/codes.py
    solver: int  # code
    learning_rate: str
    loss: str | None = None  # FastMLPRegressor's
    class_weight: dict | str | None = None  # FastMLP's
    early_stopping: bool | str  # or "eval_set"
    scoring: object  # a scikit-learn scorer, or None (the estimator's score)
    backend: ModuleType  # the backend's module


def validate_params(estimator, constraints=PARAMETER_CONSTRAINTS) -> Resolved:
    """Check each parameter of ``estimator`` against its rule, in the table's order, and
    return the resolved values as a ``Resolved`` record (the table serves both
    estimators: a parameter the estimator does not have is skipped, and left None)."""
    resolved = {}
    for name, rule in constraints.items():
        if not hasattr(estimator, name):
            continue
        if rule is backend:
            resolved[name] = rule(name, getattr(estimator, name),
                                  resolved.get("dtype", "float32"))
        else:
            resolved[name] = rule(name, getattr(estimator, name))
    return Resolved(**resolved)
