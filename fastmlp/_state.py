"""What a fitted FastMLP holds, declared once.

``FITTED`` lists every attribute that fitting creates, with its kind, where a model file
keeps it and whether undoing an epoch restores it. The three mechanisms that copy a
fitted model read this table instead of keeping lists of their own:

- undoing an epoch (Ctrl-C, divergence): ``take_snapshot`` and ``restore_snapshot`` copy
  the entries marked ``undo``;
- model files (fastmlp/persistence.py): every entry with an ``array`` or a ``meta``
  location is written and read by the codec of its kind;
- pickling (``FastMLP.__getstate__`` and ``__setstate__``): entries of kind DERIVED are
  left out and rebuilt, and the arrays that training writes in place get writable copies.

Adding a fitted attribute is one more row here (a new kind also needs its codec in
persistence.py); tests/test_state.py checks that a fit creates exactly the declared
attributes and that each mechanism round-trips every one of them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Kind(enum.Enum):
    """What sort of value a fitted attribute is: decides how it is copied and stored."""

    PARAMETERS = "the flat parameter vector (coefs_ and intercepts_ are views into it)"
    LAYER_SIZES = "the layer widths, input to output, as int64"
    LABELS = "the class labels, numbers, booleans or strings"
    OPTIMIZER = "the optimizer's state object, rebuilt from the estimator's parameters"
    OPTIMIZER_ARRAY = "a moment of the optimizer, in the parameter layout"
    OPTIMIZER_SCALAR = "the optimizer's step count or current learning rate"
    RNG = "the random generator of the shuffles and of the validation split"
    ACTIVATION = "the activation code trained with (a model file holds its name)"
    SCALAR = "a number, a string or None"
    CURVE = "a list of floats, one per epoch"
    FEATURE_NAMES = "the column names of the X seen in fit"
    DERIVED = "rebuilt from the parameter vector, never stored"


@dataclass(frozen=True)
class Fitted:
    """One fitted attribute.

    Parameters
    ----------
    name : str
        Attribute of the estimator; ``"_optimizer.m"`` names an attribute of the
        estimator's ``_optimizer``.
    kind : Kind
    array : str or None
        Name of the array that holds it in a model file.
    meta : str or None
        Where the model file's JSON metadata holds it (or, for arrays, what describes the
        array), as a dotted path: ``"fitted.n_iter_"`` is ``metadata["fitted"]["n_iter_"]``.
    undo : bool
        Restored when an interrupted or diverged epoch is undone.
    optional : bool
        Absent from some fitted models (and then from their files).
    nullable : bool
        None on some fitted models (a None list is left out of model files).
    type : type or None
        What a scalar read from a model file is converted to.
    """

    name: str
    kind: Kind
    array: str | None = None
    meta: str | None = None
    undo: bool = False
    optional: bool = False
    nullable: bool = False
    type: type | None = None

    @property
    def required_in_file(self) -> bool:
        """Whether a model file without this entry's array is refused."""
        # a file without the generator's state still loads: the generator is then seeded
        # anew from random_state
        return (self.array is not None and not (self.optional or self.nullable)
                and self.kind is not Kind.RNG)


# The order is the order of the arrays in a model file, and of reading: the parameter
# vector and the layer sizes come before what is checked against them, and the optimizer
# object before its arrays and scalars.
FITTED = (
    Fitted("_params", Kind.PARAMETERS, array="params", meta="dtype", undo=True),
    Fitted("_layer_sizes", Kind.LAYER_SIZES, array="layer_sizes"),
    # classifiers only
    Fitted("classes_", Kind.LABELS, array="classes", meta="classes_kind", optional=True),
    Fitted("loss_curve_", Kind.CURVE, array="loss_curve", undo=True),
    Fitted("_optimizer", Kind.OPTIMIZER),
    Fitted("_optimizer.m", Kind.OPTIMIZER_ARRAY, array="opt_m", undo=True),
    Fitted("_optimizer.v", Kind.OPTIMIZER_ARRAY, array="opt_v", undo=True),
    Fitted("validation_scores_", Kind.CURVE, array="validation_scores", undo=True,
           nullable=True),
    Fitted("eval_scores_", Kind.CURVE, array="eval_scores", undo=True, optional=True),
    Fitted("feature_names_in_", Kind.FEATURE_NAMES, array="feature_names", optional=True),
    Fitted("_random_state", Kind.RNG, array="rng_keys", meta="rng"),
    # classifiers only; added to format 1 after its first files, which load without it
    Fitted("train_scores_", Kind.CURVE, array="train_scores", undo=True, optional=True),
    Fitted("_optimizer.t", Kind.OPTIMIZER_SCALAR, meta="optimizer.t", undo=True, type=int),
    Fitted("_optimizer.learning_rate", Kind.OPTIMIZER_SCALAR, meta="optimizer.learning_rate",
           undo=True, type=float),
    Fitted("_activation_code", Kind.ACTIVATION, meta="activation"),
    # loss_ is absent until an epoch completes
    Fitted("n_iter_", Kind.SCALAR, meta="fitted.n_iter_", undo=True),
    Fitted("t_", Kind.SCALAR, meta="fitted.t_", undo=True),
    Fitted("loss_", Kind.SCALAR, meta="fitted.loss_", undo=True, optional=True),
    Fitted("best_loss_", Kind.SCALAR, meta="fitted.best_loss_", undo=True, nullable=True),
    Fitted("best_validation_score_", Kind.SCALAR, meta="fitted.best_validation_score_",
           undo=True, nullable=True),
    Fitted("n_features_in_", Kind.SCALAR, meta="fitted.n_features_in_"),
    Fitted("n_layers_", Kind.SCALAR, meta="fitted.n_layers_"),
    Fitted("n_outputs_", Kind.SCALAR, meta="fitted.n_outputs_"),
    Fitted("out_activation_", Kind.SCALAR, meta="fitted.out_activation_"),
    Fitted("backend_", Kind.SCALAR, meta="fitted.backend_"),
    Fitted("_no_improvement_count", Kind.SCALAR, meta="fitted._no_improvement_count",
           undo=True),
    Fitted("coefs_", Kind.DERIVED),
    Fitted("intercepts_", Kind.DERIVED),
    Fitted("_grads", Kind.DERIVED),
)

