"""Robustness on every backend: bad input, inputs that must just work, divergence,
interruption, model files, determinism and concurrency. (Memory: test_memory.py;
property-based kernel tests: test_properties.py.)"""

import os
import pickle
import subprocess
import sys
import threading
import warnings
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from fastmlp import FastMLP
from fastmlp.backends import get_backend
from fastmlp.backends.codes import ADAM, RELU, optimizer_step
from fastmlp.backends.layout import n_params


def _data(n=120, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    y = np.arange(n) % k
    X = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return X, y


def _fit(backend_name, X, y, **kw):
    kw.setdefault("max_iter", 5)
    kw.setdefault("random_state", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return FastMLP(backend=backend_name, **kw).fit(X, y)


# ---------------------------------------------------------------------- 1. bad input


def test_nan_in_y_is_rejected(backend_name):
    X, y = _data()
    y = y.astype(float)
    y[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FastMLP(backend=backend_name).fit(X, y)


@pytest.mark.parametrize("X, message", [
    (np.array([["a", "b"], ["c", "d"]] * 5), "could not convert|numeric"),
    (np.ones((10, 2)) + 1j, "[Cc]omplex"),
    (np.array([[object(), 1.0]] * 10, dtype=object), "float|number|convert"),
])
def test_non_numeric_X_is_rejected(backend_name, X, message):
    with pytest.raises((ValueError, TypeError), match=message):
        FastMLP(backend=backend_name).fit(X, np.arange(10) % 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n_rows", [1, 700])  # one row, and enough to split between threads
def test_non_finite_X_at_predict_is_rejected(backend_name, bad, n_rows):
    # -inf matters: through a ReLU it could turn into a harmless-looking 0
    X, y = _data()
    clf = _fit(backend_name, X, y)
    Z = np.resize(X, (n_rows, X.shape[1])).copy()
    Z[n_rows // 2, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        clf.predict(Z)
    with pytest.raises(ValueError, match="NaN|infinity"):
        clf.predict_proba(Z)


def test_single_class_predicts_that_class(backend_name):
    X, _ = _data(n=30)
    clf = _fit(backend_name, X, np.full(30, 7))
    assert clf.classes_.tolist() == [7]
    assert (clf.predict(X) == 7).all()
    np.testing.assert_allclose(clf.predict_proba(X), 1.0)


def test_partial_fit_rejects_unseen_labels(backend_name):
    X, y = _data()
    clf = FastMLP(backend=backend_name).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="labels not seen before: array\\(\\[5\\]\\)"):
        clf.partial_fit(X[:10], np.full(10, 5))


def _kernel_args(backend, n=20, sizes=(6, 5, 3)):
    rng = np.random.default_rng(0)
    sizes = np.array(sizes, dtype=np.int64)
    p = rng.standard_normal(n_params(sizes)).astype(np.float32) * 0.1
    X = rng.random((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    order = np.arange(n, dtype=np.int64)
    return sizes, p, X, y, order


@pytest.mark.parametrize("which", ["label too large", "negative label", "order out of range",
                                   "order negative", "labels too few"])
def test_kernels_check_indices_before_using_them(backend, which):
    """Compiled kernels check no bounds: a bad index must be refused before the call."""
    sizes, p, X, y, order = _kernel_args(backend)
    if which == "label too large":
        y[3] = sizes[-1]
    elif which == "negative label":
        y[0] = -1
    elif which == "order out of range":
        order[-1] = X.shape[0]
    elif which == "order negative":
        order[2] = -5
    else:
        y = y[:-1]
    g, m, v = (np.zeros_like(p) for _ in range(3))
    data = backend.prepare_inputs(X)
    with pytest.raises((ValueError, IndexError)):
        backend.train_epoch(p, g, m, v, sizes, RELU, data, y, order, 8, 1e-4,
                            optimizer_step(ADAM, 1e-3), 0)


def test_kernels_check_shapes_and_labels(backend):
    sizes, p, X, y, _ = _kernel_args(backend)
    out = np.empty((X.shape[0], sizes[-1]), dtype=np.float32)
    with pytest.raises((ValueError, IndexError)):
        backend.predict_proba(out, X[:, :4].copy(), p, sizes, RELU)  # too few columns
    with pytest.raises((ValueError, IndexError)):
        backend.predict_proba(out, X, p[:-1].copy(), sizes, RELU)  # parameters too short
    probs = np.empty((X.shape[0], 3), dtype=np.float32)
    logits = np.zeros_like(probs)
    bad = y.copy()
    bad[0] = 3
    with pytest.raises((ValueError, IndexError)):
        backend.softmax_xent_forward(probs, logits, bad)
    with pytest.raises((ValueError, IndexError)):
        backend.softmax_xent_backward(probs.copy(), probs, bad)


# --------------------------------------------------------- 2. inputs that must just work


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly"])
def test_memory_layouts_give_the_same_model(backend_name, layout):
    X, y = _data()
    wide = np.repeat(X, 2, axis=1)
    if layout == "fortran":
        Xl = np.asfortranarray(X)
    elif layout == "strided":
        Xl = wide[:, ::2]
        assert not Xl.flags.c_contiguous
    else:
        Xl = X.copy()
        Xl.setflags(write=False)
    ref = _fit(backend_name, X, y)
    clf = _fit(backend_name, Xl, y)
    np.testing.assert_array_equal(clf._params, ref._params)
    np.testing.assert_array_equal(clf.predict_proba(Xl), ref.predict_proba(X))


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, bool, np.float16, np.float64])
def test_input_dtypes(backend_name, dtype):
    rng = np.random.default_rng(1)
    X = (rng.random((90, 5)) * 4).astype(dtype)
    y = np.arange(90) % 3
    clf = _fit(backend_name, X, y)
    ref = _fit(backend_name, X.astype(np.float32), y)
    np.testing.assert_array_equal(clf._params, ref._params)
    assert clf.predict(X).shape == (90,)


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "emu"]), np.array([-5, 0, 12]),
    np.array([2**40, -(2**40), 7], dtype=np.int64), np.array([False, True, True]),
], ids=["strings", "negative", "huge", "bool"])
def test_label_types(backend_name, labels):
    X, y_idx = _data()
    y = labels[y_idx]
    clf = _fit(backend_name, X, y, max_iter=30)
    assert set(clf.classes_.tolist()) == set(labels.tolist())
    pred = clf.predict(X)
    assert pred.dtype == y.dtype
    assert np.mean(pred == y) > 0.8


