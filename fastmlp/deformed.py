"""Deformed MNIST digits on disk, for training at scale offline (the MNIST-8M setting).

``write_deformed_mnist(path, n)`` writes n digits to ``path`` as a uint8 ``.npy`` array of
shape (n, 784), filled through a memory map block by block (so n may exceed memory), and
their labels to ``labels_path(path)`` as an int64 ``.npy``. Row i is a deformation of
MNIST training image ``i % 60000``: a random elastic distortion (a displacement field of
uniform noise in [-1, 1] smoothed by a Gaussian of ``elastic_sigma`` pixels and scaled
by ``elastic_alpha``, after Simard, Steinkraus and Platt, 2003), then a rotation of up
to ``max_rotation`` degrees and a shift of up to ``max_shift`` pixels about the centre,
sampled bilinearly. Block k of ``block_rows`` rows draws from its own generator,
seeded by (random_state, k): the same arguments give the same file, byte for byte.
``load_deformed_mnist(path)`` opens the file again as a read-only memory map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _progress
from ._idx import load_mnist

SIDE = 28


def labels_path(path) -> Path:
    """Where the labels of the digits at ``path`` live: ``name.labels.npy`` beside it."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".npy") + ".labels.npy")


def _deform(images, rng, max_shift, max_rotation, alpha, sigma):
    """The deformed copies of ``images`` (b, 28, 28) float32, as uint8."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    b = images.shape[0]
    noise = rng.uniform(-1.0, 1.0, size=(2, b, SIDE, SIDE)).astype(np.float32)
    dy = gaussian_filter(noise[0], sigma=(0, sigma, sigma), mode="constant") * alpha
    dx = gaussian_filter(noise[1], sigma=(0, sigma, sigma), mode="constant") * alpha
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, size=b)).astype(np.float32)
    shift = rng.uniform(-max_shift, max_shift, size=(2, b)).astype(np.float32)
    centre = (SIDE - 1) / 2.0
    grid = np.arange(SIDE, dtype=np.float32) - centre
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    # where each output pixel is read from: rotate about the centre, shift, distort
    src_y = cos * yy - sin * xx + centre - shift[0][:, None, None] + dy
    src_x = sin * yy + cos * xx + centre - shift[1][:, None, None] + dx
    index = np.broadcast_to(np.arange(b, dtype=np.float32)[:, None, None], src_y.shape)
    out = map_coordinates(images, [index, src_y, src_x], order=1, mode="constant", cval=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_deformed_mnist(path, n, *, random_state=0, max_shift=2.0, max_rotation=15.0,
                         elastic_alpha=34.0, elastic_sigma=4.0, block_rows=8192,
                         progress=None, source=None):
    """Write ``n`` deformed MNIST training digits, and their labels, to ``.npy`` files.

    Row i deforms MNIST training image ``i % 60000``: an elastic distortion (uniform
    noise in [-1, 1] smoothed by a Gaussian of ``elastic_sigma`` pixels and scaled by
    ``elastic_alpha``, after Simard, Steinkraus and Platt, 2003), then a rotation and a
    shift about the centre, sampled bilinearly. The file is filled through a memory map
    block by block, so ``n`` may exceed memory; block k draws from its own generator
    seeded by ``(random_state, k)``, so the same arguments give the same file, byte for
    byte.

    Parameters
    ----------
    path : str or path-like
        The ``.npy`` file to write: uint8, shape (n, 784). The labels go beside it, as
        ``NAME.labels.npy`` (int64, shape (n,)).
    n : int
        How many digits.
    random_state : int, default 0
        Seed of the deformations.
    max_shift : float, default 2.0
        Largest shift, in pixels, along each axis.
    max_rotation : float, default 15.0
        Largest rotation, in degrees, either way.
    elastic_alpha : float, default 34.0
        Scale of the elastic displacement field.
    elastic_sigma : float, default 4.0
        Width, in pixels, of the Gaussian that smooths the displacement field.
    block_rows : int, default 8192
        Digits deformed and written at a time.
    progress : bool or None, default None
        Show a progress bar; None shows one when stderr is a terminal.
    source : tuple of (ndarray, ndarray), optional
        ``(images, labels)`` to deform instead of the bundled MNIST training set:
        uint8 images of shape (m, 784) and m labels.

    Returns
    -------
    tuple of Path
        The digits' path and the labels' path.

    See Also
    --------
    load_deformed_mnist : Open the files again, the digits as a memory map.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from fastmlp.datasets import load_deformed_mnist, write_deformed_mnist
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> digits, labels = write_deformed_mnist(folder / "digits.npy", 3, progress=False)
    >>> labels.name
    'digits.labels.npy'
    >>> X, y = load_deformed_mnist(digits)
    >>> X.shape, X.dtype.name, y.tolist()
    ((3, 784), 'uint8', [5, 0, 4])
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be at least 1; got {block_rows!r}")
    if source is None:
        (images, labels), _ = load_mnist(raw=True)
        images = images.reshape(images.shape[0], -1)
    else:
        images, labels = np.asarray(source[0]), np.asarray(source[1])
    if images.ndim != 2 or images.shape[1] != SIDE * SIDE or images.dtype != np.uint8:
        raise ValueError(f"source images must be uint8 of shape (m, {SIDE * SIDE}); got "
                         f"{images.dtype} {images.shape}")
    path = Path(path)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                    shape=(int(n), SIDE * SIDE))
    y = np.empty(int(n), dtype=np.int64)
    m = images.shape[0]
    bar = _progress.bar(n, "deformed MNIST", _progress.to_terminal() if progress is None
                        else progress, leave=True)
    try:
        for k, start in enumerate(range(0, n, block_rows)):
            stop = min(start + block_rows, n)
            rows = np.arange(start, stop) % m
            rng = np.random.default_rng([int(random_state), k])
            batch = images[rows].reshape(-1, SIDE, SIDE).astype(np.float32)
            out[start:stop] = _deform(batch, rng, max_shift, max_rotation, elastic_alpha,
                                      elastic_sigma).reshape(stop - start, -1)
            y[start:stop] = labels[rows]
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    out.flush()
    del out
    np.save(labels_path(path), y)
    return path, labels_path(path)


def load_deformed_mnist(path):
    """Open digits written by `write_deformed_mnist`, the pixels as a memory map.

    Parameters
    ----------
    path : str or path-like
        The digits' ``.npy`` file; its labels must lie beside it as ``NAME.labels.npy``.

    Returns
    -------
    X : numpy.memmap
        Read-only uint8 pixels, shape (n, 784). Train on it with
        ``input_scale=1/255``: no float copy is made, and a file of 1 GiB or more is
        streamed in blocks.
    y : ndarray
        int64 labels, shape (n,).

    Raises
    ------
    FileNotFoundError
        If the file or its labels are missing.
    ValueError
        If the arrays are not uint8 digits of 784 pixels with one label each.

    See Also
    --------
    write_deformed_mnist : Write such files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not labels_path(path).is_file():
        raise FileNotFoundError(f"{labels_path(path)}: the labels of {path.name} are missing")
    X = np.load(path, mmap_mode="r")
    y = np.load(labels_path(path))
    if X.ndim != 2 or X.dtype != np.uint8 or y.shape != (X.shape[0],):
        raise ValueError(f"{path}: expected uint8 (n, 784) digits and n labels; got "
                         f"{X.dtype} {X.shape} and labels {y.shape}")
    return X, y


__all__ = ["write_deformed_mnist", "load_deformed_mnist", "labels_path"]
