"""Readers for IDX files (the MNIST format) and the bundled MNIST data set.

The IDX format: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the data in C order, big-endian.

``fastmlp.datasets`` offers these with the other data sets; they live here, below both
it and ``deformed`` (which deforms the bundled digits), so that neither imports the
other.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

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
    """The folder of the MNIST files shipped inside the package.

    Returns
    -------
    pathlib.Path
        The folder, which `load_mnist` reads when given no other.
    """
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

    IDX is the format of the MNIST files: a 4-byte magic number
    ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 dimension sizes, then
    the values in C order, big-endian.

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
        unknown element type, or is a corrupt gzip stream.

    See Also
    --------
    load_mnist : Read the four IDX files of an MNIST-style data set.

    Examples
    --------
    A file of 2 x 3 unsigned bytes (element type 0x08):

    >>> import os, tempfile
    >>> from fastmlp import load_idx
    >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "small-idx2-ubyte")
    ...     with open(path, "wb") as f:
    ...         _ = f.write(header + bytes(range(6)))
    ...     array = load_idx(path)
    >>> array
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
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


def _as_float32_pixels(images):
    """float32 of 2-D ``images``, uint8 ones scaled to [0, 1] (float32(x) * float32(1/255),
    in one pass), into memory on small pages: MNIST's 188 MB are written once and then
    read row by row, and a new process's first touch of huge pages cost more than the
    conversion (fastmlp.backends.pages.small_page_empty)."""
    from .backends.pages import small_page_empty

    X = small_page_empty(images.size, np.float32).reshape(images.shape)
    if images.dtype == np.uint8:
        np.multiply(images, np.float32(1.0 / 255.0), out=X, dtype=np.float32)
    else:
        X[...] = images
    return X


def load_mnist(data_dir: str | os.PathLike | None = None, *, raw: bool = False):
    """Load MNIST, or any data set stored as the four MNIST-style IDX files.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally
        gzipped (``.gz``); names with ``.idx`` in place of ``-idx``, as some mirrors
        write them, are found too. Defaults to the copy of MNIST bundled with fastmlp.
    raw : bool, default False
        If True, the images are returned as stored: uint8 pixels of shape
        (n_samples, rows, cols).

    Returns
    -------
    train : tuple of (ndarray, ndarray)
        ``(X_train, y_train)``: the images, float32 of shape (n_samples, rows * cols)
        scaled to [0, 1] (with ``raw``, as stored), and their int64 class labels, of
        shape (n_samples,).
    test : tuple of (ndarray, ndarray)
        ``(X_test, y_test)``, in the same form.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` is not a folder or lacks one of the four files.
    ValueError
        If a file is not a valid IDX file, or a split's images and labels differ in
        number.

    See Also
    --------
    load_idx : Read one IDX file.

    Examples
    --------
    >>> from fastmlp import load_mnist
    >>> (X_train, y_train), (X_test, y_test) = load_mnist()
    >>> X_train.shape, X_train.dtype
    ((60000, 784), dtype('float32'))
    >>> X_test.shape, y_test[:5]
    ((10000, 784), array([7, 2, 1, 0, 4]))
    >>> bool(X_train.min() == 0.0 and X_train.max() == 1.0)
    True
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
            X = _as_float32_pixels(images.reshape(images.shape[0], -1))
        out.append((X, labels.astype(np.int64)))
    return tuple(out)
