"""Model files that cannot run code when loaded: ``FastMLP.save`` and ``FastMLP.load``.

Format (version 1): one ``.npz`` archive, read with ``allow_pickle=False``, holding

- ``metadata``: UTF-8 JSON as a uint8 array: ``format`` ("fastmlp.FastMLP"),
  ``format_version`` (1), ``fastmlp_version``, ``dtype``, ``activation``, the estimator's
  parameters (``get_params()``), the fitted scalars (``n_iter_``, ``loss_``, ...), and
  ``classes_kind`` (how to rebuild the labels);
- ``params``: the flat parameter vector (float32 or float64, see
  fastmlp/backends/_common.py for the layout), ``layer_sizes`` (int64);
- ``classes``: the labels (numbers, booleans or strings; never objects);
- ``loss_curve`` and, when present, ``validation_scores``, ``eval_scores``,
  ``feature_names``;
- ``opt_m``, ``opt_v``: the optimizer's moments, and ``rng_keys`` with the metadata's
  ``rng`` entry: the shuffling generator's state, so ``partial_fit`` and ``warm_start``
  continue exactly as the saved estimator would have.

Every array is checked against the metadata before an estimator is built from it; a file
that is truncated, corrupted, of another format version, or holding object arrays raises
a ValueError that says which.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import zipfile

import numpy as np

from .backends._common import ACTIVATIONS, SOLVERS, n_params

FORMAT = "fastmlp.FastMLP"
FORMAT_VERSION = 1
_SCALARS = ("n_iter_", "t_", "loss_", "best_loss_", "best_validation_score_",
            "n_features_in_", "n_layers_", "n_outputs_", "out_activation_", "backend_",
            "_no_improvement_count")
_OPTIONAL_LISTS = {"validation_scores": "validation_scores_", "eval_scores": "eval_scores_"}


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
        params[name] = _json_safe(value)
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


def save(est, path):
    """Write the fitted estimator to ``path`` (the name is used as given; ``.npz`` is the
    usual extension). The file appears complete or not at all: it is written beside the
    target and renamed into place."""
    if not hasattr(est, "_params"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError("only a fitted FastMLP can be saved; call fit first")
    classes, kind = _classes_array(est.classes_)
    fitted = {name: _json_safe(getattr(est, name, None)) for name in _SCALARS}
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "fastmlp_version": _version(), "dtype": est._params.dtype.name,
        "activation": {code: name for name, code in ACTIVATIONS.items()}[est._activation_code],
        "params": _estimator_params(est), "fitted": fitted, "classes_kind": kind,
        "optimizer": {"t": int(est._optimizer.t),
                      "learning_rate": float(est._optimizer.learning_rate)},
    }
    arrays = {
        "metadata": np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8),
        "params": est._params,
        "layer_sizes": np.asarray(est._layer_sizes, dtype=np.int64),
        "classes": classes,
        "loss_curve": np.asarray(est.loss_curve_, dtype=np.float64),
        "opt_m": est._optimizer.m,
        "opt_v": est._optimizer.v,
    }
    for key, attr in _OPTIONAL_LISTS.items():
        if getattr(est, attr, None) is not None:
            arrays[key] = np.asarray(getattr(est, attr), dtype=np.float64)
    if hasattr(est, "feature_names_in_"):
        arrays["feature_names"] = np.asarray(est.feature_names_in_, dtype=str)
    rng = getattr(est, "_random_state", None)
    if isinstance(rng, np.random.RandomState):
        name, keys, pos, has_gauss, cached = rng.get_state()
        arrays["rng_keys"] = np.asarray(keys, dtype=np.uint32)
        metadata["rng"] = {"name": name, "pos": int(pos), "has_gauss": int(has_gauss),
                           "cached_gaussian": float(cached)}
        arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode("utf-8"),
                                           dtype=np.uint8)
    path = os.fspath(path)
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


def _version():
    from . import __version__

    return __version__


def _bad(path, why):
    return ValueError(f"{path} is not a usable fastmlp model file: {why}")


def load(cls, path):
    """Read a file written by ``save`` and return a fitted estimator of class ``cls``."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise _bad(path, "it holds a single array, not a model archive")
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise _bad(path, "it holds pickled or object data, which fastmlp never loads "
                             "(it could run code)") from None
        raise _bad(path, str(exc)) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise _bad(path, f"it is truncated or corrupted ({exc})") from None
    try:
        metadata = json.loads(bytes(arrays["metadata"].astype(np.uint8)).decode("utf-8"))
    except KeyError:
        raise _bad(path, "it has no metadata") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"its metadata is not valid JSON ({exc})") from None
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found != FORMAT:
        raise _bad(path, f"its format is {found!r}, not {FORMAT!r}")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(path, f"it is format version {version!r}, and this fastmlp "
                         f"({_version()}) reads version {FORMAT_VERSION}")
    missing = [k for k in ("params", "layer_sizes", "classes", "loss_curve", "opt_m", "opt_v")
               if k not in arrays]
    if missing:
        raise _bad(path, f"it lacks the arrays {missing}")
    return _build(cls, path, metadata, arrays)


