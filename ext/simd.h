/* The C helpers of ext/_cykernels.pyx, which declares them in `cdef extern from
   "simd.h"`: OpenMP's thread count, the fused epoch's axpy, and the row sums of the
   first layer and the output layer. Each adds its terms in a fixed order. */

#ifndef FASTMLP_SIMD_H
#define FASTMLP_SIMD_H

#include <Python.h>

/* Bytes of one vector sum of the output layer (FASTMLP_VECTOR_SUM): 16 float32 or 8
   float64 values. The top layer's W is padded to whole vector sums; fastmlp/backends/
   layout.py declares the same width (VECTOR_BYTES), and tests/test_contract.py checks
   that they agree. */
#define FASTMLP_VECTOR_BYTES 64

#ifdef _OPENMP
#include <omp.h>
#define FASTMLP_OPENMP 1
static int fastmlp_max_threads(void) { return omp_get_max_threads(); }
static void fastmlp_set_threads(int n) { omp_set_num_threads(n); }
#else
#define FASTMLP_OPENMP 0
static int fastmlp_max_threads(void) { return 1; }
static void fastmlp_set_threads(int n) { (void)n; }
#endif

/* y[0:n] += a * x[0:n]. restrict lets the compiler vectorise without overlap checks,
   and the widths that are common here get a loop of constant length, which it
   unrolls completely (the per-call set-up otherwise costs as much as the work). */
#define FASTMLP_AXPY(NAME, T)                                                       \
static inline void NAME(T *restrict y, T a, const T *restrict x, Py_ssize_t n) {    \
    Py_ssize_t c;                                                                   \
    if (n == 128) { for (c = 0; c < 128; c++) y[c] += a * x[c]; }                   \
    else if (n == 64) { for (c = 0; c < 64; c++) y[c] += a * x[c]; }                \
    else if (n == 10) { for (c = 0; c < 10; c++) y[c] += a * x[c]; }                \
    else { for (c = 0; c < n; c++) y[c] += a * x[c]; }                              \
}
FASTMLP_AXPY(fastmlp_axpy_f, float)
FASTMLP_AXPY(fastmlp_axpy_d, double)

/* The prediction kernels, with GCC/Clang vector types where the compiler has them
   (a plain C version otherwise). Partial sums must stay in registers: GCC keeps a
   local array of them on the stack, and loading and storing it around every
   multiply-add made predict much slower than plain row additions. */
#if defined(__GNUC__)
#include <string.h>
typedef float fastmlp_vf __attribute__((vector_size(32)));
typedef double fastmlp_vd __attribute__((vector_size(32)));
/* a vector sum is two vectors (two registers on AVX2) */
_Static_assert(2 * sizeof(fastmlp_vf) == FASTMLP_VECTOR_BYTES, "vector width");
_Static_assert(2 * sizeof(fastmlp_vd) == FASTMLP_VECTOR_BYTES, "vector width");
static inline fastmlp_vf fastmlp_load_vf(const float *p) {
    fastmlp_vf v; memcpy(&v, p, sizeof v); return v;
}
static inline fastmlp_vd fastmlp_load_vd(const double *p) {
    fastmlp_vd v; memcpy(&v, p, sizeof v); return v;
}
static inline void fastmlp_store_vf(float *p, fastmlp_vf v) { memcpy(p, &v, sizeof v); }
static inline void fastmlp_store_vd(double *p, fastmlp_vd v) { memcpy(p, &v, sizeof v); }

/* out[0:width] = init[0:width] + sum over q < n of a_q * w[idx[q] * stride : ...],
   added in that order, where a_q = x[idx[q]] if by_idx, else x[q]: eight vectors of
   columns at a time in registers (on AVX2, 64 float32 or 32 float64 columns), the
   rest one column at a time. */
