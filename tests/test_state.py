"""The declaration of a fitted model's state (fastmlp/_state.py) is complete and drives
every copy of it: a fit creates exactly the declared attributes, and model files,
pickling and the undo of an epoch each round-trip every declared one.

These tests are about the estimator, not the kernels: they run on the NumPy backend."""

import copy
import json
import pickle
import warnings
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, FastMLPRegressor
from fastmlp._state import (
    FITTED,
    MISSING,
    Kind,
    attribute_names,
    get_value,
    restore_snapshot,
    take_snapshot,
)
from fastmlp.persistence import _CODECS

STORED = [e for e in FITTED if e.kind not in (Kind.DERIVED, Kind.OPTIMIZER)]
DERIVED = [e for e in FITTED if e.kind is Kind.DERIVED]
UNDONE = [e for e in FITTED if e.undo]


def _data(n=150, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    y = np.arange(n) % k
    X = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return X, np.array(["ant", "bee", "cat"])[y]


def _fit(X, y, eval_set=None, estimator=FastMLP, sample_weight=None, **kwargs):
    kwargs = {"max_iter": 4, "random_state": 0, "backend": "numpy", **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator(**kwargs).fit(X, y, sample_weight, eval_set=eval_set)


def _everything():
    """A model with every optional attribute: early stopping, an evaluation set, string
    labels and named columns."""
    pd = pytest.importorskip("pandas")
    X, y = _data()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    return _fit(frame, y, eval_set=(frame, y), early_stopping=True, n_iter_no_change=50)


def _fitted_names(clf):
    return set(vars(clf)) - set(clf.get_params(deep=False))


def _same(a, b):
    """Equal values of the same type: arrays bit for bit with their dtype, generators by
    state, lists of arrays element-wise; MISSING only equals MISSING."""
    if a is MISSING or b is MISSING:
        return a is b
    if isinstance(a, np.random.RandomState):
        (name_a, keys_a, *rest_a), (name_b, keys_b, *rest_b) = a.get_state(), b.get_state()
        return name_a == name_b and np.array_equal(keys_a, keys_b) and rest_a == rest_b
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, list) and a and isinstance(a[0], np.ndarray):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))


def _layout(value):
    arrays = value if isinstance(value, list) else [value]
    return [(a.shape, a.dtype) for a in arrays]


def _assert_every_attribute_round_trips(original, copied):
    for entry in STORED:
        before, after = get_value(original, entry.name), get_value(copied, entry.name)
        assert _same(before, after), f"{entry.name}: {before!r} became {after!r}"
    # the derived attributes are rebuilt: views of the copied parameter vector (so equal
    # to the original's), and a gradient buffer of the same layout
    for entry in DERIVED:
        assert _layout(get_value(original, entry.name)) == _layout(get_value(copied, entry.name))
    for original_view, view in zip(original.coefs_ + original.intercepts_,
                                   copied.coefs_ + copied.intercepts_):
        assert np.shares_memory(view, copied._params) and _same(original_view, view)


# -------------------------------------------------------------- the declaration itself


def test_a_fit_creates_exactly_the_declared_attributes():
    assert _fitted_names(_everything()) == attribute_names()
    X, y = _data()
    always = attribute_names(e for e in FITTED if not e.optional)
    for clf in (_fit(X, y), FastMLP(backend="numpy").partial_fit(X, y, classes=np.unique(y))):
        assert always <= _fitted_names(clf) <= attribute_names()
    # the regressor has no classes_, and nothing the declaration does not list
    reg = _models()["regressor"]
    assert always - {"classes_"} <= _fitted_names(reg) <= attribute_names() - {"classes_"}


def test_every_kind_has_a_codec_and_every_location_one_entry():
    assert set(_CODECS) == set(Kind)
    arrays = [e.array for e in FITTED if e.array]
    metas = [e.meta for e in FITTED if e.meta]
    assert len(arrays) == len(set(arrays)) and len(metas) == len(set(metas))
    assert not any(e.undo for e in DERIVED)