def _build(cls, path, metadata, arrays):
    params, sizes = arrays["params"], arrays["layer_sizes"]
    dtype = metadata.get("dtype")
    if dtype not in ("float32", "float64") or params.dtype.name != dtype or params.ndim != 1:
        raise _bad(path, f"its parameters are {params.dtype} {params.shape}, expected a 1-D "
                         f"{dtype} vector")
    if sizes.dtype.kind not in "iu" or sizes.ndim != 1 or sizes.size < 2 or (sizes < 1).any():
        raise _bad(path, f"its layer sizes {sizes!r} are not positive integers")
    if params.size != n_params(sizes):
        raise _bad(path, f"it holds {params.size} parameters, but layers {sizes.tolist()} "
                         f"need {n_params(sizes)}")
    classes = arrays["classes"]
    if classes.ndim != 1 or classes.dtype.kind not in "biufU":
        raise _bad(path, f"its classes have dtype {classes.dtype}")
    if metadata.get("classes_kind") == "str_object":
        classes = classes.astype(object)
    n_out = int(sizes[-1])
    if len(classes) != n_out:
        raise _bad(path, f"it has {len(classes)} classes for {n_out} output units")
    for key in ("opt_m", "opt_v"):
        if arrays[key].dtype != params.dtype or arrays[key].size not in (0, params.size):
            raise _bad(path, f"its optimizer state {key} does not match the parameters")
    try:
        est = cls(**_restore_params(metadata["params"]))
        activation = ACTIVATIONS[metadata["activation"]]
        fitted = metadata["fitted"]
        optimizer = metadata["optimizer"]
    except (KeyError, TypeError) as exc:
        raise _bad(path, f"its metadata is incomplete ({exc!r})") from None
    if fitted.get("n_features_in_") != int(sizes[0]):
        raise _bad(path, "its input width does not match its first layer")
    from .optim import OptimizerState

    est.classes_ = classes
    est._layer_sizes = sizes.astype(np.int64)
    est._activation_code = activation
    est._set_params_vector(np.array(params, copy=True))
    for name in _SCALARS:
        if name in fitted:
            setattr(est, name, fitted[name])
    est.loss_curve_ = arrays["loss_curve"].tolist()
    for key, attr in _OPTIONAL_LISTS.items():
        setattr(est, attr, arrays[key].tolist() if key in arrays else None)
    if "feature_names" in arrays:
        est.feature_names_in_ = arrays["feature_names"].astype(object)
    # the solver code directly: validating every parameter would also demand that the
    # training backend be available here, which predicting does not need
    solver = SOLVERS.get(est.solver)
    if solver is None:
        raise _bad(path, f"its solver {est.solver!r} is unknown")
    est._optimizer = OptimizerState(solver, params.size, params.dtype,
                                    est.learning_rate_init, est.learning_rate, est.power_t)
    est._optimizer.m[...] = arrays["opt_m"] if arrays["opt_m"].size else 0
    if est._optimizer.v.size and arrays["opt_v"].size:
        est._optimizer.v[...] = arrays["opt_v"]
    est._optimizer.t = int(optimizer["t"])
    est._optimizer.learning_rate = float(optimizer["learning_rate"])
    from sklearn.utils import check_random_state

    est._random_state = check_random_state(est.random_state)
    rng = metadata.get("rng")
    if rng is not None and "rng_keys" in arrays:
        try:
            est._random_state = np.random.RandomState()
            est._random_state.set_state((rng["name"], arrays["rng_keys"], rng["pos"],
                                         rng["has_gauss"], rng["cached_gaussian"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(path, f"its random generator state is invalid ({exc})") from None
    return est


def _restore_params(params):
    params = dict(params)
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    return params