#define FASTMLP_SUM_ROWS(NAME, T, VT, LOAD, STORE)                                  \
static inline void NAME(T *restrict out, const T *restrict init, const T *restrict w, \
                        Py_ssize_t stride, const T *restrict x,                     \
                        const int *restrict idx, Py_ssize_t n, Py_ssize_t width,    \
                        int by_idx) {                                               \
    const Py_ssize_t K = sizeof(VT) / sizeof(T);                                    \
    Py_ssize_t p0 = 0, q, c;                                                        \
    for (; p0 + 8 * K <= width; p0 += 8 * K) {                                      \
        VT a0 = LOAD(init + p0), a1 = LOAD(init + p0 + K);                          \
        VT a2 = LOAD(init + p0 + 2 * K), a3 = LOAD(init + p0 + 3 * K);              \
        VT a4 = LOAD(init + p0 + 4 * K), a5 = LOAD(init + p0 + 5 * K);              \
        VT a6 = LOAD(init + p0 + 6 * K), a7 = LOAD(init + p0 + 7 * K);              \
        for (q = 0; q < n; q++) {                                                   \
            const T a = by_idx ? x[idx[q]] : x[q];                                  \
            const T *r = w + idx[q] * stride + p0;                                  \
            a0 += a * LOAD(r); a1 += a * LOAD(r + K);                               \
            a2 += a * LOAD(r + 2 * K); a3 += a * LOAD(r + 3 * K);                   \
            a4 += a * LOAD(r + 4 * K); a5 += a * LOAD(r + 5 * K);                   \
            a6 += a * LOAD(r + 6 * K); a7 += a * LOAD(r + 7 * K);                   \
        }                                                                           \
        STORE(out + p0, a0); STORE(out + p0 + K, a1);                               \
        STORE(out + p0 + 2 * K, a2); STORE(out + p0 + 3 * K, a3);                   \
        STORE(out + p0 + 4 * K, a4); STORE(out + p0 + 5 * K, a5);                   \
        STORE(out + p0 + 6 * K, a6); STORE(out + p0 + 7 * K, a7);                   \
    }                                                                               \
    for (c = p0; c < width; c++) out[c] = init[c];                                  \
    for (q = 0; p0 < width && q < n; q++) {                                         \
        const T a = by_idx ? x[idx[q]] : x[q];                                      \
        const T *r = w + idx[q] * stride;                                           \
        for (c = p0; c < width; c++) out[c] += a * r[c];                            \
    }                                                                               \
}

/* out[0:2K] (FASTMLP_VECTOR_BYTES) = sum over q < n of x[j] * w[j * stride : ... + 2K],
   j = idx[q] (or q without idx), in four interleaved partial sums added pairwise at
   the end, so that consecutive multiply-adds do not wait for each other. The caller
   pads w's rows (layout.padded_top). For the output layer: ten dot products per
   row, each ending in a reduction, took several times longer. */
#define FASTMLP_VECTOR_SUM(NAME, T, VT, LOAD, STORE)                                \
static inline void NAME(T *restrict out, const T *restrict w, Py_ssize_t stride,    \
                        const T *restrict x, const int *restrict idx, Py_ssize_t n) { \
    const Py_ssize_t K = sizeof(VT) / sizeof(T);                                    \
    VT s0 = {0}, t0 = {0}, s1 = {0}, t1 = {0}, s2 = {0}, t2 = {0}, s3 = {0}, t3 = {0}; \
    Py_ssize_t q, j, n4 = n - n % 4;                                                \
    for (q = 0; q < n4; q += 4) {                                                   \
        j = idx ? idx[q] : q;                                                       \
        s0 += x[j] * LOAD(w + j * stride); t0 += x[j] * LOAD(w + j * stride + K);   \
        j = idx ? idx[q + 1] : q + 1;                                               \
        s1 += x[j] * LOAD(w + j * stride); t1 += x[j] * LOAD(w + j * stride + K);   \
        j = idx ? idx[q + 2] : q + 2;                                               \
        s2 += x[j] * LOAD(w + j * stride); t2 += x[j] * LOAD(w + j * stride + K);   \
        j = idx ? idx[q + 3] : q + 3;                                               \
        s3 += x[j] * LOAD(w + j * stride); t3 += x[j] * LOAD(w + j * stride + K);   \
    }                                                                               \
    for (; q < n; q++) {                                                            \
        j = idx ? idx[q] : q;                                                       \
        s0 += x[j] * LOAD(w + j * stride); t0 += x[j] * LOAD(w + j * stride + K);   \
    }                                                                               \
    STORE(out, (s0 + s1) + (s2 + s3));                                              \
    STORE(out + K, (t0 + t1) + (t2 + t3));                                          \
}
/* out + r * ostride, for the four rows r of a block whose n inputs are all stored
   (idx[q] == q), each = init + sum over q < n of x_r[q] * w[q * stride : ...]: the
   same sums, in the same order, as FASTMLP_SUM_ROWS gives each row alone, with each
   row of w loaded once for the four (two vectors of columns at a time, eight partial
   sums in registers), the rest one column at a time. */
