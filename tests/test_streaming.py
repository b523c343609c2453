"""Streaming fit (the ``stream`` parameter): X read in blocks of rows from where it is
stored, the next block read on a background thread; the shuffle is by block order plus a
permutation within each block. And the progress bar, which splits an in-memory epoch into
parts without changing a bit of the result."""

import sys
import threading
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, FastMLPRegressor, _base, _progress, _stream
from fastmlp.backends.codes import as_target, rows_of


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def pixels(raw_mnist):
    (X, y), (X_test, y_test) = raw_mnist
    return (X[:3_000], y[:3_000]), (X_test[:1000], y_test[:1000])


@pytest.fixture
def on_disk(pixels, tmp_path):
    """The pixels as a read-only memory map of a .npy file."""
    np.save(tmp_path / "x.npy", pixels[0][0])
    return np.load(tmp_path / "x.npy", mmap_mode="r")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 8 batches of 64 rows of 784 uint8 pixels, so that 3,000 rows make 6."""
    monkeypatch.setattr(_stream, "STREAM_BYTES", 8 * 64 * 784)


def _params(model):
    return model._params.copy()


class _Identity:
    """A stand-in backend whose prepared form is the block itself."""

    @staticmethod
    def prepare_inputs(X, dtype=None, scale=None, buffers=None):
        return X


def _spy(monkeypatch, cls, name):
    """Record each call of the method cls.name(self, arg) as (whether it ran on the main
    thread, arg)."""
    calls = []
    real = getattr(cls, name)

    def spy(self, arg):
        calls.append((threading.current_thread() is threading.main_thread(), arg))
        return real(self, arg)

    monkeypatch.setattr(cls, name, spy)
    return calls


def test_parts_are_blocks_in_random_order_read_off_the_calling_thread(monkeypatch):
    X = np.arange(1000, dtype=np.float32).reshape(100, 10)  # row r holds 10 r .. 10 r + 9
    reads = _spy(monkeypatch, _stream.Streamed, "_read")
    target = as_target(np.arange(100, dtype=np.int64), np.float32)
    source = _stream.Streamed(X, target, _Identity, np.float32, None, block_rows=16)
    assert source.n_blocks == 7
    starts, seen = [], []
    for data, part_target, order in source.parts(np.random.RandomState(0), shuffle=True):
        rows = (data[:, 0] // 10).astype(np.int64)
        # a block is contiguous rows of X, with their own targets, visited in a random order
        assert np.array_equal(rows, np.arange(rows[0], rows[0] + rows.shape[0]))
        assert np.array_equal(part_target.labels, rows)
        assert sorted(order.tolist()) == list(range(rows.shape[0]))
        starts.append(int(rows[0]))
        seen.extend(rows[order].tolist())
    assert sorted(seen) == list(range(100))  # every row once
    assert sorted(starts) == list(range(0, 100, 16)) and starts != sorted(starts)
    readers = [main for main, _ in reads]
    assert readers and not any(readers)  # every block read on the background thread
    in_order = [order.tolist() for _, _, order in
                source.parts(np.random.RandomState(0), shuffle=False)]
    assert [o[:2] for o in in_order] == [[0, 1]] * 7 and len(in_order[-1]) == 4


def test_parts_of_held_out_rows_read_only_the_training_rows():
    X = np.arange(100, dtype=np.float32).reshape(100, 1)
    rows = np.array([3, 5, 8, 13, 21, 34, 55, 89])
    target = as_target(np.arange(8, dtype=np.int64), np.float32)
    source = _stream.Streamed(X, target, _Identity, np.float32, None, block_rows=3,
                              rows=rows)
    got = {}
    for data, part_target, _ in source.parts(np.random.RandomState(1), shuffle=True):
        got.update(zip(part_target.labels.tolist(), data[:, 0].tolist()))
    assert got == {i: float(r) for i, r in enumerate(rows)}


def test_how_fit_reads_X(on_disk, monkeypatch):
    dense = np.zeros((10, 4), dtype=np.float32)
    WHOLE, GATHERED, BLOCKS = _stream.WHOLE, _stream.GATHERED, _stream.BLOCKS
    # integer X, in memory or in a small memory map: a part at a time, in the whole's order
    assert _stream.how_read(on_disk, "auto") == GATHERED
    assert _stream.how_read(np.array(on_disk), "auto") == GATHERED
    assert _stream.how_read(np.array(on_disk, dtype=np.int16), "auto") == GATHERED
    assert _stream.how_read(on_disk, True) == BLOCKS
    assert _stream.how_read(on_disk, False) == WHOLE
    assert _stream.how_read(dense, True) == BLOCKS and _stream.how_read(dense, "auto") == WHOLE
    assert _stream.how_read(sp.csr_matrix(dense), True) == WHOLE
    assert _stream.on_disk(on_disk[10:20]) and not _stream.on_disk(dense)
    monkeypatch.setattr(_stream, "STREAM_AUTO_BYTES", on_disk.nbytes)
    # a memory map of the size or more: in blocks, whatever its dtype; in memory: not
    assert _stream.how_read(on_disk, "auto") == BLOCKS
    assert _stream.how_read(on_disk[:-1], "auto") == GATHERED  # below the size
    assert _stream.how_read(np.array(on_disk), "auto") == GATHERED
    assert _stream.how_read(np.array(on_disk, dtype=np.float32), "auto") == WHOLE
    # a whole number of batches a block, at least one
    assert _stream.block_rows_for(on_disk, 64) == (32 << 20) // (784 * 64) * 64
    assert _stream.block_rows_for(np.zeros((5, 1 << 20), np.float32), 64) == 64


@pytest.mark.parametrize("where", ["memory", "file"])
def test_gathered_parts_follow_the_permutation_of_the_whole(monkeypatch, tmp_path, where):
    X = np.arange(1000, dtype=np.int32).reshape(100, 10)  # row r holds 10 r .. 10 r + 9
    if where == "file":
        np.save(tmp_path / "x.npy", X)
        X = np.load(tmp_path / "x.npy", mmap_mode="r")
    calls = _spy(monkeypatch, _stream.Gathered, "_gather")
    labels = np.arange(100, dtype=np.int64) % 7
    target = as_target(labels, np.float32)
    for rows in (None, np.array([90, 3, 55, 8, 21, 13, 34, 5, 89, 0, 1])):
        n = 100 if rows is None else rows.shape[0]
        source = _stream.Gathered(X, rows_of(target, rows) if rows is not None else target,
                                  _Identity, np.int32, None, part_rows=3 if rows is not None
                                  else 16, rows=rows)
        seen, sizes = [], []
        for data, part_target, order in source.parts(np.random.RandomState(0), True):
            got = data[:, 0] // 10
            # each part is visited in the order it was gathered in, with its own targets
            assert np.array_equal(order, np.arange(got.shape[0]))
            assert np.array_equal(part_target.labels, labels[got])
            seen.extend(got.tolist())
            sizes.append(got.shape[0])
        # the rows, in the permutation an in-memory fit of (the training rows of) X draws
        whole = np.random.RandomState(0).permutation(n)
        assert seen == (whole if rows is None else rows[whole]).tolist()
        assert sizes == ([16] * 6 + [4] if rows is None else [3, 3, 3, 2])
        in_order = [data[:, 0] // 10 for data, _, _ in
                    source.parts(np.random.RandomState(0), False)]
        assert np.concatenate(in_order).tolist() == (list(range(100)) if rows is None
                                                     else rows.tolist())
    gatherers = [main for main, _ in calls]
    assert gatherers.count(True) <= 4 and gatherers.count(False) >= 10  # ahead, mostly


@pytest.mark.parametrize("kind", ["plain", "early_stopping", "no_shuffle", "weights",
                                  "regressor", "file"])
def test_integer_X_prepared_a_part_at_a_time_trains_as_prepared_whole(
        pixels, on_disk, small_blocks, backend_name, monkeypatch, kind):
    (X, y), _ = pixels
    kw = dict(hidden_layer_sizes=(16,), max_iter=2, random_state=0, backend=backend_name,
              input_scale=1 / 255)
    fit_kw = {}
    estimator = FastMLP
    if kind == "early_stopping":
        kw["early_stopping"] = True
    elif kind == "no_shuffle":
        kw["shuffle"] = False
    elif kind == "weights":
        fit_kw["sample_weight"] = 0.5 + (np.arange(X.shape[0]) % 3)
    elif kind == "regressor":
        estimator, y = FastMLPRegressor, X[:, 300:310].mean(axis=1) / 255
    elif kind == "file":
        X = on_disk
    whole = estimator(**kw, stream=False).fit(X, y, **fit_kw)
    calls = _spy(monkeypatch, _stream.Gathered, "_gather")
    parts = estimator(**kw).fit(X, y, **fit_kw)
    prepared = [picked.shape[0] for _, picked in calls]
    # 3,000 rows (2,700 with a validation set held out) in parts of 5 batches of 64 (an
    # eighth of X at most)
    n = 2700 if kind == "early_stopping" else 3000
    assert _stream.part_rows_for(X, 64) == 320
    assert max(prepared) == 320 and sum(prepared) == 2 * n
    np.testing.assert_array_equal(_params(parts), _params(whole))
    assert parts.loss_curve_ == whole.loss_curve_
    if kind == "early_stopping":
        assert parts.validation_scores_ == whole.validation_scores_


def test_a_streamed_fit_learns_as_an_in_memory_one(pixels, on_disk, small_blocks,
                                                   backend_name):
    (X, y), (X_test, y_test) = pixels
    kw = dict(hidden_layer_sizes=(64,), max_iter=4, random_state=0, backend=backend_name,
              input_scale=1 / 255)
    streamed = FastMLP(**kw, stream=True).fit(on_disk, y)
    again = FastMLP(**kw, stream="auto").fit(on_disk, y)
    in_memory = FastMLP(**kw).fit(X, y)
    assert not np.array_equal(_params(streamed), _params(again))  # a small map: not streamed
    np.testing.assert_array_equal(_params(streamed),
                                  _params(FastMLP(**kw, stream=True).fit(on_disk, y)))
    # stream=True reads an in-memory X the same way
    np.testing.assert_array_equal(_params(streamed),
                                  _params(FastMLP(**kw, stream=True).fit(X, y)))
    np.testing.assert_array_equal(_params(again), _params(in_memory))
    # over seeds 0-5 (numpy backend): streamed 0.876-0.898, in memory 0.880-0.897
    a, b = streamed.score(X_test, y_test), in_memory.score(X_test, y_test)
    assert a > 0.86 and abs(a - b) < 0.025, (a, b)
    assert streamed.n_iter_ == 4 and streamed.t_ == 4 * 3000
    assert streamed.loss_curve_[-1] < streamed.loss_curve_[0]


def test_compiled_backends_stream_as_numpy_does(pixels, on_disk, small_blocks,
                                                compiled_backend):
    # one epoch: in a second one, Adam's normalised step turns rounding differences in
    # the near-zero gradients of a few weights into steps of the learning rate's size
    y = pixels[0][1]
    kw = dict(hidden_layer_sizes=(32,), max_iter=1, random_state=0, input_scale=1 / 255,
              stream=True)
    reference = FastMLP(**kw, backend="numpy").fit(on_disk, y)
    model = FastMLP(**kw, backend=compiled_backend.NAME).fit(on_disk, y)
    np.testing.assert_allclose(_params(model), _params(reference), atol=2e-5)


@pytest.mark.parametrize("kind", ["early_stopping", "partial_fit", "sgd_invscaling",
                                  "regressor", "float64"])
def test_streamed_variants(pixels, on_disk, small_blocks, kind):
    (X, y), (X_test, y_test) = pixels
    kw = dict(hidden_layer_sizes=(32,), max_iter=3, random_state=0, input_scale=1 / 255,
              stream=True)
    if kind == "early_stopping":
        model = FastMLP(**kw, early_stopping=True).fit(on_disk, y)
        assert len(model.validation_scores_) == model.n_iter_
        assert model.best_validation_score_ > 0.8
        assert model.t_ == model.n_iter_ * 2700  # validation_fraction 0.1 held out
    elif kind == "partial_fit":
        model = FastMLP(**kw)
        for _ in range(3):
            model.partial_fit(on_disk, y, classes=np.arange(10))
        assert model.t_ == 9000 and model.score(X_test, y_test) > 0.85
    elif kind == "sgd_invscaling":
        model = FastMLP(**kw, solver="sgd", learning_rate="invscaling",
                        learning_rate_init=0.1).fit(on_disk, y)
        in_memory = FastMLP(**{**kw, "stream": False}, solver="sgd",
                            learning_rate="invscaling", learning_rate_init=0.1).fit(X, y)
        assert abs(model.score(X_test, y_test) - in_memory.score(X_test, y_test)) < 0.03
    elif kind == "regressor":
        target = X[:, 300:310].mean(axis=1) / 255
        kw["max_iter"] = 10  # after 3 epochs R^2 still varies by 0.4 between seeds
        model = FastMLPRegressor(**kw).fit(on_disk, target)
        in_memory = FastMLPRegressor(**{**kw, "stream": False}).fit(X, target)
        a, b = model.score(X, target), in_memory.score(X, target)
        assert a > 0.8 and abs(a - b) < 0.06, (a, b)
    else:
        model = FastMLP(**kw, dtype="float64").fit(on_disk, y)
        assert model.coefs_[0].dtype == np.float64 and model.score(X_test, y_test) > 0.85


def test_a_fit_of_uint8_X_stays_within_a_fraction_of_the_input(pixels, tmp_path,
                                                               compiled_backend, monkeypatch):
    # 24,000 rows of uint8 pixels (18.8 MB) in parts of 1 MiB, streamed in blocks or read
    # by default (a part at a time, from a memory map or from memory): the fit's own
    # memory is a few parts and the model, far under the 0.75x of the input that the
    # compressed rows of the whole X take twice over (stream=False)
    X_memory = np.tile(pixels[0][0], (8, 1))
    y = np.tile(pixels[0][1], 8)
    np.save(tmp_path / "big.npy", X_memory)
    X_map = np.load(tmp_path / "big.npy", mmap_mode="r")
    monkeypatch.setattr(_stream, "STREAM_BYTES", 1 << 20)
    kw = dict(hidden_layer_sizes=(16,), max_iter=1, random_state=0,
              backend=compiled_backend.NAME, input_scale=1 / 255)
    FastMLP(**kw).fit(X_map[:200], y[:200])  # compile outside the measurement
    for X, stream, bound in ((X_map, True, 0.75), (X_map, "auto", 0.75),
                             (X_memory, "auto", 0.75), (X_map, False, 3.0)):
        tracemalloc.start()
        try:
            FastMLP(**kw, stream=stream).fit(X, y)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < bound * X.nbytes, (stream, peak / X.nbytes)
        if stream is not False:
            assert peak < 0.4 * X.nbytes, (stream, peak / X.nbytes)
        else:
            assert peak > 1.5 * X.nbytes, peak / X.nbytes  # what a part at a time avoids


def test_streamed_blocks_are_at_most_an_eighth_of_X(pixels, on_disk, monkeypatch):
    # 3,000 rows of 784 uint8 (2.35 MB), far under STREAM_BYTES: blocks of 5 batches of
    # 64, not one block holding all of X
    y = pixels[0][1]
    assert _stream.part_rows_for(on_disk, 64) == 320
    reads = _spy(monkeypatch, _stream.Streamed, "_read")
    FastMLP(hidden_layer_sizes=(8,), max_iter=1, random_state=0, input_scale=1 / 255,
            stream=True, backend="numpy").fit(on_disk, y)
    assert len(reads) == 10  # ceil(3000 / 320)


def test_bad_stream_is_refused(pixels):
    (X, y), _ = pixels
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="stream must be 'auto', True or False"):
            FastMLP(stream=bad).fit(X[:50], y[:50])


# ------------------------------------------------------------------ progress


@pytest.fixture
def terminal(monkeypatch):
    monkeypatch.setattr(_progress, "to_terminal", lambda: True)


@pytest.mark.parametrize("with_tqdm", [False, True])
def test_progress_bar_in_a_terminal_only_when_verbose(pixels, terminal, capsys, monkeypatch,
                                                      with_tqdm):
    if with_tqdm:
        pytest.importorskip("tqdm")
    else:
        monkeypatch.setitem(sys.modules, "tqdm", None)  # as if not installed
    (X, y), _ = pixels
    kw = dict(hidden_layer_sizes=(16,), max_iter=2, random_state=0, input_scale=1 / 255)
    FastMLP(**kw).fit(X, y)
    assert capsys.readouterr().err == ""
    FastMLP(**kw, verbose=True).fit(X, y)
    captured = capsys.readouterr()
    assert "Epoch [2/2]" in captured.out
    assert "epoch 1" in captured.err and "epoch 2" in captured.err
    if not with_tqdm:
        assert "3,000/3,000 rows" in captured.err and "rows/s" in captured.err
        assert "loss " in captured.err and "ETA" in captured.err


def test_no_bar_outside_a_terminal(pixels, capsys):
    (X, y), _ = pixels
    FastMLP(hidden_layer_sizes=(8,), max_iter=1, verbose=True).fit(X[:500], y[:500])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kw", [{}, {"solver": "sgd", "learning_rate": "invscaling"},
                                {"early_stopping": True}])
def test_an_epoch_in_parts_trains_exactly_as_one_call(pixels, backend_name, monkeypatch, kw):
    (X, y), _ = pixels
    kw = dict(hidden_layer_sizes=(16,), max_iter=2, random_state=0, backend=backend_name,
              input_scale=1 / 255, **kw)
    whole = FastMLP(**kw).fit(X, y)
    monkeypatch.setattr(_base.BaseMLP, "_shows_progress", lambda self: True)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    parts = FastMLP(**kw).fit(X, y)  # 50 parts of whole batches an epoch
    np.testing.assert_array_equal(_params(parts), _params(whole))
    assert parts.loss_curve_ == whole.loss_curve_
    assert parts.train_scores_ == whole.train_scores_


def test_train_scores_follow_the_epochs(pixels):
    (X, y), _ = pixels
    model = FastMLP(hidden_layer_sizes=(16,), max_iter=3, random_state=0,
                    input_scale=1 / 255).fit(X, y)
    assert len(model.train_scores_) == 3 and 0.5 < model.train_scores_[-1] <= 1.0
    model.partial_fit(X, y)
    assert len(model.train_scores_) == len(model.loss_curve_) == 4
    model.set_params(warm_start=False).fit(X, y)
    assert len(model.train_scores_) == 3
    assert not hasattr(FastMLPRegressor(max_iter=1).fit(X[:100], y[:100] * 1.0),
                       "train_scores_")


def test_train_scores_are_saved_and_files_without_them_load(pixels, tmp_path):
    (X, y), _ = pixels
    model = FastMLP(hidden_layer_sizes=(8,), max_iter=2, random_state=0,
                    input_scale=1 / 255).fit(X[:600], y[:600])
    model.save(tmp_path / "m.npz")
    assert FastMLP.load(tmp_path / "m.npz").train_scores_ == model.train_scores_
    with np.load(tmp_path / "m.npz") as archive:  # as a file of an earlier version
        arrays = {k: archive[k] for k in archive.files if k != "train_scores"}
    np.savez(tmp_path / "old.npz", **arrays)
    old = FastMLP.load(tmp_path / "old.npz")
    assert not hasattr(old, "train_scores_")
    np.testing.assert_array_equal(old.predict(X[:50]), model.predict(X[:50]))
    old.partial_fit(X[:600], y[:600])
    assert len(old.train_scores_) == 1 and len(old.loss_curve_) == 3