def test_one_row_no_hidden_layer_and_deep_narrow(backend_name):
    X, y = _data()
    flat = _fit(backend_name, X, y, hidden_layer_sizes=(), max_iter=100, learning_rate_init=0.05)
    assert len(flat.coefs_) == 1 and flat.score(X, y) > 0.8
    deep = _fit(backend_name, X, y, hidden_layer_sizes=(5, 3, 4, 3, 5, 3), max_iter=3)
    assert [w.shape for w in deep.coefs_][1:4] == [(5, 3), (3, 4), (4, 3)]
    for clf in (flat, deep):
        one = clf.predict_proba(X[:1])
        assert one.shape == (1, 3) and np.isfinite(one).all()
        np.testing.assert_allclose(one, clf.predict_proba(X)[:1], rtol=1e-6, atol=1e-7)


def test_pandas_dataframe_keeps_feature_names(backend_name):
    pd = pytest.importorskip("pandas")
    X, y = _data()
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = _fit(backend_name, df, pd.Series(y))
    assert clf.feature_names_in_.tolist() == list(df.columns)
    np.testing.assert_array_equal(clf.predict(df), _fit(backend_name, X, y).predict(X))
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df[list(reversed(df.columns))])


# ---------------------------------------------------------------------- 3. divergence


def test_divergence_stops_and_keeps_finite_weights(backend_name):
    X, y = _data()
    X = X * 1e3
    with pytest.warns(RuntimeWarning, match="training diverged in epoch"):
        clf = _fit(backend_name, X, y, solver="sgd", learning_rate_init=1e6, momentum=0.9,
                   max_iter=20)
    assert np.isfinite(clf._params).all()
    assert all(np.isfinite(clf.loss_curve_))
    assert len(clf.loss_curve_) == clf.n_iter_ < 20
    for rows in (X, X / 1e3):
        try:  # the last finite weights may still be too large for float32 logits
            proba = clf.predict_proba(rows)
        except ValueError as exc:
            assert "overflow" in str(exc)
        else:
            assert np.isfinite(proba).all()


