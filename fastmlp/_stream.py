"""Where an epoch's rows come from: prepared once and kept in memory, or streamed from
the memory map they are stored in, a block of rows at a time.

An epoch is a sequence of parts, each one call of the backend's ``train_epoch``: (the
backend's form of some rows of X, their Target, the order to visit them in). Calling
``train_epoch`` on consecutive slices of one order, with the Adam step count and the
schedule's position carried from one call to the next, trains exactly as one call on the
whole order (a slice holds whole batches), so splitting an epoch changes no result.

- ``InMemory``: X prepared once for the whole fit (``backend.prepare_inputs``); an epoch
  visits every row in one random permutation, one part (which the estimator may split
  further, for a progress bar or the adaptive thread team).
- ``Gathered``: X held as it is stored (integer pixels, in memory or in a small memory
  map) and prepared a part at a time: an epoch draws the permutation ``InMemory`` would,
  and each part gathers the next rows of it, in that order, and prepares them. The
  batches hold the same rows in the same order as ``InMemory``'s, so the model is the
  same bit for bit, while only a part's compressed rows are ever held (a uint8 X
  prepared whole takes 1.6 times its size again).
- ``Streamed``: X left where it is stored (a memory map of a file) and read in blocks of
  contiguous rows. An epoch visits the blocks in a random order and the rows of each
  block in a random order of their own (a shuffle by block order plus within-block
  permutation), so each block is read from the file in one sequential pass. A background
  thread reads the next block while the current one trains; the current block is
  prepared (compressed, converted, scaled) on the calling thread, so the kernels' thread
  teams never run two at once.
"""

from __future__ import annotations

import mmap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from .backends.codes import rows_of

# raw bytes of X in one streamed block: large enough that each block is one long
# sequential read and the per-call setup of train_epoch is a small share of its work,
# small enough that two blocks in flight are a few hundred MiB at most
STREAM_BYTES = 32 << 20


# "auto" streams a memory-mapped X of at least this many bytes in blocks
STREAM_AUTO_BYTES = 1 << 30

# how fit reads a training X (see how_read)
WHOLE, GATHERED, BLOCKS = "whole", "gathered", "blocks"


def how_read(X, stream) -> str:
    """How fit reads X, by the ``stream`` parameter ("auto", True, False):

    - BLOCKS (``Streamed``): a dense X with ``stream=True``, and with "auto" a memory
      map of STREAM_AUTO_BYTES or more, read from the file in blocks of contiguous rows;
    - GATHERED (``Gathered``): with "auto", any other dense X of an integer dtype (uint8
      pixels, whose compressed rows would take 1.6 times X's size again), prepared a
      part at a time in the order of the whole-X fit;
    - WHOLE (``InMemory``): everything else (sparse X, float X, ``stream=False``),
      prepared once (a float32 X's compressed rows take 0.4 times its size).
    """
    if sp.issparse(X) or stream is False:
        return WHOLE
    if stream is True or (X.nbytes >= STREAM_AUTO_BYTES and on_disk(X)):
        return BLOCKS
    return GATHERED if X.dtype.kind in "iu" else WHOLE


def on_disk(X) -> bool:
    """Whether dense X is a view of a memory-mapped file (np.memmap, np.load with
    mmap_mode): such an X is streamed rather than prepared whole."""
    a = X
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