#define FASTMLP_SUM_ROWS4(NAME, T, VT, LOAD, STORE)                                 \
static inline void NAME(T *restrict out, Py_ssize_t ostride, const T *restrict init, \
                        const T *restrict w, Py_ssize_t stride, const T *restrict x0, \
                        const T *restrict x1, const T *restrict x2,                 \
                        const T *restrict x3, Py_ssize_t n, Py_ssize_t width) {     \
    const Py_ssize_t K = sizeof(VT) / sizeof(T);                                    \
    T *o0 = out, *o1 = out + ostride, *o2 = out + 2 * ostride, *o3 = out + 3 * ostride; \
    Py_ssize_t p0 = 0, q, c;                                                        \
    for (; p0 + 2 * K <= width; p0 += 2 * K) {                                      \
        const VT b0 = LOAD(init + p0), b1 = LOAD(init + p0 + K);                    \
        VT s00 = b0, s01 = b1, s10 = b0, s11 = b1;                                  \
        VT s20 = b0, s21 = b1, s30 = b0, s31 = b1;                                  \
        for (q = 0; q < n; q++) {                                                   \
            const T *r = w + q * stride + p0;                                       \
            const VT w0 = LOAD(r), w1 = LOAD(r + K);                                \
            s00 += x0[q] * w0; s01 += x0[q] * w1;                                   \
            s10 += x1[q] * w0; s11 += x1[q] * w1;                                   \
            s20 += x2[q] * w0; s21 += x2[q] * w1;                                   \
            s30 += x3[q] * w0; s31 += x3[q] * w1;                                   \
        }                                                                           \
        STORE(o0 + p0, s00); STORE(o0 + p0 + K, s01);                               \
        STORE(o1 + p0, s10); STORE(o1 + p0 + K, s11);                               \
        STORE(o2 + p0, s20); STORE(o2 + p0 + K, s21);                               \
        STORE(o3 + p0, s30); STORE(o3 + p0 + K, s31);                               \
    }                                                                               \
    for (c = p0; c < width; c++) {                                                  \
        o0[c] = init[c]; o1[c] = init[c]; o2[c] = init[c]; o3[c] = init[c];         \
    }                                                                               \
    for (q = 0; p0 < width && q < n; q++) {                                         \
        const T *r = w + q * stride;                                                \
        for (c = p0; c < width; c++) {                                              \
            o0[c] += x0[q] * r[c]; o1[c] += x1[q] * r[c];                           \
            o2[c] += x2[q] * r[c]; o3[c] += x3[q] * r[c];                           \
        }                                                                           \
    }                                                                               \
}
/* out + r * ostride, for four inputs r, each = init + r * istride + sum over q < n of
   vals[starts[q] + r] * w[q * stride : ...]: a weight gradient over a batch whose rows
   (the q, stored from starts[q]) hold all their inputs, four inputs at a time. The
   same sums, in the same order, as FASTMLP_SUM_ROWS over each input's entries, with
   each row of w loaded once for the four inputs. */
