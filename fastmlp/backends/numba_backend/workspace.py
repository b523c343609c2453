"""The fused epoch's memory: the work layout of the parameters, and the buffers of a batch.

During an epoch the parameters (with their gradients and moments) live in a work layout
that keeps each thread's blocks contiguous; they are converted back when the call
returns. Every buffer is allocated once per call, none per mini-batch.
"""

from contextlib import contextmanager

import numba
import numpy as np

from ..layout import VECTOR_BYTES, padded_top
from ._config import U, inline, jit
from .inline import ublock
from .intrinsics import PANEL_LANES

# the number of blocks a fused epoch splits its work into, when set by work_blocks;
# otherwise the thread count
_WORK_BLOCKS = [None]


def work_blocks_now() -> int:
    """Blocks of work per parallel region of the fused epoch: the count work_blocks set,
    else Numba's current thread count."""
    return _WORK_BLOCKS[0] or max(1, numba.get_num_threads())


@contextmanager
def work_blocks(n):
    """The fused epoch's work split into ``n`` blocks whatever the thread count while the
    block runs (restored on exit). The blocks (and the work layout of the weights) fix
    the arithmetic, so a fit whose thread count changes between calls of train_epoch
    (the adaptive team, fastmlp.threads.AdaptiveTeam) gets the bits of a fit on ``n``
    threads; fewer threads run several blocks each."""
    previous = _WORK_BLOCKS[0]
    _WORK_BLOCKS[0] = max(1, int(n))
    try:
        yield
    finally:
        _WORK_BLOCKS[0] = previous


@inline
def segment(a_off, rows, width, n_blocks, k, blocked):
    """Where block k of a layer's units lives in a buffer: (base, row stride, c0, c1).

    Blocked buffers keep each thread's units together, rows of its block one after the
    other: unit c of row r is at base + r * stride + (c - c0). A plain buffer (the output
    layer's) is one block holding whole rows.
    """
    if blocked:
        c0, c1 = ublock(width, n_blocks, k)
        return a_off + rows * c0, c1 - c0, c0, c1
    if k == 0:
        return a_off, width, U(0), width
    return a_off, width, width, width


@inline
def _move_block(dst, src, w_off, n_o, outer, b0, b1, work_base, transposed, forward):
    """Move one thread's block of a weight matrix W (I, O) at w_off between the plain
    layout and its work block (outer, b1 - b0), row-major at work_base. Not transposed:
    rows a of W, columns b0:b1; transposed: columns a of W, rows b0:b1."""
    width = b1 - b0
    for a in range(outer):
        for b in range(b0, b1):
            plain = w_off + (b * n_o + a if transposed else a * n_o + b)
            work = work_base + a * width + (b - b0)
            if forward:
                dst[work] = src[plain]
            else:
                dst[plain] = src[work]


@jit
def _to_work_layout(dst, src, usizes, p_offs, n_blocks, forward):
    """Copy src (the flat layout) into dst (the work layout), or back if not forward.

    The work layout keeps each thread's share of every weight matrix contiguous, so no
    two threads write neighbouring cache lines: with the plain row-major layout, the
    hardware prefetcher of one core kept pulling the lines of the other core's columns
    and two threads ran slower than one. The first layer W (I, O) is stored by blocks of
    output columns, each block (I, width) row-major; every layer above stores W
    transposed, (O, I), by blocks of input units, each block (O, width). Biases keep their
    place. Thread blocks come from ublock, so the layout depends on n_blocks.
    """
    if src.shape[0] == 0:
        return
    n_layers = usizes.shape[0] - 1
    for layer in range(n_layers):
        n_i = usizes[layer]
        n_o = usizes[layer + 1]
        w_off = p_offs[layer]
        for k in range(n_blocks):
            if layer == 0:
                c0, c1 = ublock(n_o, n_blocks, k)
                _move_block(dst, src, w_off, n_o, n_i, c0, c1, w_off + n_i * c0, False,
                            forward)
            else:
                i0, i1 = ublock(n_i, n_blocks, k)
                _move_block(dst, src, w_off, n_o, n_o, i0, i1, w_off + n_o * i0, True,
                            forward)
        b_off = w_off + n_i * n_o
        for c in range(n_o):
            dst[b_off + c] = src[b_off + c]


# models of at least this many bytes are put in the work layout in place (Workspace;
# a 100,000-128-20 text model takes 51 MB an array, and copies of its parameters, moments
# and gradient would take 205 MB more); smaller ones get aligned working copies
IN_PLACE_BYTES = 16 * 2**20


