"""A dense layer's forward product, bias and ReLU on one thread: BLAS's SGEMM (what the
numba epoch calls for its dense layers today) against a register-blocked micro-kernel
that keeps ROWS x (VECTORS x 8) float32 outputs in vector registers, written as a Numba
intrinsic in LLVM IR like the kernels of numba_backend/intrinsics.py.

    python benchmarks/dense_microkernel.py [--rows 4] [--vectors 2] [--shapes 128x64x64 ...]

A shape is batch x inputs x outputs. The micro-kernel needs the outputs in whole panels
of VECTORS x 8 columns (AVX2 registers of 8 float32) and handles the rows left over by
ROWS one row at a time. Both sides run the same bias and ReLU loop after the product;
the table gives the median of several timings of each, alternating, and checks that
both give the same outputs to float32 rounding. Run with OPENBLAS_NUM_THREADS=1 and
NUMBA_NUM_THREADS=1 to compare one thread against one thread.

This is the study behind the plan for small dense layers (docs/archive/performance-log.md); the
epochs do not use the micro-kernel yet.
"""

import argparse
import os
import time

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fastmlp.backends.numba_backend._config import U, jit
from fastmlp.backends.numba_backend.blas import NO_TRANS, gemm

LANES = 8  # float32 values in an AVX2 register


def make_microkernel(rows, vectors):
    """out[oo + r * os + c] = sum over j < k of a[ao + r * as + j] * w[wo + j * ws + c]
    for r < rows and c < vectors * LANES: rows x vectors accumulators in registers, each
    step loading `vectors` vectors of W's row j and broadcasting one value of A per row."""

    @intrinsic
    def microkernel(typingctx, out, oo, ostride, a, ao, astride, w, wo, wstride, k):
        def codegen(context, builder, sig, args):
            out_v, oo_v, os_v, a_v, ao_v, as_v, w_v, wo_v, ws_v, k_v = args

            def data(ty, value):
                return context.make_array(ty)(context, builder, value).data

            out_p, a_p, w_p = (data(sig.args[0], out_v), data(sig.args[3], a_v),
                               data(sig.args[6], w_v))
            f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
            vt = ir.VectorType(f32, LANES)
            zeros = ir.Constant(vt, [ir.Constant(f32, 0.0)] * LANES)
            acc = [[cgutils.alloca_once_value(builder, zeros) for _ in range(vectors)]
                   for _ in range(rows)]
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vt, [vt] * 3), "llvm.fma.v8f32")
            splat = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)

            def const(n):
                return ir.Constant(i64, n)

            with cgutils.for_range(builder, k_v) as loop:
                j = loop.index
                w_row = builder.add(wo_v, builder.mul(j, ws_v))
                wv = [builder.load(builder.bitcast(
                    builder.gep(w_p, [builder.add(w_row, const(LANES * v))]),
                    vt.as_pointer()), align=4) for v in range(vectors)]
                for r in range(rows):
                    at = builder.add(builder.add(ao_v, builder.mul(const(r), as_v)), j)
                    value = builder.load(builder.gep(a_p, [at]))
                    av = builder.shuffle_vector(
                        builder.insert_element(ir.Constant(vt, None), value,
                                               ir.Constant(i32, 0)),
                        ir.Constant(vt, None), splat)
                    for v in range(vectors):
                        builder.store(builder.call(fma, [av, wv[v], builder.load(acc[r][v])]),
                                      acc[r][v])
            for r in range(rows):
                row = builder.add(oo_v, builder.mul(const(r), os_v))
                for v in range(vectors):
                    dst = builder.gep(out_p, [builder.add(row, const(LANES * v))])
                    builder.store(builder.load(acc[r][v]),
                                  builder.bitcast(dst, vt.as_pointer()), align=4)
            return context.get_dummy_value()

        u64 = types.uint64
        return types.void(out, u64, u64, a, u64, u64, w, u64, u64, u64), codegen

    return microkernel