def test_model_file_format_version_1_is_unchanged(tmp_path):
    """The arrays and metadata keys of format version 1, as files have always had them
    (train_scores, optional, was added last; files without it load)."""
    path = tmp_path / "model.npz"
    _everything().save(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [f"{name}.npy" for name in (
            "metadata", "params", "layer_sizes", "classes", "loss_curve", "opt_m", "opt_v",
            "validation_scores", "eval_scores", "feature_names", "rng_keys",
            "train_scores")]
    with np.load(path, allow_pickle=False) as archive:
        metadata = json.loads(bytes(archive["metadata"]).decode("utf-8"))
    assert list(metadata) == ["format", "format_version", "fastmlp_version", "dtype",
                              "activation", "params", "fitted", "classes_kind", "optimizer",
                              "rng"]
    assert list(metadata["fitted"]) == [
        "n_iter_", "t_", "loss_", "best_loss_", "best_validation_score_", "n_features_in_",
        "n_layers_", "n_outputs_", "out_activation_", "backend_", "_no_improvement_count"]
    assert list(metadata["optimizer"]) == ["t", "learning_rate"]
    assert list(metadata["rng"]) == ["name", "pos", "has_gauss", "cached_gaussian"]


# ------------------------------------------------------------------------ round trips


def _models():
    X, y = _data()
    return {
        "everything": _everything(),
        "sgd float64": _fit(X, y, solver="sgd", dtype="float64", learning_rate="invscaling",
                            hidden_layer_sizes=(7, 4)),
        "partial_fit": FastMLP(backend="numpy", random_state=1).partial_fit(
            X, y, classes=np.unique(y)),
        "multilabel": _fit(X, np.c_[y == "ant", y != "bee"].astype(int), early_stopping=True,
                           sample_weight=np.linspace(0.5, 2, len(y))),
        "regressor": _fit(X, X[:, :2] @ np.array([[1.0, 0.5], [-1.0, 2.0]]),
                          estimator=FastMLPRegressor, early_stopping=True),
    }


MODELS = ["everything", "sgd float64", "partial_fit", "multilabel", "regressor"]


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trips_every_declared_attribute(name, tmp_path):
    clf = _models()[name]
    clf.save(tmp_path / "model.npz")
    _assert_every_attribute_round_trips(clf, type(clf).load(tmp_path / "model.npz"))


def test_a_file_loads_only_as_the_estimator_that_wrote_it(tmp_path):
    models = _models()
    models["regressor"].save(tmp_path / "reg.npz")
    models["everything"].save(tmp_path / "clf.npz")
    with pytest.raises(ValueError, match="load it with FastMLPRegressor.load"):
        FastMLP.load(tmp_path / "reg.npz")
    with pytest.raises(ValueError, match="load it with FastMLP.load"):
        FastMLPRegressor.load(tmp_path / "clf.npz")


@pytest.mark.parametrize("name", MODELS)
def test_pickle_round_trips_every_declared_attribute(name):
    clf = _models()[name]
    _assert_every_attribute_round_trips(clf, pickle.loads(pickle.dumps(clf)))


def test_a_memory_mapped_model_trains_on_writable_copies(tmp_path):
    """joblib's mmap_mode gives read-only arrays; what the kernels write in place (the
    parameters and the optimizer's moments) must become the model's own."""
    X, y = _data()
    clf = _fit(X, y)
    joblib.dump(clf, tmp_path / "m.joblib")
    mapped = joblib.load(tmp_path / "m.joblib", mmap_mode="r")
    _assert_every_attribute_round_trips(clf, mapped)
    for entry in FITTED:
        if entry.kind in (Kind.PARAMETERS, Kind.OPTIMIZER_ARRAY):
            array = get_value(mapped, entry.name)
            assert type(array) is np.ndarray and array.flags.writeable
    for model in (clf, mapped):
        model.partial_fit(X, y)
    _assert_every_attribute_round_trips(clf, mapped)


def _copy(value):
    return value if value is MISSING else copy.deepcopy(value)


def _scrambled(value):
    """A value different from ``value`` of the same kind."""
    if isinstance(value, np.ndarray):
        return value + 1 if value.size else np.ones(3, dtype=value.dtype)
    if isinstance(value, list):
        return value + [123.0]
    return "scrambled"


@pytest.mark.parametrize("name", ["everything", "sgd float64", "multilabel", "regressor"])
def test_an_undone_epoch_restores_every_declared_attribute(name):
    clf = _models()[name]
    before = {e.name: _copy(get_value(clf, e.name)) for e in UNDONE}
    snapshot = take_snapshot(clf)
    for entry in UNDONE:
        value = get_value(clf, entry.name)
        if entry.kind in (Kind.PARAMETERS, Kind.OPTIMIZER_ARRAY):
            value[...] = np.nan  # the kernels write these in place
        else:
            owner = get_value(clf, entry.name.rpartition(".")[0]) if "." in entry.name else clf
            setattr(owner, entry.name.rpartition(".")[2], _scrambled(value))
    restore_snapshot(clf, snapshot)
    for entry in UNDONE:
        assert _same(before[entry.name], get_value(clf, entry.name)), entry.name
    for view in clf.coefs_ + clf.intercepts_:  # restored in place: still views
        assert np.shares_memory(view, clf._params)


def test_an_epoch_changes_only_what_an_undo_restores():
    """Everything an epoch changes is marked undo, except the random generator, whose
    draws are not taken back."""
    X, y = _data()
    clf = _fit(X, y)
    before = {e.name: _copy(get_value(clf, e.name)) for e in STORED}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.partial_fit(X, y)
    changed = {e.name for e in STORED if not _same(before[e.name], get_value(clf, e.name))}
    assert changed - {e.name for e in UNDONE} == {"_random_state"}
    assert {"_params", "_optimizer.m", "_optimizer.t", "n_iter_", "loss_curve_"} <= changed


def test_an_undone_first_epoch_leaves_no_loss(monkeypatch):
    """Attributes absent before the undone epoch are absent after it."""
    from fastmlp.backends import get_backend

    X, y = _data()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(get_backend("numpy"), "train_epoch", interrupted)
    with pytest.warns(UserWarning, match="during epoch 1"):
        clf = FastMLP(backend="numpy").fit(X, y)
    assert clf.n_iter_ == 0 and clf.loss_curve_ == [] and not hasattr(clf, "loss_")


def test_undoing_an_epoch_of_a_large_model_restarts_its_moments(monkeypatch):
    """A model of UNDO_MOMENTS_BELOW bytes or more keeps no copy of Adam's moments: an
    undone epoch restores its weights and history, and restarts the moments and the step
    count; a smaller model gets its moments back exactly."""
    import scipy.sparse as sp

    from fastmlp import _state
    from fastmlp.backends import get_backend

    rng = np.random.default_rng(0)
    X = sp.random(60, 2000, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    y = rng.integers(0, 3, 60)
    backend = get_backend("numpy")
    real_epoch = backend.train_epoch
    calls = []

    def second_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(backend, "train_epoch", second_interrupted)
    results = {}
    for name, limit in (("small", 10**9), ("large", 1)):
        monkeypatch.setattr(_state, "UNDO_MOMENTS_BELOW", limit)
        calls.clear()
        clf = FastMLP(hidden_layer_sizes=(8,), batch_size=20, random_state=0,
                      backend="numpy")
        clf.partial_fit(X, y, classes=np.arange(3))  # one pass completes: 3 steps
        after_one = {k: np.copy(v) for k, v in
                     (("p", clf._params), ("m", clf._optimizer.m), ("v", clf._optimizer.v))}
        t_ = clf.t_
        with pytest.warns(UserWarning, match="training interrupted"):
            clf.partial_fit(X, y)
        # n_iter_ counts the epochs of this call: none completed
        assert (clf.n_iter_, clf.t_, len(clf.loss_curve_)) == (0, t_, 1)
        np.testing.assert_array_equal(clf._params, after_one["p"])
        results[name] = (after_one, clf)
    after_one, small = results["small"]
    np.testing.assert_array_equal(small._optimizer.m, after_one["m"])
    np.testing.assert_array_equal(small._optimizer.v, after_one["v"])
    assert small._optimizer.t == 3
    _, large = results["large"]
    assert np.abs(after_one["m"]).max() > 0
    assert not large._optimizer.m.any() and not large._optimizer.v.any()
    assert large._optimizer.t == 0