@pytest.mark.parametrize("rows", [1, 5, 120], ids=["one-row", "few-rows", "many-rows"])
def test_outputs_that_overflow_are_refused_however_many_rows(backend_name, rows):
    # a few rows take a shorter path through predict than many: both refuse outputs
    # that overflowed, and name how many rows did
    X, y = _data()
    clf = _fit(backend_name, np.abs(X), y)
    clf._params[:] = np.float32(1e30)  # every logit of a positive row overflows float32
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(ValueError, match=rf"^{rows} row\(s\) of X \(the first is row "
                                             r"0\) overflow"):
            method(np.abs(X[:rows]))


def test_huge_inputs_never_give_nan_probabilities(backend_name):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = _fit(backend_name, X, y)
    huge = X * np.float32(1e30)
    try:
        proba = clf.predict_proba(huge)
    except ValueError as exc:
        assert "overflow" in str(exc)
    else:
        assert np.isfinite(proba).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = _fit(backend_name, huge, y)
    assert np.isfinite(trained._params).all()
    assert any("diverged" in str(w.message) for w in caught) or np.isfinite(trained.loss_)


# --------------------------------------------------------------------- 4. interruption


def test_keyboard_interrupt_keeps_the_last_completed_epoch(backend_name, monkeypatch):
    X, y = _data()
    backend = get_backend(backend_name)
    real = backend.train_epoch
    calls = []

    def interrupted(params, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            params[:5] = np.nan  # half-way through an epoch, then Ctrl-C
            raise KeyboardInterrupt
        return real(params, *args, **kwargs)

    monkeypatch.setattr(backend, "train_epoch", interrupted)
    # threads as asked: default threads may split an epoch into parts (several calls)
    # while another process keeps a core busy
    clf = FastMLP(max_iter=10, random_state=0, backend=backend_name, n_jobs=2)
    with pytest.warns(UserWarning, match="interrupted by the user during epoch 3"):
        clf.fit(X, y)
    monkeypatch.setattr(backend, "train_epoch", real)
    two = _fit(backend_name, X, y, max_iter=2, n_jobs=2)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    np.testing.assert_array_equal(clf._params, two._params)
    np.testing.assert_array_equal(clf.predict(X), two.predict(X))
    # and training can go on from there
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 3 and np.isfinite(clf._params).all()


# ---------------------------------------------------------------------- 5. model files


@pytest.fixture
def fitted(backend_name):
    X, y = _data()
    labels = np.array(["a", "b", "c"])[y]
    return _fit(backend_name, X, labels), X


def test_save_load_round_trip(fitted, tmp_path):
    clf, X = fitted
    path = tmp_path / "model.npz"
    clf.save(path)
    loaded = FastMLP.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.get_params() == clf.get_params()
    assert loaded.n_iter_ == clf.n_iter_ and loaded.loss_curve_ == clf.loss_curve_
    assert loaded.classes_.tolist() == ["a", "b", "c"]
    with zipfile.ZipFile(path) as z:  # nothing in it needs pickle
        for name in z.namelist():
            with z.open(name) as f:
                assert b"'descr': '|O'" not in f.read(128)
    # training continues from the saved optimizer state exactly as from the original
    for model in (clf, loaded):
        model.partial_fit(X, clf.classes_[np.arange(len(X)) % 3])
    np.testing.assert_array_equal(loaded._params, clf._params)


def test_save_replaces_atomically_and_refuses_unfitted(fitted, tmp_path):
    clf, X = fitted
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    clf.save(path)
    assert FastMLP.load(path).n_iter_ == clf.n_iter_
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left
    with pytest.raises(NotFittedError):
        FastMLP().save(tmp_path / "x.npz")


def test_truncated_and_corrupted_files_are_refused(fitted, tmp_path):
    clf, _ = fitted
    path = tmp_path / "model.npz"
    clf.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        FastMLP.load(truncated)
    corrupted = tmp_path / "corrupted.npz"
    middle = len(data) // 2
    corrupted.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64])
                          + data[middle + 64:])
    with pytest.raises(ValueError, match="not a usable fastmlp model file"):
        FastMLP.load(corrupted)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a usable fastmlp model file"):
        FastMLP.load(garbage)


