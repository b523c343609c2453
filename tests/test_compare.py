"""``fastmlp compare``: its cases agree with the NumPy reference on every backend, and the
command writes its table, JSON and chart (or explains why there is no chart)."""

import json
import sys

import numpy as np
import pytest

import fastmlp.compare as compare
from fastmlp.backends import available_backends
from fastmlp.cli import main


@pytest.fixture(scope="module")
def small_mnist(mnist):
    (X, y), (X_test, y_test) = mnist
    return (X[:1500], y[:1500]), (X_test[:300], y_test[:300])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_case_matches_the_reference(backend, dtype, small_mnist):
    (X, y), (X_test, _) = small_mnist
    cases = compare.kernel_cases(X, y, X_test, batches=(64,), dtypes=(dtype,),
                                 epoch_rows=640)
    kernels = {c.kernel for c in cases}
    assert kernels == {"linear_forward", "linear_backward", "softmax_xent", "adam_update",
                       "sgd_update", "train_epoch", "predict_proba"}
    numpy_backend = compare.get_backend("numpy")
    for case in cases:
        ref_run, ref_out = case.make(numpy_backend)
        ref_run()
        run, out = case.make(backend)
        run()
        error = compare.max_abs_error(out(), [a.astype(np.float64) for a in ref_out()])
        # one Adam epoch amplifies rounding differences in weights whose gradients are
        # near zero; every other kernel matches to rounding
        limit = 0.1 if case.kernel == "train_epoch" else (
            1e-4 if case.dtype == "float32" else 1e-9)
        assert error <= limit, (case.group, error)


def test_median_time_repeats_until_min_time():
    calls = []
    seconds = compare.median_time(lambda: calls.append(1), min_time=0.0, min_repeats=5)
    assert len(calls) == 6  # one unmeasured call, then five measured
    assert 0 <= seconds < 0.01


def _run_quick(monkeypatch, small_mnist, tmp_path, capsys, extra=()):
    monkeypatch.setattr("fastmlp.datasets.load_mnist", lambda *a, **k: small_mnist)
    monkeypatch.setattr(compare, "BLAS_PAUSE", 0.0)
    out_json = tmp_path / "out.json"
    code = main(["compare", "--quick", "--threads", "2", "--json", str(out_json), *extra])
    captured = capsys.readouterr()
    return code, captured, json.loads(out_json.read_text())


@pytest.mark.numba  # every backend
def test_quick_report_json_and_table(monkeypatch, small_mnist, tmp_path, capsys):
    code, captured, report = _run_quick(monkeypatch, small_mnist, tmp_path, capsys)
    assert code == 0
    assert "[1/" in captured.err  # progress goes to stderr
    backends = available_backends()
    rows = report["kernels"]
    assert {r["backend"] for r in rows} == set(backends)
    assert {r["threads"] for r in rows} == {1, 2}
    assert {r["dtype"] for r in rows} == {"float32"}
    assert {r["batch"] for r in rows} == {None, 64, 256}
    for r in rows:
        assert r["median_s"] > 0
        if r["backend"] == "numpy":
            assert r["speedup_vs_numpy"] == 1.0 and r["max_abs_error"] == 0.0
    # the machine, threads and versions travel with the numbers
    machine = report["machine"]
    assert machine["threads"] == 2 and machine["cpus"] >= 1 and machine["cpu_model"]
    assert machine["versions"]["numpy"] == np.__version__
    assert set(report["gemm_gflops_fp32"]) == {"1", "2"}
    engines = [f["engine"] for f in report["fits"]]
    assert engines[: len(backends)] == [f"fastmlp[{b}]" for b in backends]
    assert "scikit-learn MLPClassifier" in engines
    for fit in report["fits"]:
        assert fit["seconds"] > 0 and 0.5 < fit["test_accuracy"] <= 1.0
    # the printed table carries the same rows
    assert "x numpy" in captured.out and "scikit-learn MLPClassifier" in captured.out
    assert captured.out.count("train_epoch") == 2 * 2 * len(backends)