#define FASTMLP_SUM_COLS4(NAME, T, VT, LOAD, STORE)                                 \
static inline void NAME(T *restrict out, Py_ssize_t ostride, const T *restrict init, \
                        Py_ssize_t istride, const T *restrict w, Py_ssize_t stride, \
                        const T *restrict vals, const Py_ssize_t *restrict starts,  \
                        Py_ssize_t n, Py_ssize_t width) {                           \
    const Py_ssize_t K = sizeof(VT) / sizeof(T);                                    \
    Py_ssize_t p0 = 0, q, c, r;                                                     \
    for (; p0 + 2 * K <= width; p0 += 2 * K) {                                      \
        VT s00 = LOAD(init + p0), s01 = LOAD(init + p0 + K);                        \
        VT s10 = LOAD(init + istride + p0), s11 = LOAD(init + istride + p0 + K);    \
        VT s20 = LOAD(init + 2 * istride + p0), s21 = LOAD(init + 2 * istride + p0 + K); \
        VT s30 = LOAD(init + 3 * istride + p0), s31 = LOAD(init + 3 * istride + p0 + K); \
        for (q = 0; q < n; q++) {                                                   \
            const T *x = vals + starts[q];                                          \
            const T *wr = w + q * stride + p0;                                      \
            const VT w0 = LOAD(wr), w1 = LOAD(wr + K);                              \
            s00 += x[0] * w0; s01 += x[0] * w1;                                     \
            s10 += x[1] * w0; s11 += x[1] * w1;                                     \
            s20 += x[2] * w0; s21 += x[2] * w1;                                     \
            s30 += x[3] * w0; s31 += x[3] * w1;                                     \
        }                                                                           \
        STORE(out + p0, s00); STORE(out + p0 + K, s01);                             \
        STORE(out + ostride + p0, s10); STORE(out + ostride + p0 + K, s11);         \
        STORE(out + 2 * ostride + p0, s20); STORE(out + 2 * ostride + p0 + K, s21); \
        STORE(out + 3 * ostride + p0, s30); STORE(out + 3 * ostride + p0 + K, s31); \
    }                                                                               \
    for (r = 0; r < 4; r++)                                                         \
        for (c = p0; c < width; c++) out[r * ostride + c] = init[r * istride + c];  \
    for (q = 0; p0 < width && q < n; q++) {                                         \
        const T *x = vals + starts[q];                                              \
        const T *wr = w + q * stride;                                               \
        for (c = p0; c < width; c++) {                                              \
            out[c] += x[0] * wr[c]; out[ostride + c] += x[1] * wr[c];               \
            out[2 * ostride + c] += x[2] * wr[c]; out[3 * ostride + c] += x[3] * wr[c]; \
        }                                                                           \
    }                                                                               \
}
FASTMLP_SUM_ROWS(fastmlp_sum_rows_f, float, fastmlp_vf, fastmlp_load_vf, fastmlp_store_vf)
FASTMLP_SUM_ROWS(fastmlp_sum_rows_d, double, fastmlp_vd, fastmlp_load_vd, fastmlp_store_vd)
FASTMLP_SUM_COLS4(fastmlp_sum_cols4_f, float, fastmlp_vf, fastmlp_load_vf,
                  fastmlp_store_vf)
FASTMLP_SUM_COLS4(fastmlp_sum_cols4_d, double, fastmlp_vd, fastmlp_load_vd,
                  fastmlp_store_vd)
FASTMLP_SUM_ROWS4(fastmlp_sum_rows4_f, float, fastmlp_vf, fastmlp_load_vf,
                  fastmlp_store_vf)
FASTMLP_SUM_ROWS4(fastmlp_sum_rows4_d, double, fastmlp_vd, fastmlp_load_vd,
                  fastmlp_store_vd)
FASTMLP_VECTOR_SUM(fastmlp_vector_sum_f, float, fastmlp_vf, fastmlp_load_vf,
                   fastmlp_store_vf)
FASTMLP_VECTOR_SUM(fastmlp_vector_sum_d, double, fastmlp_vd, fastmlp_load_vd,
                   fastmlp_store_vd)