def aligned_empty(n, dtype, align=64):
    """A 1-D array whose data starts on an ``align``-byte boundary (a cache line).

    Blocks owned by different threads start on multiples of ALIGN elements; with the base
    aligned too, no cache line is written by two threads (unaligned, two threads ran
    slower than one).
    """
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + n * dtype.itemsize].view(dtype)


# A thread's block of the first layer at least this wide sums its gradient by columns
# (epoch._columns_step); narrower blocks scatter it by rows. Measured in
# docs/archive/performance-log.md.
COLUMNS_MIN_WIDTH = 128


# A hidden layer above the first whose widest thread's block of W (its inputs times the
# thread's outputs) takes at most this many bytes, half of a core's L1 data cache, runs
# its three products through register blocks (epoch._small_dense_forward and
# _small_dense_gradients), each output a chain of FMAs in a fixed order; larger blocks
# go through BLAS, whose cache blocking wins there (docs/archive/performance-log.md).
SMALL_DENSE_BYTES = 16 * 1024


def small_dense_copies(params, sizes, n_blocks):
    """The forward copies of the small dense layers (see SMALL_DENSE_BYTES) when the work
    is split into n_blocks: (fwd_w, fwd_offs), fwd_w holding each such layer's W (I, O)
    row-major as in the plain layout, fwd_offs (L,) int64 where each starts in fwd_w, -1
    for the other layers (the first, the top one and large ones)."""
    sizes = [int(s) for s in sizes]
    n_layers = len(sizes) - 1
    offs = np.full(n_layers, -1, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum([i * o + o for i, o in zip(sizes, sizes[1:])])))
    total = 0
    for layer in range(1, n_layers - 1):
        block = max(_block_widths(sizes[layer + 1], n_blocks))
        if sizes[layer] * block * params.dtype.itemsize <= SMALL_DENSE_BYTES:
            offs[layer] = total
            total += sizes[layer] * sizes[layer + 1]
    # a vector's slack at the end, so that the last row's partial blocks load whole
    # vectors inside the array (see intrinsics.BLOCK_ROWS)
    fwd_w = aligned_empty(total + VECTOR_BYTES // params.dtype.itemsize, params.dtype)
    fwd_w[total:] = 0
    for layer in np.flatnonzero(offs >= 0):
        n = sizes[layer] * sizes[layer + 1]
        fwd_w[offs[layer] : offs[layer] + n] = params[starts[layer] : starts[layer] + n]
    return fwd_w, offs


def _block_widths(n_o, n_blocks):
    return [int(c1 - c0) for c0, c1 in (ublock(U(n_o), n_blocks, k) for k in range(n_blocks))]


def column_buffers(sizes, rows, n_blocks, x, dtype):
    """The buffers of the first layer's gradient by columns (epoch._columns_step), or
    empty ones when it is summed by rows: (col_ptr, col_rows, col_vals), one part per
    block of rows of a batch (ublock), each the part's non-zero inputs grouped by input
    column, as compressed sparse columns. Part k's column i holds entries
    col_ptr[k * (I0 + 2) + i] to col_ptr[k * (I0 + 2) + i + 1] of its stretch of
    col_rows (the rows in the batch) and col_vals, which starts at k * (its capacity).

    Used when there are hidden layers and x (SparseRows) is given, every thread's block of
    the first layer is a whole number of panels and at least COLUMNS_MIN_WIDTH wide, and a
    batch's non-zero inputs outnumber the columns (else the pass over the column pointers
    costs more than the entries)."""
    empty = (np.empty(0, np.int32), np.empty(0, np.uint32), np.empty(0, dtype))
    if x is None or len(sizes) < 3 or x.indptr.shape[0] < 2 or rows < 1:
        return empty
    widths = _block_widths(int(sizes[1]), n_blocks)
    if any(w % PANEL_LANES or w < COLUMNS_MIN_WIDTH for w in widths):
        return empty
    lengths = np.diff(x.indptr)
    n_in = int(sizes[0])
    if rows * lengths.mean() < n_in:
        return empty
    # the most entries a part can hold: its rows' longest possible rows
    part = min(int(ublock(U(rows), n_blocks, 0)[1]), lengths.shape[0])
    cap = int(np.partition(lengths, lengths.shape[0] - part)[-part:].sum())
    return (np.empty(n_blocks * (n_in + 2), np.int32), np.empty(n_blocks * cap, np.uint32),
            np.empty(n_blocks * cap, dtype))


class Workspace:
    """Buffers for batches of up to ``rows`` rows, allocated once per call, and the work
    layout copies of the parameters, gradients and optimizer moments.

    What the stages take, as tuples:

    - ``state()``: (params, grads, m, v) in the work layout;
    - ``net()``: (usizes (L+1,) uint64 layer widths, p_offs (L,) start of each layer in
      params, a_offs (L,) start of each layer's outputs in the activation and delta
      buffers, which hold ``rows`` rows per layer, rows as uint64);
    - ``buffers()``: (act_buf, delta_buf, row_loss, row_hit, pen_parts, top_w, fwd_w,
      fwd_offs), top_w the top layer's W (I, Kp) in the plain layout with its columns
      padded to whole vectors (layout.padded_top), kept in step with its work-layout copy
      (empty without hidden layers); fwd_w and fwd_offs the same for the small dense
      layers, unpadded (small_dense_copies);
    - ``columns()``: the buffers of the first layer's gradient by columns (see
      column_buffers; empty unless ``x``, X's SparseRows, is given).
    """

    def __init__(self, sizes, rows, params, m, v, grads=None, x=None):
        sizes = np.asarray(sizes, dtype=np.int64)
        widths = sizes[1:]
        dtype = params.dtype
        self.usizes = sizes.astype(np.uint64)
        self.p_offs = np.concatenate(([0], np.cumsum(sizes[:-1] * widths + widths)[:-1]))
        self.p_offs = self.p_offs.astype(np.uint64)
        self.a_offs = (rows * np.concatenate(([0], np.cumsum(widths)[:-1]))).astype(np.uint64)
        self.rows = U(rows)
        total = rows * int(widths.sum())
        self.act_buf = aligned_empty(total, dtype)
        self.delta_buf = aligned_empty(total, dtype)
        self.row_loss = np.empty(rows, dtype=np.float64)
        self.row_hit = np.empty(rows, dtype=np.int64)
        self.n_blocks = work_blocks_now()
        self.pen_parts = np.empty(self.n_blocks, dtype=np.float64)
        # the top layer's W read from the plain layout, before it changes; aligned, so
        # that no cache line holds rows that two threads refresh
        self.top_w = np.empty(0, dtype)
        if len(sizes) > 2:
            top = padded_top(params, sizes)
            self.top_w = aligned_empty(top.shape[0], dtype)
            self.top_w[:] = top
        self.fwd_w, self.fwd_offs = small_dense_copies(params, sizes, self.n_blocks)
        self.cols = column_buffers(sizes, rows, self.n_blocks, x, dtype)
        self.originals = (params, m, v)
        # a large model is put in the work layout in its own arrays, one array at a time
        # through a temporary copy, rather than copied whole: its working copies would
        # add twice the model's size for the epoch's whole length (see IN_PLACE_BYTES)
        self.in_place = params.nbytes >= IN_PLACE_BYTES and grads is not None
        if self.in_place:
            # the caller's gradient array, whose content is not needed here, is the
            # temporary copy of each
            self.work = self.originals
            for a in self.originals:
                if a.shape[0]:
                    grads[:] = a
                    _to_work_layout(a, grads, self.usizes, self.p_offs, self.n_blocks, True)
        else:
            self.work = tuple(aligned_empty(a.shape[0], dtype) for a in (params, m, v))
            for dst, src in zip(self.work, self.originals):
                _to_work_layout(dst, src, self.usizes, self.p_offs, self.n_blocks, True)
        # the first layer's gradient is summed into zeros, and each update clears it again
        self.grads = grads if self.in_place else aligned_empty(params.shape[0], dtype)
        self.grads[:] = 0

    def state(self):
        p, m, v = self.work
        return (p, self.grads, m, v)

    def net(self):
        return (self.usizes, self.p_offs, self.a_offs, self.rows)

    def buffers(self):
        return (self.act_buf, self.delta_buf, self.row_loss, self.row_hit, self.pen_parts,
                self.top_w, self.fwd_w, self.fwd_offs)

    def columns(self):
        return self.cols

    def write_back(self, grads=None):
        """Put the parameters (and moments, and optionally grads) back in the flat
        layout."""
        if self.in_place:
            if grads is not None:
                # the gradient is wanted: it is put back first, through a temporary copy
                _to_work_layout(grads, grads.copy(), self.usizes, self.p_offs,
                                self.n_blocks, False)
            for a in self.originals:
                if a.shape[0]:
                    # a temporary copy in the gradient array when it is not wanted
                    scratch = a.copy() if grads is not None else self.grads
                    scratch[:] = a
                    _to_work_layout(a, scratch, self.usizes, self.p_offs, self.n_blocks,
                                    False)
            return
        for dst, src in zip(self.originals, self.work):
            _to_work_layout(dst, src, self.usizes, self.p_offs, self.n_blocks, False)
        if grads is not None:
            _to_work_layout(grads, self.grads, self.usizes, self.p_offs, self.n_blocks, False)