def _rewrite(path, out, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    import json

    meta = json.loads(bytes(arrays["metadata"]).decode())
    meta.update(changes.pop("meta", {}))
    arrays["metadata"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    arrays.update(changes)
    with open(out, "wb") as f:
        np.savez(f, **arrays)


def test_other_format_versions_and_object_arrays_are_refused(fitted, tmp_path):
    clf, _ = fitted
    path = tmp_path / "model.npz"
    clf.save(path)
    future = tmp_path / "future.npz"
    _rewrite(path, future, meta={"format_version": 2})
    with pytest.raises(ValueError, match="format version 2.*reads version 1"):
        FastMLP.load(future)
    objects = tmp_path / "objects.npz"
    _rewrite(path, objects, classes=np.array(["a", None, 3], dtype=object))
    with pytest.raises(ValueError, match="pickled or object data"):
        FastMLP.load(objects)
    short = tmp_path / "short.npz"
    _rewrite(path, short, params=clf._params[:-1].copy())
    with pytest.raises(ValueError, match="parameters"):
        FastMLP.load(short)


class _Payload:
    def __reduce__(self):
        return (open, (os.environ["FASTMLP_MARKER"], "w"))


def test_loading_never_runs_code(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("FASTMLP_MARKER", str(marker))
    evil = tmp_path / "evil.npz"
    with open(evil, "wb") as f:
        np.savez(f, metadata=np.array([_Payload()], dtype=object))
    plain_pickle = tmp_path / "evil.pkl"
    plain_pickle.write_bytes(pickle.dumps(_Payload()))
    for path in (evil, plain_pickle):
        with pytest.raises(ValueError, match="pickled or object data"):
            FastMLP.load(path)
    assert not marker.exists()


def test_pickle_and_joblib_round_trips(fitted, tmp_path):
    clf, X = fitted
    expected = clf.predict_proba(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), expected)
    joblib.dump(clf, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(X),
                                  expected)
    mapped = joblib.load(tmp_path / "m.joblib", mmap_mode="r")
    np.testing.assert_array_equal(mapped.predict_proba(X), expected)


@pytest.mark.reference_exhaustive
def test_pickled_model_predicts_in_a_new_process(fitted, tmp_path):
    clf, X = fitted
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(clf))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", clf.predict_proba(X))
    script = ("import pickle, sys, numpy as np\n"
              "d = sys.argv[1]\n"
              "clf = pickle.load(open(d + '/m.pkl', 'rb'))\n"
              "got = clf.predict_proba(np.load(d + '/X.npy'))\n"
              "np.testing.assert_allclose(got, np.load(d + '/expected.npy'), rtol=1e-5,"
              " atol=1e-6)\n"
              "print('ok', clf.backend_)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", clf.backend_]


def test_model_of_an_unavailable_backend_still_predicts(fitted, monkeypatch):
    clf, X = fitted
    expected = clf.predict_proba(X)
    clf.backend_ = "cython"
    import fastmlp.backends as registry

    real = registry._import

    def missing_cython(name):
        if name == "cython":
            raise ImportError("fastmlp backend 'cython' is not available: not built")
        return real(name)

    monkeypatch.setattr(registry, "_import", missing_cython)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- 6. determinism


def test_same_seed_gives_bitwise_identical_weights(backend_name):
    X, y = _data(seed=3)
    a = _fit(backend_name, X, y, n_jobs=2)
    b = _fit(backend_name, X, y, n_jobs=2)
    np.testing.assert_array_equal(a._params, b._params)
    c = clone(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c.fit(X, y)
    np.testing.assert_array_equal(c._params, a._params)


# ---------------------------------------------------------------------- 7. concurrency


def test_predict_from_eight_threads(backend_name):
    X, y = _data(n=600)
    clf = _fit(backend_name, X, y)
    chunks = [X[i * 75:(i + 1) * 75] if i % 2 else X for i in range(8)]
    serial = [clf.predict_proba(c) for c in chunks]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        for _ in range(5):
            results[i] = clf.predict_proba(chunks[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_fit_one_model_while_another_predicts(backend_name):
    X, y = _data(n=400)
    fitted = _fit(backend_name, X, y)
    expected = fitted.predict_proba(X)
    errors, done = [], threading.Event()

    def predict_loop():
        try:
            while not done.is_set():
                np.testing.assert_array_equal(fitted.predict_proba(X), expected)
        except Exception as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=predict_loop)
    t.start()
    try:
        other = _fit(backend_name, X, y, max_iter=15, random_state=1)
    finally:
        done.set()
        t.join(timeout=300)
    assert not errors
    reference = _fit(backend_name, X, y, max_iter=15, random_state=1)
    np.testing.assert_array_equal(other._params, reference._params)