# arrays that the kernels write in place: an undo writes them back in place (coefs_ and
# intercepts_ stay views), and unpickling gives each a writable copy of its own
TRAINED_IN_PLACE = (Kind.PARAMETERS, Kind.OPTIMIZER_ARRAY)
MISSING = object()  # the value of an absent attribute, in snapshots and in model files


def attribute_names(entries=FITTED) -> set[str]:
    """Names of the estimator attributes that ``entries`` live in (``_optimizer`` for
    ``_optimizer.m``)."""
    return {entry.name.split(".")[0] for entry in entries}


def get_value(obj, name):
    """The attribute at the dotted path ``name``, or MISSING."""
    for part in name.split("."):
        obj = getattr(obj, part, MISSING)
        if obj is MISSING:
            break
    return obj


def set_value(obj, name, value):
    """Set the attribute at the dotted path ``name``; MISSING deletes it."""
    *parents, last = name.split(".")
    for part in parents:
        obj = getattr(obj, part)
    if value is not MISSING:
        setattr(obj, last, value)
    elif hasattr(obj, last):
        delattr(obj, last)


# --------------------------------------------------------------------- undoing an epoch


# Models whose parameters take at least this many bytes keep no copy of the optimizer's
# moments for an undo: undoing an epoch restores their weights and restarts the moments
# from zero (with the step count), which spares two copies of the model (100 MB for a
# 100,000-128-20 text model) at every epoch. Smaller models are undone exactly.
UNDO_MOMENTS_BELOW = 16 * 2**20
RESTART = object()  # the snapshot's value of moments that an undo restarts


def take_snapshot(est) -> dict:
    """Copies of what an epoch changes, so that an interrupted or diverged epoch can be
    undone by ``restore_snapshot`` (see UNDO_MOMENTS_BELOW)."""
    snapshot = {}
    large = est._params.nbytes >= UNDO_MOMENTS_BELOW
    for entry in FITTED:
        if entry.undo:
            value = get_value(est, entry.name)
            if large and entry.kind is Kind.OPTIMIZER_ARRAY:
                value = RESTART
            elif isinstance(value, (np.ndarray, list)):
                value = value.copy()
            snapshot[entry.name] = value
    return snapshot


def restore_snapshot(est, snapshot: dict) -> None:
    """Put back what ``take_snapshot`` copied; an attribute absent then is absent again.
    Moments it did not copy restart from zero, and the optimizer's step count with them."""
    restarted = False
    for entry in FITTED:
        if not entry.undo:
            continue
        value = snapshot[entry.name]
        if value is RESTART:
            get_value(est, entry.name)[...] = 0
            restarted = True
        elif entry.kind in TRAINED_IN_PLACE:
            get_value(est, entry.name)[...] = value
        else:
            set_value(est, entry.name, value)
    if restarted:
        est._optimizer.t = 0


# ---------------------------------------------------------------------------- pickling


def pickle_state(state: dict) -> dict:
    """The estimator's ``__dict__`` without what unpickling rebuilds."""
    derived = attribute_names(e for e in FITTED if e.kind is Kind.DERIVED)
    return {name: value for name, value in state.items() if name not in derived}


def own_trained_arrays(est) -> None:
    """Give each array the kernels write in place a writable C-contiguous copy.

    A model loaded from a read-only memory map (joblib's ``mmap_mode``) could not train
    further otherwise, and compiled backends treat a read-only array as a different type
    (compiled again, summing differently)."""
    for entry in FITTED:
        if entry.kind in TRAINED_IN_PLACE:
            value = get_value(est, entry.name)
            if value is not MISSING:
                set_value(est, entry.name, np.array(value, copy=True, order="C"))