def make_forwards(rows, vectors):
    block = make_microkernel(rows, vectors)
    one_row = make_microkernel(1, vectors)
    panel = vectors * LANES

    @jit
    def bias_relu(out, b, n, n_out):
        zero = np.float32(0)
        for r in range(n):
            for c in range(n_out):
                value = out[r * n_out + c] + b[c]
                out[r * n_out + c] = value if value > zero else zero

    @jit
    def microkernel_forward(out, A, W, b, n, n_in, n_out, repeats):
        whole = n // rows * rows
        for _ in range(repeats):
            for c0 in range(0, n_out, panel):
                for r0 in range(0, whole, rows):
                    block(out, U(r0 * n_out + c0), U(n_out), A, U(r0 * n_in), U(n_in), W,
                          U(c0), U(n_out), U(n_in))
                for r in range(whole, n):
                    one_row(out, U(r * n_out + c0), U(n_out), A, U(r * n_in), U(n_in), W,
                            U(c0), U(n_out), U(n_in))
            bias_relu(out, b, n, n_out)

    @jit
    def blas_forward(out, A, W, b, n, n_in, n_out, repeats):
        one = np.float32(1)
        zero = np.float32(0)
        for _ in range(repeats):
            # row-major out (n, n_out) = A (n, n_in) W (n_in, n_out), which column-major
            # BLAS sees as out^T = W^T A^T
            gemm(NO_TRANS, NO_TRANS, U(n_out), U(n), U(n_in), one, W, U(0), U(n_out), A,
                 U(0), U(n_in), zero, out, U(0), U(n_out))
            bias_relu(out, b, n, n_out)

    return blas_forward, microkernel_forward


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4, help="rows of the register block")
    parser.add_argument("--vectors", type=int, default=2,
                        help="vectors of 8 columns in the register block")
    parser.add_argument("--shapes", nargs="+",
                        default=["128x40x64", "128x64x64", "256x100x256", "256x256x256",
                                 "128x512x512"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.rows * args.vectors + args.vectors > 16:
        parser.error("rows x vectors accumulators and the vectors of W must fit in AVX2's "
                     "16 registers")
    blas_forward, micro_forward = make_forwards(args.rows, args.vectors)
    panel = args.vectors * LANES
    print(f"one thread (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '?')},"
          f" NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', '?')}); register block "
          f"{args.rows} x {panel}; medians of {args.rounds}")
    print(f"{'batch x in x out':>18} {'BLAS us':>9} {'GFLOP/s':>8} {'block us':>9} "
          f"{'GFLOP/s':>8} {'BLAS / block':>12}")
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        n, n_in, n_out = map(int, shape.split("x"))
        if n_out % panel:
            print(f"{shape:>18}  skipped: {n_out} outputs are not whole panels of {panel}")
            continue
        A = rng.standard_normal(n * n_in).astype(np.float32)
        W = rng.standard_normal(n_in * n_out).astype(np.float32)
        b = rng.standard_normal(n_out).astype(np.float32)
        out_blas = np.empty(n * n_out, np.float32)
        out_block = np.empty(n * n_out, np.float32)
        blas_forward(out_blas, A, W, b, n, n_in, n_out, 1)
        micro_forward(out_block, A, W, b, n, n_in, n_out, 1)
        np.testing.assert_allclose(out_block, out_blas, rtol=1e-4, atol=1e-4 * np.sqrt(n_in))
        repeats = max(1, int(1e8 / (n * n_in * n_out)))
        times = {"blas": [], "block": []}
        for _ in range(args.rounds):
            for name, fn, out in (("blas", blas_forward, out_blas),
                                  ("block", micro_forward, out_block)):
                start = time.perf_counter()
                fn(out, A, W, b, n, n_in, n_out, repeats)
                times[name].append((time.perf_counter() - start) / repeats)
        blas_s, block_s = (float(np.median(times[k])) for k in ("blas", "block"))
        flops = 2.0 * n * n_in * n_out
        print(f"{shape:>18} {blas_s * 1e6:9.2f} {flops / blas_s / 1e9:8.1f} "
              f"{block_s * 1e6:9.2f} {flops / block_s / 1e9:8.1f} {blas_s / block_s:12.2f}")


if __name__ == "__main__":
    main()
