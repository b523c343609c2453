"""Code Numba's own compiler does not write well, written in LLVM IR: a stack buffer
that stays in vector registers (the panel), explicit vector sums of rows, and lane counts
as constants LLVM can unroll by. With the JIT off (NUMBA_DISABLE_JIT=1) each has a plain
Python version that computes the same values, so the tests cover the code around them.
"""

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..layout import VECTOR_BYTES
from ._config import U, inline_always

# A panel: PANEL_LANES values of a row, summed in registers. Adding rows of a matrix
# into a row of an array makes LLVM load and store that row around every addition,
# because it cannot prove the two arrays apart; a buffer on the stack cannot alias
# anything, so LLVM keeps it in vector registers (faster per non-zero input, both for the
# forward pass and for the first layer's gradient): 64 float32 take eight of the 16 AVX2
# registers. The lane count is the same for float64 (sixteen registers, some spilled):
# with 32 lanes LLVM unrolled the 32-step loops in full and then left them scalar, slower
# than plain loops. Figures in docs/archive/performance-log.md.
PANEL_LANES = 64

if numba.config.DISABLE_JIT:

    def panel(like):
        return np.empty(PANEL_LANES, dtype=like.dtype)

    def panel_width(like):
        return U(PANEL_LANES)

else:

    @intrinsic
    def _panel_buffer(typingctx, like):
        # a stack buffer of PANEL_LANES values of like's dtype, allocated once per function
        dtype = like.dtype

        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_data_type(dtype),
                                       size=PANEL_LANES)

        return types.CPointer(dtype)(like), codegen

    @intrinsic
    def panel_width(typingctx, like):
        # PANEL_LANES, as a constant LLVM can unroll loops by
        def codegen(context, builder, signature, args):
            return context.get_constant(types.uint64, PANEL_LANES)

        return types.uint64(like), codegen

    @inline_always
    def panel(like):
        # inlined, so the buffer belongs to the caller's frame
        return carray(_panel_buffer(like), panel_width(like))


# Vector sums of rows: out[oo : oo + L] = sum over q in [q0, q1) of
# a_q * w[w_base + j * w_stride : ... + L], where j = idx[q] (or q when idx is None),
# a_q = vals[vo + j] for an "indirect" kernel and vals[vo + q] otherwise, and L values
# fill n_bytes. They are written in LLVM IR with explicit vector types: a row of so few
# values gives LLVM's vectorisers nothing to work with, and the same loop in Python-level
# Numba code came out as scalar FMAs with the partial sums spilled to the stack, several
# times slower. The sum runs in n_sums interleaved partial sums, so that consecutive FMAs
# do not wait for each other, added pairwise at the end in a fixed order. No bounds are
# checked: the caller makes sure every row it names holds L values.
VECTOR_SUMS = 4


