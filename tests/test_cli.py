import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fastmlp import FastMLP
from fastmlp.cli import main

from .idx_util import write_mnist_like

EPOCH_LINE = re.compile(r"Epoch \[(\d+)/(\d+)\], Train Loss: (\d+\.\d{4}), "
                        r"Train Accuracy: (\d+\.\d{2})%, Test Accuracy: (\d+\.\d{2})%")


def test_train_on_idx_directory(tmp_path, capsys, backend_name):
    write_mnist_like(tmp_path)
    model_path = tmp_path / "model.npz"
    code = main(["train", "--data", str(tmp_path), "--epochs", "3", "--hidden", "16",
                 "--batch-size", "32", "--lr", "0.01", "--seed", "1", "--threads", "1",
                 "--backend", backend_name, "--save", str(model_path)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    epochs = [EPOCH_LINE.fullmatch(line) for line in lines[:3]]
    assert all(epochs), lines
    assert [(m.group(1), m.group(2)) for m in epochs] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert float(epochs[-1].group(5)) > 90.0
    assert re.fullmatch(r"Training completed in \d+\.\d{2} seconds", lines[3])
    assert lines[4] == f"Model saved to {model_path}"
    clf = FastMLP.load(model_path)
    assert clf.coefs_[0].shape == (64, 16)
    assert clf.backend_ == backend_name
    assert isinstance(clf.predict(np.zeros((1, 64), dtype=np.float32))[0], np.integer)


def test_train_rejects_bad_options(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["train", "--backend", "gpu"]) == 2
    assert "unknown backend 'gpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--solver", "adamw", "--weight-decay", "-0.5"])
    assert "expected a number >= 0, got '-0.5'" in capsys.readouterr().err


def test_train_with_adamw_dropout_and_max_norm_saves_them(tmp_path, capsys):
    write_mnist_like(tmp_path)
    model_path = tmp_path / "model.npz"
    assert main(["train", "--data", str(tmp_path), "--epochs", "2", "--hidden", "16",
                 "--solver", "adamw", "--weight-decay", "0.2", "--dropout", "0.25",
                 "--max-norm", "0.5", "--backend", "numpy", "--save", str(model_path)]) == 0
    params = FastMLP.load(model_path).get_params()
    assert (params["solver"], params["weight_decay"]) == ("adamw", 0.2)
    assert (params["dropout"], params["max_norm"]) == (0.25, 0.5)
    assert np.linalg.norm(FastMLP.load(model_path).coefs_[0], axis=0).max() <= 0.5 + 1e-6
    with pytest.raises(SystemExit):
        main(["train", "--dropout", "1"])
    assert "expected a rate in [0, 1), got '1'" in capsys.readouterr().err


@pytest.mark.numba  # auto's pick follows numba's compile
def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fastmlp ")
    assert re.search(r"numpy +available", out)
    assert "<- auto" in out
    assert "BLAS:" in out
    from fastmlp.backends import auto_candidates, available_backends, jit_cache

    auto = next(name for name in auto_candidates("float32") if name in available_backends())
    assert re.search(rf"{auto} +available +<- auto", out)
    assert out.count("<- auto") == 1
    assert re.search(rf"auto picks {auto} for float32: \w", out)
    if "numba" in available_backends():
        assert re.search(r"numba: numba [\d.]+, \d+ threads .* threading layer "
                         r"(omp|tbb|workqueue)", out)
        states = [jit_cache.state("numba", d) for d in ("float32", "float64")]
        assert (f"numba kernels: float32 {states[0]}, float64 {states[1]} (compiled code in "
                f"{jit_cache.code_dir()}") in out
    if "cython" in available_backends():
        assert re.search(r"cython: extension built (with|without) OpenMP", out)
    else:
        assert re.search(r"cython +not available \(.*FASTMLP_CYTHON=1", out)


def test_train_plots_the_curves(tmp_path, capsys, monkeypatch):
    write_mnist_like(tmp_path)
    args = ["train", "--data", str(tmp_path), "--epochs", "2", "--hidden", "16",
            "--batch-size", "32", "--plot", str(tmp_path / "curves.png")]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(args) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "curves.png").exists()  # refused before training
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert main(args) == 0
    assert f"Curves written to {tmp_path / 'curves.png'}" in capsys.readouterr().out
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_output_cut_short_by_its_reader_ends_quietly():
    # `fastmlp info | head -c 1`: the reader has gone before info writes
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        writer = subprocess.run([sys.executable, "-m", "fastmlp.cli", "info"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True,
                                timeout=120)
    finally:
        os.close(write_end)
    assert writer.returncode == 1
    assert "Traceback" not in writer.stderr and "BrokenPipe" not in writer.stderr


def test_the_command_ends_without_walking_the_garbage_collector_over_its_objects():
    # the console script is run(): main's exit code, then the collector's objects frozen
    # so that the interpreter's exit does not walk them
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="fastmlp")] == [
        "fastmlp.cli:run"]
    script = ("import gc, sys\nfrom fastmlp.cli import run\n"
              "code = run(sys.argv[1:])\nprint('frozen', code, gc.get_freeze_count() > 1000)")
    done = subprocess.run([sys.executable, "-c", script, "info"], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "frozen 0 True", done.stderr
    # a command that fails keeps its exit code
    failed = subprocess.run([sys.executable, "-c", script, "train", "--data", "/nonexistent"],
                            capture_output=True, text=True, timeout=120)
    assert failed.stdout.splitlines()[-1] == "frozen 1 True", failed.stderr
    assert "fastmlp train: error:" in failed.stderr