def block_rows_for(X, batch_size, stream_bytes=None) -> int:
    """Rows per streamed block: about ``stream_bytes`` (default STREAM_BYTES) of X, a
    whole number of batches, at least one batch."""
    row_bytes = max(1, X.shape[1] * X.dtype.itemsize)
    budget = STREAM_BYTES if stream_bytes is None else stream_bytes
    return max(1, budget // (row_bytes * batch_size)) * batch_size


# a part (gathered or streamed) is at most this share of X (and at most STREAM_BYTES of
# it), so that the parts in flight (two read, one compressed) stay well under the
# input's size however few its rows
PART_SHARE = 8


def part_rows_for(X, batch_size) -> int:
    """Rows per part of a fit that reads X a part at a time (Gathered, Streamed): about
    STREAM_BYTES of X or 1/PART_SHARE of it, the smaller, a whole number of batches, at
    least one."""
    return block_rows_for(X, batch_size, min(STREAM_BYTES, X.nbytes // PART_SHARE))


def _read_ahead(source, read, keys):
    """(key, source.backend's form of read(key)) for each key in turn: each read runs on
    a background thread while the part before trains, and is prepared on the calling
    thread (so the kernels' thread teams never run two at once) into the memory of the
    part before (``buffers``), the raw rows dropped before the part is yielded."""
    buffers = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastmlp-read") as pool:
        ahead = pool.submit(read, keys[0])
        for i, key in enumerate(keys):
            raw = ahead.result()
            if i + 1 < len(keys):
                ahead = pool.submit(read, keys[i + 1])
            data = source.backend.prepare_inputs(raw, source.dtype, source.scale, buffers)
            del raw
            yield key, data


class InMemory:
    """X prepared once; an epoch is one shuffled pass, as one part."""

    def __init__(self, data, target, n_samples):
        self.data, self.target, self.n_samples = data, target, n_samples

    def parts(self, rng, shuffle):
        order = (rng.permutation(self.n_samples) if shuffle
                 else np.arange(self.n_samples)).astype(np.int64)
        yield self.data, self.target, order


class Gathered:
    """X (N, I0) kept as it is stored, prepared ``part_rows`` rows at a time in the
    order of the epoch: the rows of one permutation of all rows (drawn as InMemory
    draws it), gathered from X part by part, in that order, and prepared with
    ``backend.prepare_inputs(rows, dtype, scale)``; each part is then visited in the
    order it was gathered in. ``rows``: the rows of X that train, in the order of the
    training split (None: all), when some are held out for early stopping: the order
    InMemory's copy of them would have. A background thread gathers the next part while
    the current one trains."""

    def __init__(self, X, target, backend, dtype, scale, part_rows, rows=None):
        self.X, self.target, self.backend = X, target, backend
        self.dtype, self.scale, self.part_rows, self.rows = dtype, scale, part_rows, rows
        self.n_samples = X.shape[0] if rows is None else rows.shape[0]

    def _gather(self, picked):
        """X's rows ``picked`` (positions among the training rows), in that order."""
        rows = picked if self.rows is None else self.rows[picked]
        if isinstance(self.X, np.ndarray) and not on_disk(self.X):
            return np.take(self.X, rows, axis=0)
        # from a file, in ascending order (one forward pass), then put in order
        ascending = np.argsort(rows, kind="stable")
        out = np.empty((rows.shape[0], self.X.shape[1]), dtype=self.X.dtype)
        out[ascending] = self.X[rows[ascending]]
        return out

    def parts(self, rng, shuffle):
        order = (rng.permutation(self.n_samples) if shuffle
                 else np.arange(self.n_samples)).astype(np.int64)
        spans = [(s, min(s + self.part_rows, self.n_samples))
                 for s in range(0, self.n_samples, self.part_rows)]

        def read(span):
            return self._gather(order[span[0]:span[1]])

        for (start, stop), data in _read_ahead(self, read, spans):
            yield (data, rows_of(self.target, order[start:stop]),
                   np.arange(stop - start, dtype=np.int64))


class Streamed:
    """X (N, I0) on disk, read ``block_rows`` rows at a time and prepared block by block
    with ``backend.prepare_inputs(block, dtype, scale)``. ``rows``: the rows of X that
    train, ascending (None: all), when some are held out for early stopping."""

    def __init__(self, X, target, backend, dtype, scale, block_rows, rows=None):
        self.X, self.target, self.backend = X, target, backend
        self.dtype, self.scale, self.block_rows, self.rows = dtype, scale, block_rows, rows
        self.n_samples = X.shape[0] if rows is None else rows.shape[0]

    @property
    def n_blocks(self) -> int:
        return -(-self.n_samples // self.block_rows)

    def _span(self, k):
        return k * self.block_rows, min((k + 1) * self.block_rows, self.n_samples)

    def _read(self, k):
        """Block k's rows of X, copied into memory (so the file is read here, on the
        background thread, and not by the kernels)."""
        start, stop = self._span(k)
        if self.rows is None:
            return np.array(self.X[start:stop], order="C")
        return np.ascontiguousarray(self.X[self.rows[start:stop]])

    def parts(self, rng, shuffle):
        """The epoch's parts, one a block: block order drawn first, then each block's row
        order as it comes."""
        blocks = rng.permutation(self.n_blocks) if shuffle else np.arange(self.n_blocks)
        for k, data in _read_ahead(self, self._read, blocks):
            start, stop = self._span(k)
            n = stop - start
            order = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64)
            yield data, rows_of(self.target, slice(start, stop)), order