#else
/* the same sums, in the same order, one value at a time */
#define FASTMLP_SUM_ROWS(NAME, T)                                                   \
static inline void NAME(T *out, const T *init, const T *w, Py_ssize_t stride,       \
                        const T *x, const int *idx, Py_ssize_t n, Py_ssize_t width, \
                        int by_idx) {                                               \
    Py_ssize_t q, c;                                                                \
    for (c = 0; c < width; c++) out[c] = init[c];                                   \
    for (q = 0; q < n; q++)                                                         \
        for (c = 0; c < width; c++)                                                 \
            out[c] += (by_idx ? x[idx[q]] : x[q]) * w[idx[q] * stride + c];         \
}
#define FASTMLP_VECTOR_SUM(NAME, T)                                                 \
static inline void NAME(T *out, const T *w, Py_ssize_t stride, const T *x, const int *idx, \
                 Py_ssize_t n) {                                                    \
    const Py_ssize_t L = FASTMLP_VECTOR_BYTES / sizeof(T);                          \
    T s[4][FASTMLP_VECTOR_BYTES / sizeof(T)] = {{0}};                               \
    Py_ssize_t q, c, j, n4 = n - n % 4;                                             \
    for (q = 0; q < n; q++) {                                                       \
        j = idx ? idx[q] : q;                                                       \
        for (c = 0; c < L; c++) s[q < n4 ? q % 4 : 0][c] += x[j] * w[j * stride + c]; \
    }                                                                               \
    for (c = 0; c < L; c++) out[c] = (s[0][c] + s[1][c]) + (s[2][c] + s[3][c]);     \
}
#define FASTMLP_SUM_ROWS4(NAME, T)                                                  \
static inline void NAME(T *out, Py_ssize_t ostride, const T *init, const T *w,      \
                        Py_ssize_t stride, const T *x0, const T *x1, const T *x2,   \
                        const T *x3, Py_ssize_t n, Py_ssize_t width) {              \
    const T *x[4] = {x0, x1, x2, x3};                                               \
    Py_ssize_t q, c, r;                                                             \
    for (r = 0; r < 4; r++) {                                                       \
        for (c = 0; c < width; c++) out[r * ostride + c] = init[c];                 \
        for (q = 0; q < n; q++)                                                     \
            for (c = 0; c < width; c++) out[r * ostride + c] += x[r][q] * w[q * stride + c]; \
    }                                                                               \
}
#define FASTMLP_SUM_COLS4(NAME, T)                                                  \
static inline void NAME(T *out, Py_ssize_t ostride, const T *init, Py_ssize_t istride, \
                        const T *w, Py_ssize_t stride, const T *vals,               \
                        const Py_ssize_t *starts, Py_ssize_t n, Py_ssize_t width) { \
    Py_ssize_t q, c, r;                                                             \
    for (r = 0; r < 4; r++) {                                                       \
        for (c = 0; c < width; c++) out[r * ostride + c] = init[r * istride + c];   \
        for (q = 0; q < n; q++)                                                     \
            for (c = 0; c < width; c++)                                             \
                out[r * ostride + c] += vals[starts[q] + r] * w[q * stride + c];    \
    }                                                                               \
}
FASTMLP_SUM_ROWS(fastmlp_sum_rows_f, float)
FASTMLP_SUM_ROWS(fastmlp_sum_rows_d, double)
FASTMLP_SUM_COLS4(fastmlp_sum_cols4_f, float)
FASTMLP_SUM_COLS4(fastmlp_sum_cols4_d, double)
FASTMLP_SUM_ROWS4(fastmlp_sum_rows4_f, float)
FASTMLP_SUM_ROWS4(fastmlp_sum_rows4_d, double)
FASTMLP_VECTOR_SUM(fastmlp_vector_sum_f, float)
FASTMLP_VECTOR_SUM(fastmlp_vector_sum_d, double)
#endif

/* Subnormal floats flushed to zero (x86 MXCSR's FTZ and DAZ bits) while a thread runs
   its share of a fused batch: weights that the L2 term has driven to about 1e-30 make
   products such as w * w and g * g underflow on every step, which takes a slow microcode
   path on each. The register belongs to the thread: each parallel region sets it and
   restores it. Elsewhere both are no-ops. */
#if defined(__x86_64__) || defined(_M_X64) || defined(__SSE__)
#include <xmmintrin.h>
static inline unsigned int fastmlp_flush_subnormals(void) {
    unsigned int mode = _mm_getcsr();
    _mm_setcsr(mode | 0x8040u);
    return mode;
}
static inline void fastmlp_restore_fp_mode(unsigned int mode) { _mm_setcsr(mode); }
#else
static inline unsigned int fastmlp_flush_subnormals(void) { return 0; }
static inline void fastmlp_restore_fp_mode(unsigned int mode) { (void)mode; }
#endif

#endif /* FASTMLP_SIMD_H */