def _vector_sum_kernel(n_bytes, n_sums, indirect, accumulate=False):
    """A vector sum of rows (see above) as a Numba intrinsic, or as plain Python with the
    JIT off. ``accumulate``: the sum starts from out's values instead of zeros (one
    partial sum only)."""
    assert not accumulate or n_sums == 1
    if numba.config.DISABLE_JIT:

        def sum_rows(out, oo, w, w_base, w_stride, vals, vo, idx, q0, q1):
            lanes = n_bytes // w.dtype.itemsize
            acc = np.zeros((n_sums, lanes), dtype=w.dtype)
            if accumulate:
                acc[0] = out[oo : oo + lanes]
            n_main = q0 + (q1 - q0) // n_sums * n_sums
            for q in range(q0, q1):
                j = q if idx is None else idx[q]
                off = int(w_base + U(j) * w_stride)
                part = (q - q0) % n_sums if q < n_main else 0
                acc[part] += vals[int(vo) + int(j if indirect else q)] * w[off : off + lanes]
            while acc.shape[0] > 1:
                acc = acc[0::2] + acc[1::2]
            out[oo : oo + lanes] = acc[0]

        return sum_rows

    @intrinsic
    def sum_rows(typingctx, out, oo, w, w_base, w_stride, vals, vo, idx, q0, q1):
        dense = isinstance(idx, types.NoneType)
        lanes = n_bytes // w.dtype.bitwidth * 8

        def codegen(context, builder, signature, args):
            out_v, oo_v, w_v, base_v, stride_v, vals_v, vo_v, idx_v, q0_v, q1_v = args
            out_t, _, w_t, _, _, vals_t, _, idx_t = signature.args[:8]
            ftype = context.get_data_type(w_t.dtype)
            vtype = ir.VectorType(ftype, lanes)
            i32, i64 = ir.IntType(32), ir.IntType(64)

            def data(ty, value):
                return context.make_array(ty)(context, builder, value).data

            out_p, w_p, vals_p = data(out_t, out_v), data(w_t, w_v), data(vals_t, vals_v)
            idx_p = None if dense else data(idx_t, idx_v)
            zeros = ir.Constant(vtype, [ir.Constant(ftype, 0.0)] * lanes)
            dst = builder.bitcast(builder.gep(out_p, [oo_v]), vtype.as_pointer())
            align = w_t.dtype.bitwidth // 8
            start = builder.load(dst, align=align) if accumulate else zeros
            sums = [cgutils.alloca_once_value(builder, start if part == 0 else zeros)
                    for part in range(n_sums)]
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vtype, [vtype] * 3),
                f"llvm.fma.v{lanes}f{w_t.dtype.bitwidth}")
            splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

            def step(q, acc):
                j = q if dense else builder.sext(builder.load(builder.gep(idx_p, [q])), i64)
                a = builder.load(builder.gep(vals_p, [builder.add(vo_v, j if indirect else q)]))
                row = builder.gep(w_p, [builder.add(base_v, builder.mul(j, stride_v))])
                wv = builder.load(builder.bitcast(row, vtype.as_pointer()),
                                  align=w_t.dtype.bitwidth // 8)
                av = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vtype, None), a, ir.Constant(i32, 0)),
                    ir.Constant(vtype, None), splat)
                builder.store(builder.call(fma, [av, wv, builder.load(acc)]), acc)

            n_parts = ir.Constant(i64, n_sums)
            n_main = builder.udiv(builder.sub(q1_v, q0_v), n_parts)
            with cgutils.for_range(builder, n_main) as loop:
                q = builder.add(q0_v, builder.mul(loop.index, n_parts))
                for part in range(n_sums):
                    step(builder.add(q, ir.Constant(i64, part)), sums[part])
            rest = builder.add(q0_v, builder.mul(n_main, n_parts))
            with cgutils.for_range(builder, builder.sub(q1_v, rest)) as loop:
                step(builder.add(rest, loop.index), sums[0])
            parts = [builder.load(acc) for acc in sums]
            while len(parts) > 1:
                parts = [builder.fadd(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
            builder.store(parts[0], dst, align=align)
            return context.get_dummy_value()

        u64 = types.uint64
        return types.void(out, u64, w, u64, u64, vals, u64, idx, u64, u64), codegen

    return sum_rows


# the output layer's rows, padded to VECTOR_BYTES (see layout.padded_top)
sum_rows_vector = _vector_sum_kernel(VECTOR_BYTES, VECTOR_SUMS, False)
# predict's first layer: 64 float32 (32 float64) columns of the rows picked by a row's
# non-zero inputs, their values read from X, in eight vector registers; one partial sum
# per column suffices, as the eight vectors are independent
WIDE_BYTES = 256
sum_rows_wide = _vector_sum_kernel(WIDE_BYTES, 1, True)
# the same for a row of compressed sparse rows: a_q = vals[vo + q], in the column idx[q]
sum_rows_wide_csr = _vector_sum_kernel(WIDE_BYTES, 1, False)
# the training forward's first layer: out[oo : oo + L] (the bias) plus the sum, in that
# order, as sum_rows_f adds them
add_rows_wide_csr = _vector_sum_kernel(WIDE_BYTES, 1, False, accumulate=True)


# A block of rows through one panel of a dense layer's W: for r < BLOCK_ROWS,
# out[oo + r * o_stride : ... + L] += sum over j < k of vals[a_r + j] *
# w[w_base + j * w_stride : ... + L], L the values of VECTOR_BYTES, starting from out's
# values and adding the rows j in order, each output one chain of FMAs: the same sums,
# in the same order, as add_rows_wide_csr over a row whose k inputs are all stored. The
# block's outputs stay in registers (four rows of L values), and each row of W it loads
# serves all four rows of the block: one vector load for four FMAs, where a row at a time
# needs one for each, which is what limits it on dense inputs.
#
# add_cols_block is the same sum for a weight gradient, X^T times the output gradient,
# over a batch whose rows hold all their inputs: out's rows are BLOCK_ROWS inputs
# i0 + r, the j are the batch's rows, and a_r for row j is vals[starts[j] + i0 + r] (the
# value of input i0 + r in the row stored from starts[j]). Each output again adds the
# rows j in order, as scatter_rows_f does, one chain of FMAs.
#
# add_strided_cols_block is add_cols_block with the values of row j at
# vals[v_base + j * v_stride + r], for a dense layer's weight gradient (the output
# gradient of a block of units, rows v_stride apart).
BLOCK_ROWS = 4
#
# The last argument of each, ``cols``, is how many of the L values of each output row are
# stored: L for a whole vector, fewer for the last, partial vector of a row. A partial
# block loads and adds whole vectors as a whole one does, and stores only its first
# ``cols`` values, so each output is still the same chain of FMAs; the vectors it loads
# beyond ``cols`` must lie inside their arrays (the caller's layout sees to it), and
# what it computes from them is never stored.


def _block_kernels():
    """add_rows_block, add_cols_block and add_strided_cols_block."""
    if numba.config.DISABLE_JIT:

        def block_sum(out, oo, o_stride, w, w_base, w_stride, k, a_of, cols):
            cols = int(cols)
            for r in range(BLOCK_ROWS):
                o = int(oo + U(r) * o_stride)
                acc = out[o : o + cols].copy()
                for j in range(int(k)):
                    off = int(w_base + U(j) * w_stride)
                    acc += a_of(r, j) * w[off : off + cols]
                out[o : o + cols] = acc

        def rows_block(out, oo, o_stride, w, w_base, w_stride, vals, a0, a1, a2, a3, k,
                       cols):
            starts = (a0, a1, a2, a3)
            block_sum(out, oo, o_stride, w, w_base, w_stride, k,
                      lambda r, j: vals[int(starts[r]) + j], cols)

        def cols_block(out, oo, o_stride, w, w_base, w_stride, vals, starts, i0, k, cols):
            block_sum(out, oo, o_stride, w, w_base, w_stride, k,
                      lambda r, j: vals[int(starts[j]) + int(i0) + r], cols)

        def strided_cols_block(out, oo, o_stride, w, w_base, w_stride, vals, v_base,
                               v_stride, k, cols):
            block_sum(out, oo, o_stride, w, w_base, w_stride, k,
                      lambda r, j: vals[int(v_base) + j * int(v_stride) + r], cols)

        return rows_block, cols_block, strided_cols_block

    def block_codegen(context, builder, signature, args, a_index):
        """The loop of the three: a_index(builder, j, r) is the place in vals of the
        value that multiplies row j of w for output row r."""
        out_v, oo_v, os_v, w_v, base_v, ws_v, vals_v = args[:7]
        k_v, cols_v = args[-2], args[-1]
        out_t, _, _, w_t, _, _, vals_t = signature.args[:7]
        lanes = VECTOR_BYTES // w_t.dtype.bitwidth * 8
        ftype = context.get_data_type(w_t.dtype)
        vtype = ir.VectorType(ftype, lanes)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        align = w_t.dtype.bitwidth // 8

        def data(ty, value):
            return context.make_array(ty)(context, builder, value).data

        out_p, w_p, vals_p = data(out_t, out_v), data(w_t, w_v), data(vals_t, vals_v)
        rows = [builder.gep(out_p, [builder.add(oo_v, builder.mul(ir.Constant(i64, r), os_v))])
                for r in range(BLOCK_ROWS)]
        sums = [cgutils.alloca_once_value(
            builder, builder.load(builder.bitcast(row, vtype.as_pointer()), align=align))
            for row in rows]
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vtype, [vtype] * 3),
            f"llvm.fma.v{lanes}f{w_t.dtype.bitwidth}")
        splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
        with cgutils.for_range(builder, k_v) as loop:
            j = loop.index
            row_j = builder.gep(w_p, [builder.add(base_v, builder.mul(j, ws_v))])
            wv = builder.load(builder.bitcast(row_j, vtype.as_pointer()), align=align)
            for r in range(BLOCK_ROWS):
                a = builder.load(builder.gep(vals_p, [a_index(builder, j, r)]))
                av = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vtype, None), a, ir.Constant(i32, 0)),
                    ir.Constant(vtype, None), splat)
                builder.store(builder.call(fma, [av, wv, builder.load(sums[r])]), sums[r])
        whole = builder.icmp_unsigned("==", cols_v, ir.Constant(i64, lanes))
        with builder.if_else(whole) as (then, otherwise):
            with then:
                for row, acc in zip(rows, sums):
                    builder.store(builder.load(acc), builder.bitcast(row, vtype.as_pointer()),
                                  align=align)
            with otherwise:
                totals = [builder.load(acc) for acc in sums]
                with cgutils.for_range(builder, cols_v) as loop:
                    c = loop.index
                    lane = builder.trunc(c, i32)
                    for row, total in zip(rows, totals):
                        builder.store(builder.extract_element(total, lane),
                                      builder.gep(row, [c]))
        return context.get_dummy_value()

    u64 = types.uint64

    @intrinsic
    def rows_block(typingctx, out, oo, o_stride, w, w_base, w_stride, vals, a0, a1, a2, a3,
                   k, cols):
        def codegen(context, builder, signature, args):
            starts = args[7:11]
            return block_codegen(context, builder, signature, args,
                                 lambda b, j, r: b.add(starts[r], j))

        return types.void(out, u64, u64, w, u64, u64, vals, u64, u64, u64, u64, u64,
                          u64), codegen

    @intrinsic
    def cols_block(typingctx, out, oo, o_stride, w, w_base, w_stride, vals, starts, i0, k,
                   cols):
        def codegen(context, builder, signature, args):
            starts_p = context.make_array(signature.args[7])(context, builder, args[7]).data
            i0_v = args[8]
            i64 = ir.IntType(64)

            def a_index(b, j, r):
                start = b.load(b.gep(starts_p, [j]))
                return b.add(b.add(start, i0_v), ir.Constant(i64, r))

            return block_codegen(context, builder, signature, args, a_index)

        return types.void(out, u64, u64, w, u64, u64, vals, starts, u64, u64, u64), codegen

    @intrinsic
    def strided_cols_block(typingctx, out, oo, o_stride, w, w_base, w_stride, vals, v_base,
                           v_stride, k, cols):
        def codegen(context, builder, signature, args):
            v_base_v, v_stride_v = args[7], args[8]
            i64 = ir.IntType(64)

            def a_index(b, j, r):
                return b.add(b.add(v_base_v, b.mul(j, v_stride_v)), ir.Constant(i64, r))

            return block_codegen(context, builder, signature, args, a_index)

        return types.void(out, u64, u64, w, u64, u64, vals, u64, u64, u64, u64), codegen

    return rows_block, cols_block, strided_cols_block


