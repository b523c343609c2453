"""Matrix products through the BLAS that SciPy ships, called from compiled code.

``gemm`` is BLAS's xGEMM (column-major, as BLAS sees memory) on flat 1-D arrays with
element offsets, so a kernel can multiply any block of a buffer without creating an
array view (views inside parallel loops cost atomic reference counts; see _config). It
is called from inside the parallel regions, one block per thread, so BLAS must run on
the calling thread alone meanwhile: the entry points that use ``gemm`` hold
``fastmlp.threads.one_blas_thread()`` while they run (several BLAS threads per call
would compete with Numba's threads for the cores).

The function pointer comes from ``scipy.linalg.cython_blas`` and is made known to LLVM
under a name of our own when this module is imported, so cached machine code refers to
the name, not to an address of one process. With the JIT off, ``gemm`` is NumPy.
"""

from __future__ import annotations

import numba
import numpy as np

from ._config import U

# the order of the arguments, as BLAS takes them
NO_TRANS = ord("N")
TRANS = ord("T")

_SYMBOLS = {"float32": "fastmlp_sgemm", "float64": "fastmlp_dgemm"}


def _matrix(a, off, rows, cols, ld, trans):
    """The column-major matrix (rows, cols) at a[off] with leading dimension ld, as a
    NumPy view; transposed if ``trans``."""
    item = a.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(a[int(off):], shape=(rows, cols),
                                           strides=(item, int(ld) * item))
    return view.T if trans else view


if numba.config.DISABLE_JIT:

    def gemm(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
        """c[co] (m, n) = alpha * op(a) @ op(b) + beta * c, column-major (see module)."""
        m, n, k = int(m), int(n), int(k)
        if m == 0 or n == 0:
            return
        A = _matrix(a, ao, k if ta == TRANS else m, m if ta == TRANS else k, lda,
                    ta == TRANS)
        B = _matrix(b, bo, n if tb == TRANS else k, k if tb == TRANS else n, ldb,
                    tb == TRANS)
        C = _matrix(c, co, m, n, ldc, False)
        product = A @ B if k > 0 else np.zeros((m, n), c.dtype)
        dt = c.dtype.type
        C[...] = dt(alpha) * product + (dt(beta) * C if beta != 0 else dt(0))

else:
    import llvmlite.binding as llvm
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import get_cython_function_address, intrinsic

    for _dtype, _name in _SYMBOLS.items():
        llvm.add_symbol(_name, get_cython_function_address("scipy.linalg.cython_blas",
                                                           _name.rsplit("_", 1)[1]))

    @intrinsic
    def _xgemm(typingctx, ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
        # xGEMM with every argument passed by address, as Fortran BLAS takes them
        dtype = c.dtype
        if dtype not in (types.float32, types.float64) or a.dtype != dtype or b.dtype != dtype:
            return None
        symbol = _SYMBOLS[str(dtype)]
        sig = types.void(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc)

        def codegen(context, builder, signature, args):
            i8, i32 = ir.IntType(8), ir.IntType(32)
            ftype = context.get_data_type(dtype)
            void_p = cgutils.voidptr_t

            def by_address(ty, value):
                slot = cgutils.alloca_once(builder, ty)
                builder.store(value, slot)
                return builder.bitcast(slot, void_p)

            def integer(i):
                return by_address(i32, context.cast(builder, args[i], signature.args[i],
                                                    types.int32))

            def number(i):
                return by_address(ftype, context.cast(builder, args[i], signature.args[i],
                                                      dtype))

            def char(i):
                return by_address(i8, builder.trunc(args[i], i8))

            def pointer(i):
                arr = context.make_array(signature.args[i])(context, builder, args[i])
                return builder.bitcast(builder.gep(arr.data, [args[i + 1]]), void_p)

            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [void_p] * 13), symbol)
            builder.call(fn, [char(0), char(1), integer(2), integer(3), integer(4), number(5),
                              pointer(6), integer(8), pointer(9), integer(11), number(12),
                              pointer(13), integer(15)])
            return context.get_dummy_value()

        return sig, codegen

    @numba.njit(inline="always", nogil=True, cache=True)
    def gemm(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
        """c[co] (m, n) = alpha * op(a) @ op(b) + beta * c, column-major (see module).
        Empty products are handled here (BLAS refuses a leading dimension of 0)."""
        if m == 0 or n == 0:
            return
        if k == 0:
            for j in range(U(n)):
                for i in range(U(m)):
                    q = U(co) + i + j * U(ldc)
                    c[q] = beta * c[q] if beta != 0 else c.dtype.type(0)
            return
        _xgemm(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc)