@pytest.mark.numba  # every backend
def test_plot_is_written(monkeypatch, small_mnist, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "chart.png"
    code, captured, _ = _run_quick(monkeypatch, small_mnist, tmp_path, capsys,
                                   ["--plot", str(png)])
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.numba  # every backend
@pytest.mark.exhaustive  # a whole quick comparison again, for its last message
def test_plot_without_matplotlib_explains(monkeypatch, small_mnist, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    png = tmp_path / "chart.png"
    code, captured, report = _run_quick(monkeypatch, small_mnist, tmp_path, capsys,
                                        ["--plot", str(png)])
    assert code == 0
    assert not png.exists()
    assert "--plot needs matplotlib" in captured.out
    assert "pip install 'fastmlp[plot]'" in captured.out
    assert report["kernels"]  # the table and JSON are still complete


def test_threads_must_be_positive(capsys):
    assert main(["compare", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


@pytest.mark.numba  # every backend
def test_shape_grid_rows():
    """The shape grid's rows: one per engine and shape, ratios against numpy from the
    same run, and the GFLOP/s of the arithmetic each shape needs."""
    from fastmlp.backends import available_backends
    from fastmlp.compare import SHAPES, TABULAR_SHAPES, shape_rows, tabular_data

    rng = np.random.default_rng(0)
    X = (rng.random((300, 784)) * (rng.random((300, 784)) < 0.2)).astype(np.float32)
    y = np.arange(300) % 10
    messages = []
    rows, _ = shape_rows(((X, y), (X[:50], y[:50])), 1, 1, messages.append,
                         shapes=("784-128-10", "784-256-256-256-256-10",
                                 "friedman 40-64-64-1", "classification 100-256-256-2"),
                         tabular_rows=400, peers=False)
    engines = {r["engine"] for r in rows}
    assert engines == set(available_backends()) | {"auto"}
    assert len(messages) == 4 and len(rows) == 4 * len(engines)
    for r in rows:
        if r["shape"] in TABULAR_SHAPES:
            kind, hidden, batch, epochs = TABULAR_SHAPES[r["shape"]]
            sizes = {"friedman": [40, *hidden, 1], "classification": [100, *hidden, 2]}[kind]
            n = 400
        else:
            hidden, batch, epochs = SHAPES[r["shape"]]
            sizes, n = [784, *hidden, 10], 300
        X_fit = X if r["shape"] not in TABULAR_SHAPES else tabular_data(kind, 400)[0][0]
        nonzeros = np.count_nonzero(X_fit)
        # the first layer: forward and weight gradient on the non-zero inputs only
        flops = epochs * (4 * nonzeros * sizes[1] + 6 * n * sum(
            i * o for i, o in zip(sizes[1:-1], sizes[2:])))
        assert r["rows"] == n and r["vs_pytorch"] is None and r["vs_jax"] is None
        assert r["batch"] == batch and r["epochs"] == epochs and r["seconds"] > 0
        assert r["gflops"] == pytest.approx(flops / r["seconds"] / 1e9)
        numpy_row = next(q for q in rows if q["shape"] == r["shape"] and q["engine"] == "numpy")
        assert r["vs_numpy"] == pytest.approx(numpy_row["seconds"] / r["seconds"])
        assert r["predict_seconds"] > 0
        assert r["predict_vs_numpy"] == pytest.approx(r["predict_seconds"]
                                                      / numpy_row["predict_seconds"])


def test_tabular_data_is_synthetic_standardised_and_split():
    from fastmlp.compare import tabular_data

    (X, y), (X_test, y_test) = tabular_data("friedman", rows=500, test_rows=100)
    assert X.shape == (500, 40) and X_test.shape == (100, 40) and X.dtype == np.float32
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-3)
    assert y.dtype == np.float32 and y_test.shape == (100,) and np.ptp(y) > 5
    (Xc, yc), _ = tabular_data("classification", rows=500, test_rows=100)
    assert Xc.shape == (500, 100) and set(np.unique(yc)) == {0, 1}
    again = tabular_data("classification", rows=500, test_rows=100)
    np.testing.assert_array_equal(again[0][0], Xc)  # the same data every run
    with pytest.raises(ValueError, match="unknown tabular data"):
        tabular_data("higgs")


def test_jax_trains_the_shape_as_the_others_do():
    # JAX is a peer for the grid, never a dependency: where it is installed, its fit
    # learns the problem and its compile is timed apart
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    from fastmlp.compare import _fit_fastmlp, _fit_jax, tabular_data

    data = tabular_data("classification", rows=4000, test_rows=1000)
    seconds, accuracy, compile_seconds = _fit_jax(data, 3, hidden=(32,), batch=64)
    _, ours = _fit_fastmlp("numpy", data, 3, 1, hidden=(32,), batch=64)
    assert seconds > 0 and compile_seconds > 0
    assert accuracy > 0.75 and abs(accuracy - ours) < 0.05, (accuracy, ours)
    data = tabular_data("friedman", rows=4000, test_rows=1000)
    seconds, r2, _ = _fit_jax(data, 20, hidden=(32,), batch=64, regression=True)
    _, ours = _fit_fastmlp("numpy", data, 20, 1, hidden=(32,), batch=64, regression=True)
    assert r2 > 0.5 and abs(r2 - ours) < 0.1, (r2, ours)
    _, predict_seconds, _ = _fit_jax(data, 1, hidden=(8,), batch=64, predict_repeats=3)
    assert predict_seconds > 0


@pytest.mark.numba  # every backend
def test_text_report_json_and_table(monkeypatch, tmp_path, capsys):
    """``fastmlp compare --text --quick``: every backend with exact Adam, lazy Adam on the
    default one, MLPClassifier and the linear model, on the same sparse problem."""
    from fastmlp.backends import get_backend
    from fastmlp.compare_text import TextProblem

    small = TextProblem(train=400, test=200, terms=2000, hidden=16, epochs=1)
    monkeypatch.setattr("fastmlp.compare_text.QUICK_TEXT", small)
    out_json = tmp_path / "text.json"
    code = main(["compare", "--text", "--quick", "--threads", "2", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(out_json.read_text())
    engines = [r["engine"] for r in report["text"]]
    backends = available_backends()
    assert set(engines[: len(backends)]) == {f"fastmlp[{b}]" for b in backends}
    assert f"fastmlp[{get_backend('auto').NAME}] lazy_adam" in engines
    assert "scikit-learn MLPClassifier" in engines
    assert engines[-1].startswith("linear")
    for row in report["text"]:
        assert row["seconds"] > 0 and 0.0 <= row["accuracy"] <= 1.0
        assert row["vs_sklearn"] == pytest.approx(
            next(r["seconds"] for r in report["text"] if r["engine"].startswith("scikit"))
            / row["seconds"])
        if row["engine"].startswith("fastmlp"):
            assert row["peak_mib"] is not None and row["peak_mib"] > 0
    # exact Adam is one optimizer on every backend: the same accuracy to a row or two
    exact = [r["accuracy"] for r in report["text"][: len(backends)]]
    assert max(exact) - min(exact) <= 2 / small.test
    assert report["problem"]["terms"] == 2000
    assert "400 x 2000 TF-IDF" in captured.out