add_rows_block, add_cols_block, add_strided_cols_block = _block_kernels()


def _lane_count(n_bytes):
    """How many values of like's dtype fill n_bytes, as a constant LLVM can unroll by."""
    if numba.config.DISABLE_JIT:
        return lambda like: U(n_bytes // like.dtype.itemsize)

    @intrinsic
    def lanes(typingctx, like):
        count = n_bytes // like.dtype.bitwidth * 8

        def codegen(context, builder, signature, args):
            return context.get_constant(types.uint64, count)

        return types.uint64(like), codegen

    return lanes


vector_width = _lane_count(VECTOR_BYTES)
wide_width = _lane_count(WIDE_BYTES)


@numba.njit(cache=True)
def vector_lanes(like):
    """Values of like's dtype in one vector sum (VECTOR_BYTES), as the compiled kernels
    see it; tests/test_contract.py checks it against the layout's padding."""
    return int(vector_width(like))



# Subnormal floats flushed to zero (the FTZ and DAZ bits of x86's MXCSR register) while a
# thread runs a block of the fused epoch: weights that the L2 term has driven to about
# 1e-30 (those of inputs that are always zero, under Adam) make products such as
# w * w, g * g and lr * m underflow on every step, and this CPU takes a slow microcode
# path for each; later epochs of the reference fit ran twice as long as the first.
# The register belongs to the thread, so each block sets it and restores it. Elsewhere
# (other CPUs, JIT off) both are no-ops.
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
FTZ_DAZ = 0x8040

if numba.config.DISABLE_JIT:

    def flush_subnormals():
        return U(0)

    def restore_fp_mode(mode):
        pass

elif not _X86:

    @inline_always
    def flush_subnormals():
        return U(0)

    @inline_always
    def restore_fp_mode(mode):
        pass

else:

    def _mxcsr(builder, name, slot):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t]),
            f"llvm.x86.sse.{name}")
        builder.call(fn, [builder.bitcast(slot, cgutils.voidptr_t)])

    @intrinsic
    def flush_subnormals(typingctx):
        # sets FTZ and DAZ, returns the previous register for restore_fp_mode
        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            slot = cgutils.alloca_once(builder, i32)
            _mxcsr(builder, "stmxcsr", slot)
            old = builder.load(slot)
            builder.store(builder.or_(old, ir.Constant(i32, FTZ_DAZ)), slot)
            _mxcsr(builder, "ldmxcsr", slot)
            return builder.zext(old, ir.IntType(64))

        return types.uint64(), codegen

    @intrinsic
    def restore_fp_mode(typingctx, mode):
        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            slot = cgutils.alloca_once(builder, i32)
            builder.store(builder.trunc(args[0], i32), slot)
            _mxcsr(builder, "ldmxcsr", slot)
            return context.get_dummy_value()

        return types.void(types.uint64), codegen


