"""Writing small IDX files for tests."""

import gzip
import struct

import numpy as np

from fastmlp.datasets import MNIST_FILES

_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
               np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array) -> bytes:
    array = np.asarray(array)
    if array.dtype.kind in "iuf" and array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, _TYPE_CODES[array.dtype], array.ndim])
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.tobytes()


def write_idx(path, array, compress=False):
    data = idx_bytes(array)
    if compress:
        data = gzip.compress(data)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def write_mnist_like(directory, n_train=300, n_test=100, side=8, seed=0, compress=True):
    """Four MNIST-style files of a learnable toy problem: the class is the brightest row band."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 4, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, side, side)).astype(np.uint8)
        band = side // 4
        for i, label in enumerate(y):
            images[i, label * band:(label + 1) * band, :] += 180
        splits[split] = (images, y)
    suffix = ".gz" if compress else ""
    write_idx(directory / (MNIST_FILES["train_images"] + suffix), splits["train"][0], compress)
    write_idx(directory / (MNIST_FILES["train_labels"] + suffix), splits["train"][1], compress)
    write_idx(directory / (MNIST_FILES["test_images"] + suffix), splits["test"][0], compress)
    write_idx(directory / (MNIST_FILES["test_labels"] + suffix), splits["test"][1], compress)
    return splits
