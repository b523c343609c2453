"""Model files that cannot run code when loaded: ``save`` and ``load`` of FastMLP and
FastMLPRegressor, given to both (with their pickling) by the ``ModelFiles`` mixin.

Format (version 1): one ``.npz`` archive, read with ``allow_pickle=False``, holding

- ``metadata``: UTF-8 JSON as a uint8 array: ``format`` ("fastmlp.FastMLP", or
  "fastmlp.FastMLPRegressor" for the regressor, whose files have no ``classes``),
  ``format_version`` (1), ``fastmlp_version``, ``dtype``, ``activation``, the estimator's
  parameters (``get_params()``), the fitted scalars (``n_iter_``, ``loss_``, ...), and
  ``classes_kind`` (how to rebuild the labels);
- ``params``: the flat parameter vector (float32 or float64, see
  fastmlp/backends/layout.py), ``layer_sizes`` (int64);
- ``classes``: the labels (numbers, booleans or strings; never objects);
- ``loss_curve`` and, when present, ``validation_scores``, ``eval_scores``,
  ``feature_names``;
- ``opt_m``, ``opt_v``: the optimizer's moments, and ``rng_keys`` with the metadata's
  ``rng`` entry: the shuffling generator's state, so ``partial_fit`` and ``warm_start``
  continue exactly as the saved estimator would have.

Every array is checked against the metadata before an estimator is built from it; a file
that is truncated, corrupted, of another format version, or holding object arrays raises
a ValueError that says which.

Which fitted attribute goes to which array or metadata entry is declared once, in
``fastmlp._state.FITTED``; this module holds the header and one codec per kind of entry.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import zipfile

import numpy as np
from sklearn.utils import check_random_state

from ._state import (
    FITTED,
    MISSING,
    Kind,
    get_value,
    own_trained_arrays,
    pickle_state,
    set_value,
)
from .backends.codes import ACTIVATIONS, ESTIMATOR_SOLVERS, OUTPUTS
from .backends.layout import n_params
from .optim import OptimizerState

FORMAT = "fastmlp.FastMLP"  # the classifier's; the regressor's is "fastmlp.FastMLPRegressor"
ESTIMATORS = ("FastMLP", "FastMLPRegressor")


def format_of(cls):
    """The format name of the files of estimator class ``cls`` (or of a subclass)."""
    for klass in cls.__mro__:
        if klass.__name__ in ESTIMATORS and klass.__module__.startswith("fastmlp."):
            return f"fastmlp.{klass.__name__}"
    raise TypeError(f"{cls.__name__} is not a fastmlp estimator")
FORMAT_VERSION = 1
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}


def _json_safe(value):
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    if isinstance(value, type) and issubclass(value, np.generic):
        return np.dtype(value).name
    raise TypeError(f"{value!r} cannot be stored in a fastmlp model file")


def _estimator_params(est):
    params = {}
    for name, value in est.get_params(deep=False).items():
        if name == "random_state" and not (value is None or isinstance(value, numbers.Integral)):
            value = None  # a RandomState's state is not part of the model
        try:
            params[name] = _json_safe(value)
        except TypeError:
            raise TypeError(f"{name}={value!r} cannot be stored in a fastmlp model file "
                            "(it holds numbers, strings and lists only): set "
                            f"{name} to a plain value before saving, or pickle the "
                            "model") from None
    return params


def _classes_array(classes):
    classes = np.asarray(classes)
    if classes.dtype.kind in "biuf":
        return classes, classes.dtype.kind
    if classes.dtype.kind == "U":
        return classes, "str"
    if classes.dtype.kind == "O" and all(isinstance(c, str) for c in classes):
        return classes.astype(str), "str_object"
    raise TypeError(f"labels of dtype {classes.dtype} ({classes[:3]!r}...) cannot be stored "
                    "without pickle; use numbers or strings as labels, or pickle/joblib")


def _version():
    from . import __version__

    return __version__


def _bad(path, why):
    return ValueError(f"{path} is not a usable fastmlp model file: {why}")


def _meta_get(metadata, where):
    """The metadata entry at the dotted path ``where``, or MISSING if its last part is
    absent (a missing parent raises KeyError: the metadata is incomplete)."""
    *parents, last = where.split(".")
    for part in parents:
        metadata = metadata[part]
    return metadata.get(last, MISSING)


def _meta_put(metadata, where, value):
    *parents, last = where.split(".")
    for part in parents:
        metadata = metadata.setdefault(part, {})
    metadata[last] = value


# ------------------------------------------------------------------ one codec per kind


class _Codec:
    """How the entries of one kind go into a model file and come back into an estimator.

    ``write`` gives (array or None, metadata value or MISSING: nothing to store);
    ``read`` checks what the file holds (None for an absent array, MISSING for an absent
    metadata value) and gives the value (MISSING: leave the attribute unset); ``assign``
    puts it on the new estimator. By default nothing is stored and nothing is set.
    """

    def write(self, entry, value):
        return None, MISSING

    def read(self, entry, array, meta, path):
        return meta

    def assign(self, est, entry, value, path):
        set_value(est, entry.name, value)


class _Scalar(_Codec):
    def write(self, entry, value):
        return None, _json_safe(None if value is MISSING else value)


class _Parameters(_Codec):
    def write(self, entry, value):
        return value, value.dtype.name

    def read(self, entry, params, dtype, path):
        if dtype not in ("float32", "float64") or params.dtype.name != dtype or params.ndim != 1:
            dtype = None if dtype is MISSING else dtype
            raise _bad(path, f"its parameters are {params.dtype} {params.shape}, expected a 1-D "
                             f"{dtype} vector")
        return np.array(params, copy=True)


class _LayerSizes(_Codec):
    def write(self, entry, value):
        return np.asarray(value, dtype=np.int64), MISSING

    def read(self, entry, sizes, meta, path):
        if (sizes.dtype.kind not in "iu" or sizes.ndim != 1 or sizes.size < 2
                or (sizes < 1).any()):
            raise _bad(path, f"its layer sizes {sizes!r} are not positive integers")
        return sizes.astype(np.int64)


class _Labels(_Codec):
    def write(self, entry, value):
        if value is MISSING:  # a regressor
            return None, MISSING
        return _classes_array(value)

    def read(self, entry, classes, kind, path):
        if classes is None:
            return MISSING
        if classes.ndim != 1 or classes.dtype.kind not in "biufU":
            raise _bad(path, f"its classes have dtype {classes.dtype}")
        return classes.astype(object) if kind == "str_object" else classes


class _Curve(_Codec):
    def write(self, entry, value):
        if value is None or value is MISSING:
            return None, MISSING
        return np.asarray(value, dtype=np.float64), MISSING

    def read(self, entry, array, meta, path):
        if array is None:
            return MISSING if entry.optional else None
        return array.tolist()


class _FeatureNames(_Codec):
    def write(self, entry, value):
        return (None if value is MISSING else np.asarray(value, dtype=str)), MISSING

    def read(self, entry, array, meta, path):
        return MISSING if array is None else array.astype(object)


class _Optimizer(_Codec):
    """Not stored: rebuilt from the estimator's parameters, then given the stored arrays
    and scalars (the entries that follow it)."""

    def assign(self, est, entry, value, path):
        # the solver code directly: validating every parameter would also demand that the
        # training backend be available here, which predicting does not need
        solver = ESTIMATOR_SOLVERS.get(est.solver)
        if solver is None:
            raise _bad(path, f"its solver {est.solver!r} is unknown")
        est._optimizer = OptimizerState(solver, est._params.size, est._params.dtype,
                                        est.learning_rate_init, est.learning_rate, est.power_t)


class _OptimizerArray(_Codec):
    def write(self, entry, value):
        return value, MISSING

    def read(self, entry, array, meta, path):
        return array

    def assign(self, est, entry, value, path):
        # empty in the file (or SGD's unused second moment): the zeros it starts with
        target = get_value(est, entry.name)
        if target.size and value.size:
            target[...] = value


class _OptimizerScalar(_Codec):
    def write(self, entry, value):
        return None, entry.type(value)

    def read(self, entry, array, value, path):
        if value is MISSING:
            raise KeyError(entry.meta)
        try:
            return entry.type(value)
        except ValueError:
            raise _bad(path, f"its {entry.meta} is {value!r}, not a {entry.type.__name__}"
                       ) from None


class _Activation(_Codec):
    def write(self, entry, code):
        return None, _ACTIVATION_NAMES[code]

    def read(self, entry, array, name, path):
        if name is MISSING:
            raise KeyError(entry.meta)
        return ACTIVATIONS[name]


class _Rng(_Codec):
    def write(self, entry, rng):
        if not isinstance(rng, np.random.RandomState):
            return None, MISSING
        name, keys, pos, has_gauss, cached = rng.get_state()
        return np.asarray(keys, dtype=np.uint32), {
            "name": name, "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}

    def read(self, entry, keys, rng, path):
        if rng is MISSING or rng is None or keys is None:
            return None  # seeded anew from random_state
        try:
            state = np.random.RandomState()
            state.set_state((rng["name"], keys, rng["pos"], rng["has_gauss"],
                             rng["cached_gaussian"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(path, f"its random generator state is invalid ({exc})") from None
        return state

    def assign(self, est, entry, value, path):
        est._random_state = check_random_state(est.random_state) if value is None else value


class _Derived(_Codec):
    """Not stored: ``FastMLP._rebuild_derived`` makes them once the parameters are set."""

    def assign(self, est, entry, value, path):
        pass


_CODECS = {
    Kind.PARAMETERS: _Parameters(), Kind.LAYER_SIZES: _LayerSizes(), Kind.LABELS: _Labels(),
    Kind.OPTIMIZER: _Optimizer(), Kind.OPTIMIZER_ARRAY: _OptimizerArray(),
    Kind.OPTIMIZER_SCALAR: _OptimizerScalar(), Kind.RNG: _Rng(),
    Kind.ACTIVATION: _Activation(), Kind.SCALAR: _Scalar(), Kind.CURVE: _Curve(),
    Kind.FEATURE_NAMES: _FeatureNames(), Kind.DERIVED: _Derived(),
}


# ---------------------------------------------------------------------------- writing


def save(est, path):
    """Write the fitted estimator to ``path`` (the name is used as given; ``.npz`` is the
    usual extension). The file appears complete or not at all: it is written beside the
    target and renamed into place."""
    if not hasattr(est, "_params"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError("only a fitted FastMLP can be saved; call fit first")
    # the entries in the order files have always had; the codecs fill in the Nones
    metadata = {"format": format_of(type(est)), "format_version": FORMAT_VERSION,
                "fastmlp_version": _version(), "dtype": None, "activation": None,
                "params": _estimator_params(est), "fitted": {}, "classes_kind": None,
                "optimizer": {}}
    arrays = {}
    for entry in FITTED:
        array, meta = _CODECS[entry.kind].write(entry, get_value(est, entry.name))
        if array is not None:
            arrays[entry.array] = array
        if meta is not MISSING:
            _meta_put(metadata, entry.meta, meta)
    metadata_bytes = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    _write_atomically(os.fspath(path), {"metadata": metadata_bytes, **arrays})


def _write_atomically(path, arrays):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---------------------------------------------------------------------------- reading


def load(cls, path):
    """Read a file written by ``save`` and return a fitted estimator of class ``cls``."""
    path = os.fspath(path)
    arrays = _read_archive(path)
    metadata = _read_metadata(path, arrays, format_of(cls))
    missing = [entry.array for entry in FITTED
               if entry.required_in_file and entry.array not in arrays]
    if missing:
        raise _bad(path, f"it lacks the arrays {missing}")
    return _build(cls, path, metadata, arrays)


def _read_archive(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise _bad(path, "it holds a single array, not a model archive")
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise _bad(path, "it holds pickled or object data, which fastmlp never loads "
                             "(it could run code)") from None
        raise _bad(path, str(exc)) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise _bad(path, f"it is truncated or corrupted ({exc})") from None


def _read_metadata(path, arrays, expected):
    try:
        metadata = json.loads(bytes(arrays["metadata"].astype(np.uint8)).decode("utf-8"))
    except KeyError:
        raise _bad(path, "it has no metadata") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"its metadata is not valid JSON ({exc})") from None
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found != expected:
        raise _bad(path, f"its format is {found!r}, not {expected!r}"
                   + (f" (load it with {found[len('fastmlp.'):]}.load)"
                      if found in [f"fastmlp.{name}" for name in ESTIMATORS] else ""))
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(path, f"it is format version {version!r}, and this fastmlp "
                         f"({_version()}) reads version {FORMAT_VERSION}")
    return metadata


def _build(cls, path, metadata, arrays):
    """Check every entry of the file, then make the estimator from them."""
    values = {}
    try:
        for entry in FITTED:
            meta = _meta_get(metadata, entry.meta) if entry.meta else MISSING
            values[entry.name] = _CODECS[entry.kind].read(entry, arrays.get(entry.array),
                                                          meta, path)
        est = cls(**_restore_params(metadata["params"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise _bad(path, f"its metadata is incomplete ({exc!r})") from None
    _check_consistency(path, values)
    for entry in FITTED:
        _CODECS[entry.kind].assign(est, entry, values[entry.name], path)
    est._rebuild_derived()
    return est


def _check_consistency(path, values):
    """What each entry cannot check alone: that the entries fit together."""
    params, sizes, classes = values["_params"], values["_layer_sizes"], values["classes_"]
    if params.size != n_params(sizes):
        raise _bad(path, f"it holds {params.size} parameters, but layers {sizes.tolist()} "
                         f"need {n_params(sizes)}")
    n_out = int(sizes[-1])
    if values["out_activation_"] not in OUTPUTS:
        raise _bad(path, f"its output function {values['out_activation_']!r} is unknown")
    if (values["out_activation_"] in ("softmax", "logistic")) != (classes is not MISSING):
        raise _bad(path, "its classes do not match its output function "
                         f"{values['out_activation_']!r}")
    if classes is not MISSING and len(classes) != n_out:
        raise _bad(path, f"it has {len(classes)} classes for {n_out} output units")
    for entry in FITTED:
        moment = values[entry.name]
        if entry.kind is Kind.OPTIMIZER_ARRAY and (moment.dtype != params.dtype
                                                   or moment.size not in (0, params.size)):
            raise _bad(path, f"its optimizer state {entry.array} does not match the parameters")
    if values["n_features_in_"] != int(sizes[0]):
        raise _bad(path, "its input width does not match its first layer")


def _restore_params(params):
    params = dict(params)
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    return params


class ModelFiles:
    """The estimators' ``save`` and ``load`` of model files (this module's format) and
    their pickling, both reading the declaration of fastmlp/_state.py. A mixin of BaseMLP
    (fastmlp/_base.py), whose ``_rebuild_derived`` unpickling calls."""

    def save(self, path):
        """Write the fitted model to a file that loading cannot run code from.

        The file is fastmlp's model format: an ``.npz`` archive of the parameters, the
        optimizer's state and JSON metadata, read back without pickle (the format is
        described in ``fastmlp.persistence`` and the
        :doc:`user guide, Model files </guide/model-files>`). It is written beside
        ``path`` and renamed into place, so it appears whole or not at all.

        Parameters
        ----------
        path : str or path-like
            The file to write, used as given (``.npz`` is the usual extension).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        TypeError
            If a class label is neither a number nor a string, which the format cannot
            store without pickle.

        See Also
        --------
        load : Read the file back.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from sklearn.datasets import load_iris
        >>> from fastmlp import FastMLP
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = FastMLP(max_iter=500, random_state=0).fit(X, y)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "iris.npz")
        ...     clf.save(path)
        ...     restored = FastMLP.load(path)
        >>> np.array_equal(restored.predict_proba(X), clf.predict_proba(X))
        True
        """
        save(self, path)  # the module's save (above), not this method

    @classmethod
    def load(cls, path):
        """Read a model written by ``save``.

        Parameters
        ----------
        path : str or path-like
            A file written by ``save`` of this estimator class.

        Returns
        -------
        FastMLP or FastMLPRegressor
            A fitted estimator of the class ``load`` is called on, which predicts as the
            saved one did; ``partial_fit`` and ``warm_start`` continue from the saved
            optimizer state.

        Raises
        ------
        ValueError
            If the file is truncated or corrupted, of another format version or of the
            other estimator, or holds pickled or object data.
        FileNotFoundError
            If there is no such file.

        See Also
        --------
        save : Write a model file.
        """
        return load(cls, path)  # the module's load (above)

    def __getstate__(self):
        # coefs_, intercepts_ (views into _params) and _grads are rebuilt on unpickling
        return pickle_state(super().__getstate__())

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_params" in state:
            own_trained_arrays(self)
            self._rebuild_derived()