# Software prefetch (LLVM's llvm.prefetch: a read, kept in all cache levels): the fused
# epoch visits the rows of X's compressed form in a random order, and the first cache
# line of each row missed every cache; asking for a row a few rows ahead lets those
# misses overlap the arithmetic of the rows before it. A prefetch changes no value. With
# the JIT off it does nothing.
if numba.config.DISABLE_JIT:

    def prefetch(arr, offset):
        pass

else:

    @intrinsic
    def prefetch(typingctx, arr, offset):
        # a hint that arr[offset] will be read soon; no bounds are checked (a prefetch of
        # any address is harmless), and nothing is returned
        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            address = builder.bitcast(builder.gep(data, [args[1]]), cgutils.voidptr_t)
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32]),
                "llvm.prefetch.p0")
            builder.call(fn, [address, ir.Constant(i32, 0), ir.Constant(i32, 3),
                              ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(arr, types.uint64), codegen


# The places of the non-zero values among eight consecutive ones, x[xo + j : xo + j + 8],
# written as j + t for each such value's t, lowest first, to places[at : at + 8], and
# their count returned: one vector compare and mask move give a byte of non-zero bits,
# which picks a row of t's from a table (MASK_PLACES); that row plus j is one vector
# store. Testing the values one by one costs a compare, a store and an add each (the scan
# for non-zero inputs of predict's dense rows). All eight places are written whatever
# the count: the caller makes sure they exist, and that x holds the eight values; no
# bounds are checked. NaN counts as non-zero, as in ``x != 0``. places is int32, x a
# C-contiguous array of any dimension, read flat.
MASK_LANES = 8


def _mask_places():
    """Row m: the places of the set bits of the byte m, lowest first (the rest 0)."""
    table = np.zeros((1 << MASK_LANES, MASK_LANES), dtype=np.int32)
    for m in range(1 << MASK_LANES):
        bits = [t for t in range(MASK_LANES) if m >> t & 1]
        table[m, :len(bits)] = bits
    return table


MASK_PLACES = _mask_places()

if numba.config.DISABLE_JIT:

    def compress_places(places, at, x, xo, j, table):
        flat = x.reshape(-1)
        bits = 0
        for t in range(MASK_LANES):
            bits |= (1 << t) if flat[int(xo + j) + t] != 0 else 0
        places[int(at) : int(at) + MASK_LANES] = table[bits] + int(j)
        return U(bin(bits).count("1"))

else:

    @intrinsic
    def compress_places(typingctx, places, at, x, xo, j, table):
        if not isinstance(x, types.Array) or x.layout != "C":
            raise numba.core.errors.TypingError("compress_places reads a C-contiguous x")
        if places.dtype != types.int32 or table.dtype != types.int32:
            raise numba.core.errors.TypingError("compress_places writes int32 places")
        dtype = x.dtype

        def codegen(context, builder, signature, args):
            places_v, at_v, x_v, xo_v, j_v, table_v = args
            sig = signature.args

            def data(k, value):
                return context.make_array(sig[k])(context, builder, value).data

            i32, i64 = ir.IntType(32), ir.IntType(64)
            etype = context.get_data_type(dtype)
            vtype = ir.VectorType(etype, MASK_LANES)
            itype = ir.VectorType(i32, MASK_LANES)
            src = builder.gep(data(2, x_v), [builder.add(xo_v, j_v)])
            values = builder.load(builder.bitcast(src, vtype.as_pointer()),
                                  align=dtype.bitwidth // 8)
            zeros = ir.Constant(vtype, [ir.Constant(etype, 0)] * MASK_LANES)
            if isinstance(dtype, types.Float):
                nonzero = builder.fcmp_unordered("!=", values, zeros)
            else:
                nonzero = builder.icmp_unsigned("!=", values, zeros)
            bits = builder.zext(builder.bitcast(nonzero, ir.IntType(MASK_LANES)), i64)
            row = builder.gep(data(5, table_v), [builder.mul(bits, ir.Constant(i64, MASK_LANES))])
            offsets = builder.load(builder.bitcast(row, itype.as_pointer()), align=4)
            base = builder.insert_element(ir.Constant(itype, None), builder.trunc(j_v, i32),
                                          ir.Constant(i32, 0))
            base = builder.shuffle_vector(base, ir.Constant(itype, None),
                                          ir.Constant(itype, [0] * MASK_LANES))
            dst = builder.gep(data(0, places_v), [at_v])
            builder.store(builder.add(offsets, base),
                          builder.bitcast(dst, itype.as_pointer()), align=4)
            ctpop = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i64, [i64]), "llvm.ctpop.i64")
            return builder.call(ctpop, [bits])

        u64 = types.uint64
        return u64(places, u64, x, u64, u64, table), codegen
