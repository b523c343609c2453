"""Deformed MNIST on disk (fastmlp.datasets.write_deformed_mnist, ``fastmlp deform``) and
training from it (``fastmlp train --data FILE``)."""

import numpy as np
import pytest

from fastmlp.cli import main
from fastmlp.datasets import load_deformed_mnist, load_mnist, write_deformed_mnist
from fastmlp.deformed import labels_path


@pytest.fixture(scope="module")
def source():
    (images, labels), _ = load_mnist(raw=True)
    return images[:50].reshape(50, -1), labels[:50]


def test_the_same_arguments_give_the_same_file(tmp_path, source):
    a, b, c = (tmp_path / f"{name}.npy" for name in "abc")
    write_deformed_mnist(a, 120, source=source, block_rows=32, progress=False)
    write_deformed_mnist(b, 120, source=source, block_rows=32, progress=False)
    write_deformed_mnist(c, 120, source=source, block_rows=32, progress=False,
                         random_state=1)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    X, y = load_deformed_mnist(a)
    assert isinstance(X, np.memmap) and X.dtype == np.uint8 and X.shape == (120, 784)
    # row i deforms source image i % 50, and carries its label
    np.testing.assert_array_equal(y, source[1][np.arange(120) % 50])


def test_no_deformation_gives_the_source_back(tmp_path, source):
    path = tmp_path / "same.npy"
    write_deformed_mnist(path, 50, source=source, max_shift=0.0, max_rotation=0.0,
                         elastic_alpha=0.0, progress=False)
    np.testing.assert_array_equal(load_deformed_mnist(path)[0], source[0])


def test_deformed_digits_resemble_their_source(tmp_path, source):
    path = tmp_path / "d.npy"
    write_deformed_mnist(path, 50, source=source, progress=False)
    X = load_deformed_mnist(path)[0].astype(np.float64)
    S = source[0].astype(np.float64)
    assert not np.array_equal(X, S)
    own = [np.corrcoef(X[i], S[i])[0, 1] for i in range(50)]
    other = [np.corrcoef(X[i], S[(i + 1) % 50])[0, 1] for i in range(50)]
    assert np.mean(own) > 0.4 and np.mean(own) > np.mean(other) + 0.2, (own, other)
    # ink is moved, not made or lost: total intensity within 25 % on average
    ratio = X.sum(axis=1) / S.sum(axis=1)
    assert 0.75 < np.median(ratio) < 1.25


def test_progress_bar_and_bad_arguments(tmp_path, source, capsys):
    write_deformed_mnist(tmp_path / "p.npy", 60, source=source, block_rows=20, progress=True)
    assert "60" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n must be a positive int"):
        write_deformed_mnist(tmp_path / "x.npy", 0)
    with pytest.raises(ValueError, match="source images must be uint8"):
        write_deformed_mnist(tmp_path / "x.npy", 5, source=(source[0].astype(float),
                                                            source[1]))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_deformed_mnist(tmp_path / "missing.npy")
    labels_path(tmp_path / "p.npy").unlink()
    with pytest.raises(FileNotFoundError, match="labels"):
        load_deformed_mnist(tmp_path / "p.npy")


def test_deform_then_train_from_the_file(tmp_path, capsys):
    path = tmp_path / "digits.npy"
    assert main(["deform", str(path), "--rows", "2000"]) == 0
    assert main(["train", "--data", str(path), "--epochs", "2", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2000 digits" in out
    accuracy = float(out.split("Test Accuracy: ")[-1].split("%")[0])
    assert accuracy > 70.0  # on MNIST's 10,000 test digits; chance is 10 %
