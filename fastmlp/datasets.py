"""Readers for IDX files (the MNIST format) and the bundled MNIST data set.

The IDX format: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the data in C order, big-endian.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["load_idx", "load_mnist", "MNIST_FILES", "bundled_data_dir"]

# IDX type byte -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_GZIP_MAGIC = b"\x1f\x8b"


def bundled_data_dir() -> Path:
    """Folder of the MNIST files shipped inside the package."""
    return Path(__file__).resolve().parent / "data"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from None


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, gzipped or not, into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        The file. Gzip compression is detected from the content, not the name.

    Returns
    -------
    ndarray
        An array of the shape and element type the file declares, in native byte order.

    Raises
    ------
    ValueError
        If the file is empty, truncated, has trailing data, a bad magic number or an
        unknown element type.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: wrong magic number 0x{raw[:4].hex()}; an IDX file starts with two zero bytes"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{k:02X}" for k in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares zero dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated header ({len(raw)} of {header_len} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual < expected:
        raise ValueError(
            f"{path}: truncated data: header declares shape {shape} ({expected} bytes), "
            f"file holds {actual} bytes"
        )
    if actual > expected:
        raise ValueError(
            f"{path}: {actual - expected} bytes of trailing data after the declared shape {shape}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header_len)
    return data.astype(dtype.newbyteorder("="), copy=False).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    # Some distributions (Fashion-MNIST mirrors among them) write "idx3.ubyte".
    for name in (stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{directory}: no file named {stem} or {stem}.gz; expected the four MNIST-style IDX "
        f"files {', '.join(MNIST_FILES.values())}"
    )


def load_mnist(data_dir: str | os.PathLike | None = None, *, raw: bool = False):
    """Load MNIST, or any data set stored as the four MNIST-style IDX files.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
        ``.gz``). Defaults to the copy of MNIST bundled with fastmlp.
    raw : bool, default False
        If True, images are returned as uint8 pixels of shape (n, rows, cols) as stored.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X of shape (n_samples, rows * cols), float32 scaled to [0, 1] (or raw uint8);
        y of shape (n_samples,), int64 class labels.
    """
    directory = Path(data_dir) if data_dir is not None else bundled_data_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    arrays = {key: load_idx(_find(directory, stem)) for key, stem in MNIST_FILES.items()}
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if labels.ndim != 1:
            raise ValueError(f"{split} labels must be 1-D, got shape {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{split} set: {images.shape[0]} images but {labels.shape[0]} labels"
            )
        if raw:
            X = images
        else:
            X = images.reshape(images.shape[0], -1).astype(np.float32)
            if images.dtype == np.uint8:
                X *= np.float32(1.0 / 255.0)
        out.append((X, labels.astype(np.int64)))
    return tuple(out)
