import gzip

import numpy as np
import pytest

from fastmlp.datasets import load_idx, load_mnist

from .idx_util import idx_bytes, write_idx, write_mnist_like


def test_bundled_mnist(mnist):
    (X, y), (X_test, y_test) = mnist
    assert X.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X.dtype == np.float32 and X.min() == 0.0 and X.max() == 1.0
    assert y.dtype == np.int64 and y_test.shape == (10000,)
    # the canonical MNIST label counts
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert X.mean() == pytest.approx(0.1307, abs=1e-4)
    assert X.std() == pytest.approx(0.3081, abs=1e-4)


def test_raw_pixels():
    (X, _), (X_test, _) = load_mnist(raw=True)
    assert X.dtype == np.uint8 and X.shape == (60000, 28, 28) and X.max() == 255
    assert X_test.shape == (10000, 28, 28)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_load_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5)
    if np.dtype(dtype).kind == "u":
        array = np.abs(array)
    array = array.astype(dtype)
    path = write_idx(tmp_path / "a.idx", array, compress=compress)
    loaded = load_idx(path)
    assert loaded.shape == array.shape
    assert loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, array)


@pytest.mark.parametrize("content, message", [
    (b"", "too short"),
    (b"\x00\x00", "too short"),
    (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "wrong magic number"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX element type 0x07"),
    (b"\x00\x00\x08\x00", "zero dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated data"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing data"),
])
def test_bad_idx_files(tmp_path, content, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_idx(path)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((50, 4), dtype=np.uint8)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        load_idx(path)


def test_load_mnist_from_directory(tmp_path):
    splits = write_mnist_like(tmp_path, compress=False)
    (X, y), (X_test, y_test) = load_mnist(tmp_path)
    assert X.shape == (300, 64) and X_test.shape == (100, 64)
    np.testing.assert_allclose(X, splits["train"][0].reshape(300, 64) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, splits["test"][1])


def test_load_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist_mismatched_counts(tmp_path):
    write_mnist_like(tmp_path, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(ValueError, match="100 images but 7 labels"):
        load_mnist(tmp_path)


def test_text_classification_problem_is_deterministic_tfidf():
    from fastmlp.datasets import make_text_classification

    kw = dict(n_train=300, n_test=200, n_classes=8, n_terms=5_000, terms_per_doc=40,
              topic_terms=300, topic_pool=900)
    (X, y), (X_test, y_test) = make_text_classification(**kw)
    (X2, y2), _ = make_text_classification(**kw)
    (X3, _), _ = make_text_classification(**kw, random_state=1)
    assert X.shape == (300, 5_000) and X_test.shape == (200, 5_000)
    assert X.dtype == np.float32 and X.format == "csr" and X.has_canonical_format
    assert (X != X2).nnz == 0 and np.array_equal(y, y2)
    assert (X != X3).nnz > 0
    assert set(np.unique(np.concatenate([y, y_test]))) <= set(range(8))
    # every document has its terms_per_doc distinct terms, and rows of unit norm
    np.testing.assert_array_equal(np.diff(X.indptr), 40)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert (X.data > 0).all()


def test_text_classification_small_vocabulary_and_bad_sizes():
    from fastmlp.datasets import make_text_classification

    (X, y), _ = make_text_classification(n_train=50, n_test=10, n_terms=500,
                                         terms_per_doc=20)
    assert X.shape == (50, 500) and (np.diff(X.indptr) <= 20).all()
    with pytest.raises(ValueError, match="at least one"):
        make_text_classification(n_train=0)
