# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The Cython backend's kernels, compiled ahead of time (see fastmlp/backends/cython_backend.py
for the Python side, which allocates and checks, and numpy_backend.py for the contract).

Every kernel is nogil and takes a fused float type, so float32 and float64 share one body.
Matrix products of the standalone kernels go to BLAS through scipy.linalg.cython_blas
(nothing to link at build time). The fused epoch does its own loops: its products are
small (64-row batches) and sparse in the first layer, where BLAS would multiply by the
zero pixels, and keeping BLAS's thread pool out of it leaves both cores to OpenMP.

Parallel loops split work so that each output element is written by one thread and summed
in a fixed order: the first layer forward and every row-wise step by rows, weight
gradients by input units. Results therefore do not depend on the thread count.

Row-major arrays are handed to the column-major BLAS as their transposes:
a row-major (r, c) matrix is a column-major (c, r) one with leading dimension c.
"""

cimport cython
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.math cimport exp, expf, log, sqrt, sqrtf, tanh, tanhf
from libc.stdlib cimport malloc, free
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from *:
    """
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
       multiply-add made predict 3x slower than plain row additions (measured). */
    #if defined(__GNUC__)
    #include <string.h>
    typedef float fastmlp_vf __attribute__((vector_size(32)));
    typedef double fastmlp_vd __attribute__((vector_size(32)));
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

    /* out[0:2K] (64 bytes) = sum over q < n of x[j] * w[j * stride : j * stride + 2K],
       j = idx[q] (or q without idx), in four interleaved partial sums added pairwise at
       the end, so that consecutive multiply-adds do not wait for each other. The caller
       pads w's rows (_common.padded_top). For the output layer: ten dot products per
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
    FASTMLP_SUM_ROWS(fastmlp_sum_rows_f, float, fastmlp_vf, fastmlp_load_vf, fastmlp_store_vf)
    FASTMLP_SUM_ROWS(fastmlp_sum_rows_d, double, fastmlp_vd, fastmlp_load_vd, fastmlp_store_vd)
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
        const Py_ssize_t L = 64 / sizeof(T);                                            \
        T s[4][64 / sizeof(T)] = {{0}};                                                 \
        Py_ssize_t q, c, j, n4 = n - n % 4;                                             \
        for (q = 0; q < n; q++) {                                                       \
            j = idx ? idx[q] : q;                                                       \
            for (c = 0; c < L; c++) s[q < n4 ? q % 4 : 0][c] += x[j] * w[j * stride + c]; \
        }                                                                               \
        for (c = 0; c < L; c++) out[c] = (s[0][c] + s[1][c]) + (s[2][c] + s[3][c]);     \
    }
    FASTMLP_SUM_ROWS(fastmlp_sum_rows_f, float)
    FASTMLP_SUM_ROWS(fastmlp_sum_rows_d, double)
    FASTMLP_VECTOR_SUM(fastmlp_vector_sum_f, float)
    FASTMLP_VECTOR_SUM(fastmlp_vector_sum_d, double)
    #endif
    """
    int FASTMLP_OPENMP
    int fastmlp_max_threads() nogil
    void fastmlp_set_threads(int n) nogil
    void fastmlp_axpy_f(float* y, float a, const float* x, Py_ssize_t n) nogil
    void fastmlp_axpy_d(double* y, double a, const double* x, Py_ssize_t n) nogil
    void fastmlp_sum_rows_f(float* out, const float* init, const float* w, Py_ssize_t stride,
                            const float* x, const int* idx, Py_ssize_t n, Py_ssize_t width,
                            int by_idx) nogil
    void fastmlp_sum_rows_d(double* out, const double* init, const double* w,
                            Py_ssize_t stride, const double* x, const int* idx, Py_ssize_t n,
                            Py_ssize_t width, int by_idx) nogil
    void fastmlp_vector_sum_f(float* out, const float* w, Py_ssize_t stride, const float* x,
                              const int* idx, Py_ssize_t n) nogil
    void fastmlp_vector_sum_d(double* out, const double* w, Py_ssize_t stride,
                              const double* x, const int* idx, Py_ssize_t n) nogil

# the codes of fastmlp/backends/_common.py
cdef enum:
    IDENTITY = 0
    RELU = 1
    TANH = 2
    LOGISTIC = 3
    ADAM = 1

OPENMP = bool(FASTMLP_OPENMP)


def max_threads():
    """Threads a parallel region would use now (1 when built without OpenMP)."""
    return fastmlp_max_threads()


def set_max_threads(int n):
    """Threads for the following parallel regions (no effect without OpenMP)."""
    if n < 1:
        raise ValueError(f"the thread count must be at least 1, got {n}")
    fastmlp_set_threads(n)


# ------------------------------------------------------------------------ small helpers


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline void _activate(floating* z, Py_ssize_t n, int act) noexcept nogil:
    cdef Py_ssize_t c
    cdef floating zero = 0, one = 1
    if act == RELU:
        # a select and a store per element, not a branch: a hidden unit's sign is a coin
        # toss, and mispredicted branches cost more than the stores (NaN stays NaN)
        for c in range(n):
            z[c] = zero if z[c] < zero else z[c]
    elif act == TANH:
        for c in range(n):
            if floating is float:
                z[c] = tanhf(z[c])
            else:
                z[c] = tanh(z[c])
    elif act == LOGISTIC:
        for c in range(n):
            z[c] = one / (one + _exp(-z[c]))


cdef inline void _act_derivative(floating* d, const floating* a, Py_ssize_t n,
                                 int act) noexcept nogil:
    # d *= act'(z), through the activation's output a = act(z)
    cdef Py_ssize_t c
    cdef floating zero = 0, one = 1
    if act == RELU:
        for c in range(n):
            d[c] = zero if a[c] <= zero else d[c]
    elif act == TANH:
        for c in range(n):
            d[c] *= one - a[c] * a[c]
    elif act == LOGISTIC:
        for c in range(n):
            d[c] *= a[c] * (one - a[c])


cdef inline void _axpy(floating* y, floating a, const floating* x,
                       Py_ssize_t n) noexcept nogil:
    # y and x never overlap here
    if floating is float:
        fastmlp_axpy_f(y, a, x, n)
    else:
        fastmlp_axpy_d(y, a, x, n)


cdef inline floating _dot(const floating* x, const floating* y, Py_ssize_t n) noexcept nogil:
    # eight interleaved partial sums combined in a fixed order: vectorisable without
    # -ffast-math, and the same bits on every run
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t c, n8 = n - n % 8
    for c in range(0, n8, 8):
        s0 += x[c] * y[c]
        s1 += x[c + 1] * y[c + 1]
        s2 += x[c + 2] * y[c + 2]
        s3 += x[c + 3] * y[c + 3]
        s4 += x[c + 4] * y[c + 4]
        s5 += x[c + 5] * y[c + 5]
        s6 += x[c + 6] * y[c + 6]
        s7 += x[c + 7] * y[c + 7]
    for c in range(n8, n):
        s0 += x[c] * y[c]
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


cdef inline double _softmax_row(floating* out, const floating* z, Py_ssize_t k,
                                long long label, int* hit) noexcept nogil:
    """out = softmax(z) (out may be z); returns the cross-entropy for label (if >= 0) and
    sets hit to whether the first arg-max is label."""
    cdef Py_ssize_t c, best = 0
    cdef floating top = z[0], e
    cdef double total = 0.0, target = 0.0
    for c in range(1, k):
        if z[c] > top:
            top = z[c]
            best = c
    if label >= 0:
        target = z[label] - top
    for c in range(k):
        e = _exp(z[c] - top)
        out[c] = e
        total += e
    cdef floating inv = <floating>(1.0 / total)
    for c in range(k):
        out[c] *= inv
    hit[0] = best == label
    return log(total) - target


cdef inline void _loss_row(floating* o, floating* d, Py_ssize_t k, long long label,
                           floating inv_n, double* loss, int* hit) noexcept nogil:
    # softmax of the logits o in place, the row's loss and hit, and d = (p - onehot) / n
    cdef Py_ssize_t c
    loss[0] = _softmax_row(o, o, k, label, hit)
    for c in range(k):
        d[c] = o[c] * inv_n
    d[label] -= inv_n


cdef void _gemm(char transa, char transb, int m, int n, int k, floating alpha,
                const floating* a, int lda, const floating* b, int ldb, floating beta,
                floating* c, int ldc) noexcept nogil:
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb,
              &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb,
              &beta, c, &ldc)


cdef inline int _imax(Py_ssize_t a) noexcept nogil:
    return <int>(a if a > 1 else 1)


# ------------------------------------------------------------------------ standalone kernels


def linear_forward(floating[:, ::1] out, const floating[:, ::1] x, const floating[:, ::1] w,
                   const floating[::1] b, int act):
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[1], r, c
    if n == 0 or n_out == 0:
        return
    with nogil:
        if n_in > 0:
            # out^T (O, N) = w^T (O, I) @ x^T (I, N), all read in place
            _gemm(c'N', c'N', <int>n_out, <int>n, <int>n_in, 1, &w[0, 0], <int>n_out,
                  &x[0, 0], <int>n_in, 0, &out[0, 0], <int>n_out)
        # serial on purpose: an OpenMP region right after a threaded BLAS call left both
        # thread pools waiting for the same two cores, and a 784x128 layer took 8 ms
        # instead of 0.3 (measured); the elementwise pass is small next to the product
        for r in range(n):
            for c in range(n_out):
                if n_in > 0:
                    out[r, c] += b[c]
                else:
                    out[r, c] = b[c]
            _activate(&out[r, 0], n_out, act)


def activation_backward(floating[:, ::1] delta, const floating[:, ::1] a, int act):
    cdef Py_ssize_t r
    if delta.shape[0] == 0 or delta.shape[1] == 0:
        return
    with nogil:
        for r in prange(delta.shape[0], schedule="static"):
            _act_derivative(&delta[r, 0], &a[r, 0], delta.shape[1], act)


def softmax_xent_forward(floating[:, ::1] probs, const floating[:, ::1] logits,
                         const long long[::1] y):
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1], r
    cdef double loss = 0.0
    cdef long long hits = 0
    cdef int hit
    with nogil:
        for r in range(n):
            loss += _softmax_row(&probs[r, 0], &logits[r, 0], k, y[r], &hit)
            hits += hit
    return loss, int(hits)


def softmax_xent_backward(floating[:, ::1] delta, const floating[:, ::1] probs,
                          const long long[::1] y):
    cdef Py_ssize_t n = probs.shape[0], k = probs.shape[1], r, c
    if n == 0:
        return
    cdef floating inv_n = <floating>(1.0 / n)
    with nogil:
        for r in prange(n, schedule="static"):
            for c in range(k):
                delta[r, c] = probs[r, c] * inv_n
            delta[r, y[r]] -= inv_n


def linear_backward(floating[:, ::1] dw, floating[::1] db, floating[:, ::1] dx,
                    const floating[:, ::1] delta, const floating[:, ::1] x,
                    const floating[:, ::1] w, double alpha_n):
    cdef Py_ssize_t n = delta.shape[0], n_out = delta.shape[1], n_in = x.shape[1], i, c, r
    cdef bint want_dx = dx.shape[0] * dx.shape[1] > 0
    cdef floating a_n = <floating>alpha_n, beta = 0
    with nogil:
        if n_in > 0 and n_out > 0:
            if a_n != 0:
                for i in range(n_in):  # serial, as in linear_forward
                    for c in range(n_out):
                        dw[i, c] = a_n * w[i, c]
                beta = 1
            if n > 0:
                # dw^T (O, I) = delta^T (O, N) @ x (N, I)
                _gemm(c'N', c'T', <int>n_out, <int>n_in, <int>n, 1, &delta[0, 0], <int>n_out,
                      &x[0, 0], <int>n_in, beta, &dw[0, 0], <int>n_out)
            elif a_n == 0:
                for i in range(n_in):
                    for c in range(n_out):
                        dw[i, c] = 0
        for c in range(n_out):
            db[c] = 0
        for r in range(n):
            for c in range(n_out):
                db[c] += delta[r, c]
        if want_dx and n > 0 and n_in > 0:
            if n_out > 0:
                # dx^T (I, N) = w (I, O) @ delta^T (O, N)
                _gemm(c'T', c'N', <int>n_in, <int>n, <int>n_out, 1, &w[0, 0], <int>n_out,
                      &delta[0, 0], <int>n_out, 0, &dx[0, 0], <int>n_in)
            else:
                for r in range(n):
                    for i in range(n_in):
                        dx[r, i] = 0


cdef void _update(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n,
                  int solver, floating lr, floating momentum, bint nesterov, floating beta1,
                  floating beta2, floating eps, floating lr_t) noexcept nogil:
    # every constant is typed: a bare 1 in Cython is the C double 1.0, which turned the
    # float32 loop into scalar double arithmetic
    cdef Py_ssize_t q
    cdef floating mq, vq, vel, gq
    cdef floating one = 1
    cdef floating c1 = one - beta1, c2 = one - beta2
    if solver == ADAM:
        for q in range(n):
            gq = g[q]
            mq = beta1 * m[q] + c1 * gq
            vq = beta2 * v[q] + c2 * gq * gq
            m[q] = mq
            v[q] = vq
            if floating is float:
                p[q] -= lr_t * mq / (sqrtf(vq) + eps)
            else:
                p[q] -= lr_t * mq / (sqrt(vq) + eps)
    elif nesterov:
        for q in range(n):
            vel = momentum * m[q] - lr * g[q]
            m[q] = vel
            p[q] += momentum * vel - lr * g[q]
    else:
        for q in range(n):
            vel = momentum * m[q] - lr * g[q]
            m[q] = vel
            p[q] += vel


cdef void _update_parallel(floating* p, const floating* g, floating* m, floating* v,
                           Py_ssize_t n, int solver, floating lr, floating momentum,
                           bint nesterov, floating beta1, floating beta2, floating eps,
                           floating lr_t, int n_blocks) noexcept nogil:
    # contiguous blocks, one per thread, each starting on a 16-element boundary
    cdef Py_ssize_t k, s, e, per = ((n + n_blocks - 1) // n_blocks + 15) // 16 * 16
    for k in prange(n_blocks, schedule="static", num_threads=n_blocks):
        s = k * per
        e = s + per
        if e > n:
            e = n
        if s < e:
            _update(p + s, g + s, m + s, v + s, e - s, solver, lr, momentum, nesterov,
                    beta1, beta2, eps, lr_t)


def sgd_update(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
               double lr, double momentum, bint nesterov):
    if param.shape[0] == 0:
        return
    with nogil:
        _update_parallel(&param[0], &grad[0], &velocity[0], &velocity[0], param.shape[0], 0,
                         <floating>lr, <floating>momentum, nesterov, 0, 0, 0, 0,
                         fastmlp_max_threads())


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] m,
                floating[::1] v, double lr_t, double beta1, double beta2, double eps):
    if param.shape[0] == 0:
        return
    with nogil:
        _update_parallel(&param[0], &grad[0], &m[0], &v[0], param.shape[0], ADAM, 0, 0, False,
                         <floating>beta1, <floating>beta2, <floating>eps, <floating>lr_t,
                         fastmlp_max_threads())


# ------------------------------------------------------------------------ sparse rows


def count_row_nonzeros(long long[::1] counts, const floating[:, ::1] X):
    cdef Py_ssize_t r, j, c
    with nogil:
        for r in prange(X.shape[0], schedule="static"):
            c = 0
            for j in range(X.shape[1]):
                if X[r, j] != 0:
                    c = c + 1
            counts[r] = c


def fill_sparse_rows(int[::1] indices, floating[::1] values, const long long[::1] indptr,
                     const floating[:, ::1] X):
    # Without a branch: each input goes to the row's next free place, which only advances
    # past a non-zero (a branch taken at random on image data made this pass several
    # times slower); once the row's places are filled, the rest of the row is skipped.
    cdef Py_ssize_t r, j, q, end
    cdef floating xv
    with nogil:
        for r in prange(X.shape[0], schedule="static"):
            q = indptr[r]
            end = indptr[r + 1]
            for j in range(X.shape[1]):
                if q == end:
                    break
                xv = X[r, j]
                indices[q] = <int>j
                values[q] = xv
                q = q + (xv != 0)


# ------------------------------------------------------------------------ the fused batch


cdef double _batch(floating* params, floating* grads, floating* m, floating* v,
                   const long long* sizes, const long long* p_offs, const long long* a_offs,
                   Py_ssize_t n_layers, const long long* indptr, const int* indices,
                   const floating* values, const long long* y, const long long* rows,
                   Py_ssize_t n, floating* acts, floating* deltas, double* row_loss,
                   int* row_hit, double* pen_rows, floating* top_w, Py_ssize_t k_pad,
                   floating* logit_rows, int act, double alpha, int solver,
                   floating lr, floating momentum, bint nesterov, floating beta1,
                   floating beta2, floating eps, floating lr_t, bint update,
                   int n_blocks) noexcept nogil:
    """Forward, loss, backward and (if update) optimizer step for the rows ``rows`` of the
    sparse X. acts/deltas hold, for each weight layer, its (n, width) outputs and their
    gradients at a_offs[layer]. With hidden layers, top_w is the top layer's W with its
    columns padded to k_pad (_common.padded_top), kept in step with params here, and
    logit_rows holds (n, k_pad) scratch. Returns the summed loss including
    alpha/2 ||W||^2; per-row correctness is left in row_hit."""
    cdef Py_ssize_t top = n_layers - 1, layer, r, c, i, q, k, j0, j1, per, tail, tail_per
    cdef Py_ssize_t t0, t1
    cdef Py_ssize_t n_in, n_out, n_k = sizes[n_layers], n_pix = sizes[0], pen_off
    cdef floating* w
    cdef floating* b
    cdef floating* h
    cdef floating* o
    cdef floating* d
    cdef floating* dw
    cdef floating* di
    cdef floating xv
    cdef floating alpha_n = <floating>(alpha / n), inv_n = <floating>(1.0 / n)
    cdef double loss = 0.0, penalty = 0.0
    cdef int hit
    cdef long long row, label

    # 1. first layer: bias plus the rows of W picked by the row's non-zero inputs
    n_out = sizes[1]
    w = params
    b = params + n_pix * n_out
    for r in prange(n, schedule="static", num_threads=n_blocks):
        o = acts + a_offs[0] + r * n_out
        row = rows[r]
        # summed in registers, not in o (see FASTMLP_SUM_ROWS)
        if floating is float:
            fastmlp_sum_rows_f(o, b, w, n_out, values + indptr[row], indices + indptr[row],
                               indptr[row + 1] - indptr[row], n_out, 0)
        else:
            fastmlp_sum_rows_d(o, b, w, n_out, values + indptr[row], indices + indptr[row],
                               indptr[row + 1] - indptr[row], n_out, 0)
        if top > 0:
            _activate(o, n_out, act)
        else:
            _loss_row(o, deltas + a_offs[0] + r * n_out, n_out, y[row], inv_n, &row_loss[r],
                      &row_hit[r])

    # 2. layers above: out = b + h @ W as a sum of rows of W, zero inputs skipped (at the
    #    top, vector sums of the padded copy of W); at the top, softmax, loss, accuracy
    #    and the gradient of the mean loss w.r.t. the logits
    for layer in range(1, n_layers):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w = params + p_offs[layer]
        b = w + n_in * n_out
        for r in prange(n, schedule="static", num_threads=n_blocks):
            h = acts + a_offs[layer - 1] + r * n_in
            o = acts + a_offs[layer] + r * n_out
            if layer == top:
                # the padded rows of W in vector sums (see FASTMLP_VECTOR_SUM)
                d = logit_rows + r * k_pad
                c = 0
                while c < k_pad:
                    if floating is float:
                        fastmlp_vector_sum_f(d + c, top_w + c, k_pad, h, NULL, n_in)
                    else:
                        fastmlp_vector_sum_d(d + c, top_w + c, k_pad, h, NULL, n_in)
                    c = c + _vector_lanes(h)
                for c in range(n_out):
                    o[c] = b[c] + d[c]
            else:
                for c in range(n_out):
                    o[c] = b[c]
                for i in range(n_in):
                    if h[i] != 0:
                        _axpy(o, h[i], w + i * n_out, n_out)
            if layer < top:
                _activate(o, n_out, act)
            else:
                _loss_row(o, deltas + a_offs[top] + r * n_k, n_k, y[rows[r]], inv_n,
                          &row_loss[r], &row_hit[r])

    # 3. backward through the layers above the first, top down
    pen_off = 0
    for layer in range(top, 0, -1):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w = params + p_offs[layer]
        dw = grads + p_offs[layer]
        # input gradient, from the weights before the update
        for r in prange(n, schedule="static", num_threads=n_blocks):
            d = deltas + a_offs[layer] + r * n_out
            di = deltas + a_offs[layer - 1] + r * n_in
            for i in range(n_in):
                di[i] = _dot(w + i * n_out, d, n_out)
            _act_derivative(di, acts + a_offs[layer - 1] + r * n_in, n_in, act)
        # weight gradient by input units (rows of W), with each row's sum of squares
        for i in prange(n_in, schedule="static", num_threads=n_blocks):
            for c in range(n_out):
                dw[i * n_out + c] = alpha_n * w[i * n_out + c]
            pen_rows[pen_off + i] = _dot(w + i * n_out, w + i * n_out, n_out)
            for r in range(n):
                xv = acts[a_offs[layer - 1] + r * n_in + i]
                if xv != 0:
                    _axpy(dw + i * n_out, xv, deltas + a_offs[layer] + r * n_out, n_out)
        # bias gradient
        dw = dw + n_in * n_out
        for c in range(n_out):
            dw[c] = 0
        for r in range(n):
            _axpy(dw, 1, deltas + a_offs[layer] + r * n_out, n_out)
        pen_off = pen_off + n_in

    # 4. first layer's bias gradient, then its weight gradient by blocks of input pixels:
    #    each block takes the batch's non-zeros in its range (a row's indices are sorted).
    #    Each block then updates its rows of W and its share of everything after them.
    n_out = sizes[1]
    w = params
    dw = grads + n_pix * n_out
    for c in range(n_out):
        dw[c] = 0
    for r in range(n):
        _axpy(dw, 1, deltas + a_offs[0] + r * n_out, n_out)
    dw = grads
    per = (n_pix + n_blocks - 1) // n_blocks
    tail = n_pix * n_out
    tail_per = ((p_offs[n_layers] - tail + n_blocks - 1) // n_blocks + 15) // 16 * 16
    for k in prange(n_blocks, schedule="static", num_threads=n_blocks):
        j0 = k * per
        j1 = j0 + per
        if j1 > n_pix:
            j1 = n_pix
        for i in range(j0, j1):
            for c in range(n_out):
                dw[i * n_out + c] = alpha_n * w[i * n_out + c]
            pen_rows[pen_off + i] = _dot(w + i * n_out, w + i * n_out, n_out)
        for r in range(n):
            d = deltas + a_offs[0] + r * n_out
            row = rows[r]
            for q in range(indptr[row], indptr[row + 1]):
                i = indices[q]
                if i >= j1:
                    break
                if i >= j0:
                    _axpy(dw + i * n_out, values[q], d, n_out)
        if update:
            if j0 < j1:
                _update(params + j0 * n_out, grads + j0 * n_out, m + j0 * n_out,
                        v + j0 * n_out, (j1 - j0) * n_out, solver, lr, momentum, nesterov,
                        beta1, beta2, eps, lr_t)
            t0 = tail + k * tail_per
            t1 = t0 + tail_per
            if t1 > p_offs[n_layers]:
                t1 = p_offs[n_layers]
            if t0 < t1:
                _update(params + t0, grads + t0, m + t0, v + t0, t1 - t0, solver, lr,
                        momentum, nesterov, beta1, beta2, eps, lr_t)
    pen_off = pen_off + n_pix
    if update and top > 0:
        # the padded copy of the top layer's W follows the update
        n_in = sizes[top]
        w = params + p_offs[top]
        for i in range(n_in):
            for c in range(n_k):
                top_w[i * k_pad + c] = w[i * n_k + c]

    for r in range(n):
        loss += row_loss[r]
    if alpha != 0:
        for i in range(pen_off):
            penalty += pen_rows[i]
        loss += 0.5 * alpha * penalty
    return loss


def train_epoch(floating[::1] params, floating[::1] grads, floating[::1] m, floating[::1] v,
                const long long[::1] sizes, const long long[::1] p_offs,
                const long long[::1] a_offs, const long long[::1] indptr,
                const int[::1] indices, const floating[::1] values, const long long[::1] y,
                const long long[::1] order, Py_ssize_t batch_size, floating[::1] acts,
                floating[::1] deltas, double[::1] row_loss, int[::1] row_hit,
                double[::1] pen_rows, floating[::1] top_w, floating[::1] logit_rows,
                int act, double alpha, int solver, double lr,
                double momentum, bint nesterov, double beta1, double beta2, double eps,
                long long t):
    """One epoch; returns (loss_sum, n_correct, t). Arrays are checked by the caller."""
    cdef Py_ssize_t n = order.shape[0], start, stop, r
    cdef Py_ssize_t n_layers = sizes.shape[0] - 1
    cdef Py_ssize_t k_pad = top_w.shape[0] // sizes[n_layers - 1]
    cdef double loss = 0.0, lr_t
    cdef long long hits = 0
    cdef int n_blocks = fastmlp_max_threads()
    cdef floating* mp = &m[0] if m.shape[0] > 0 else &params[0]
    cdef floating* vp = &v[0] if v.shape[0] > 0 else &params[0]
    with nogil:
        start = 0
        while start < n:
            stop = start + batch_size
            if stop > n:
                stop = n
            lr_t = lr
            if solver == ADAM:
                t += 1
                lr_t = lr * sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
            loss += _batch(&params[0], &grads[0], mp, vp, &sizes[0], &p_offs[0], &a_offs[0],
                           n_layers, &indptr[0], &indices[0] if indices.shape[0] > 0 else NULL,
                           &values[0] if values.shape[0] > 0 else NULL, &y[0],
                           &order[start], stop - start, &acts[0], &deltas[0], &row_loss[0],
                           &row_hit[0], &pen_rows[0], &top_w[0], k_pad, &logit_rows[0],
                           act, alpha, solver, <floating>lr,
                           <floating>momentum, nesterov, <floating>beta1, <floating>beta2,
                           <floating>eps, <floating>lr_t, True, n_blocks)
            for r in range(stop - start):
                hits += row_hit[r]
            start = stop
    return loss, int(hits), int(t)


def loss_and_grad(floating[::1] params, floating[::1] grads, const long long[::1] sizes,
                  const long long[::1] p_offs, const long long[::1] a_offs,
                  const long long[::1] indptr, const int[::1] indices,
                  const floating[::1] values, const long long[::1] y,
                  const long long[::1] rows, floating[::1] acts, floating[::1] deltas,
                  double[::1] row_loss, int[::1] row_hit, double[::1] pen_rows,
                  floating[::1] top_w, floating[::1] logit_rows, int act, double alpha):
    """Gradient of the summed objective of all rows into grads; returns that sum."""
    cdef double loss
    cdef Py_ssize_t k_pad = top_w.shape[0] // sizes[sizes.shape[0] - 2]
    with nogil:
        loss = _batch(&params[0], &grads[0], &params[0], &params[0], &sizes[0], &p_offs[0],
                      &a_offs[0], sizes.shape[0] - 1, &indptr[0],
                      &indices[0] if indices.shape[0] > 0 else NULL,
                      &values[0] if values.shape[0] > 0 else NULL, &y[0], &rows[0],
                      rows.shape[0], &acts[0], &deltas[0], &row_loss[0], &row_hit[0],
                      &pen_rows[0], &top_w[0], k_pad, &logit_rows[0], act, alpha, 0, 0, 0,
                      False, 0, 0, 0, 0, False,
                      fastmlp_max_threads())
    return loss


# ------------------------------------------------------------------------ predict


cdef inline Py_ssize_t _vector_lanes(floating* like) noexcept nogil:
    # values per vector of the output layer's sums (see FASTMLP_VECTOR_SUM)
    if floating is float:
        return 16
    else:
        return 8


cdef int _predict_row(floating* out, const floating* x, const floating* params,
                      const floating* top_w, Py_ssize_t k_pad, const long long* sizes,
                      const long long* p_offs, Py_ssize_t n_layers, floating* cur,
                      floating* nxt, floating* logits, int* nz, int act,
                      bint softmax) noexcept nogil:
    """One row's probabilities (or, without softmax, its logits) into out; returns 1 (and
    writes nothing) if the row holds NaN or infinity. top_w is the top layer's W with its
    columns padded to k_pad; cur, nxt, logits and nz are the thread's scratch."""
    cdef Py_ssize_t layer, i, c, t, n_in, n_out, cnt = 0
    cdef Py_ssize_t top = n_layers - 1, lanes = _vector_lanes(out)
    cdef const floating* w
    cdef floating* tmp
    cdef floating zero = 0, xv
    cdef int hit, finite = 1
    # where the non-zero inputs are, found without a branch (a branch taken at random on
    # image data costs more than the stores it saves)
    for i in range(sizes[0]):
        nz[cnt] = <int>i
        cnt += x[i] != zero
    # NaN and infinity are non-zero, so checking those checks the row (x - x is 0 exactly
    # for finite x)
    for t in range(cnt):
        xv = x[nz[t]]
        finite &= (xv - xv) == zero
    if not finite:
        return 1
    for layer in range(top):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w = params + p_offs[layer]
        if layer == 0:
            if floating is float:
                fastmlp_sum_rows_f(nxt, w + n_in * n_out, w, n_out, x, nz, cnt, n_out, 1)
            else:
                fastmlp_sum_rows_d(nxt, w + n_in * n_out, w, n_out, x, nz, cnt, n_out, 1)
        else:
            for c in range(n_out):
                nxt[c] = w[n_in * n_out + c]
            for i in range(n_in):
                if cur[i] != 0:
                    _axpy(nxt, cur[i], w + i * n_out, n_out)
        _activate(nxt, n_out, act)
        tmp = cur
        cur = nxt
        nxt = tmp
    # output layer: vector sums of the padded rows of W picked by the top layer's inputs
    n_in = sizes[top]
    n_out = sizes[n_layers]
    c = 0
    while c < k_pad:
        if floating is float:
            if top == 0:
                fastmlp_vector_sum_f(logits + c, top_w + c, k_pad, x, nz, cnt)
            else:
                fastmlp_vector_sum_f(logits + c, top_w + c, k_pad, cur, NULL, n_in)
        else:
            if top == 0:
                fastmlp_vector_sum_d(logits + c, top_w + c, k_pad, x, nz, cnt)
            else:
                fastmlp_vector_sum_d(logits + c, top_w + c, k_pad, cur, NULL, n_in)
        c += lanes
    w = params + p_offs[top] + n_in * n_out
    for c in range(n_out):
        out[c] = w[c] + logits[c]
    if softmax:
        _softmax_row(out, out, n_out, -1, &hit)
    return 0


def predict_proba(floating[:, ::1] out, const floating[:, ::1] X, const floating[::1] params,
                  const long long[::1] sizes, const long long[::1] p_offs, Py_ssize_t width,
                  int act, bint parallel_rows, bint softmax=True):
    """Probabilities (or, without softmax, logits) of every row of X, rows split between
    threads when parallel_rows. Returns the number of rows holding NaN or infinity (their
    outputs are not written)."""
    cdef Py_ssize_t n = X.shape[0], n_layers = sizes.shape[0] - 1, r, i, c
    cdef Py_ssize_t n_i = sizes[n_layers - 1], n_k = sizes[n_layers]
    cdef Py_ssize_t lanes = _vector_lanes(&out[0, 0]) if n > 0 else 1
    cdef Py_ssize_t k_pad = (n_k + lanes - 1) // lanes * lanes
    cdef int n_threads = fastmlp_max_threads() if parallel_rows else 1
    # each thread's scratch a whole number of cache lines, so threads share none
    cdef Py_ssize_t bad = 0, per_thread = (2 * width + k_pad + 15) // 16 * 16
    cdef Py_ssize_t n_in0 = (sizes[0] + 15) // 16 * 16
    cdef const floating* w_top = &params[0] + p_offs[n_layers - 1]
    cdef floating* top_w
    cdef floating* scratch
    cdef floating* mine
    cdef int* places
    if n == 0:
        return 0
    # the top layer's W with its columns padded to whole vectors (see FASTMLP_VECTOR_SUM)
    top_w = <floating*>malloc(n_i * k_pad * sizeof(floating))
    scratch = <floating*>malloc(n_threads * per_thread * sizeof(floating))
    places = <int*>malloc(n_threads * n_in0 * sizeof(int))
    if top_w == NULL or scratch == NULL or places == NULL:
        free(top_w)
        free(scratch)
        free(places)
        raise MemoryError("no memory for the prediction buffers")
    try:
        with nogil:
            for i in range(n_i):
                for c in range(k_pad):
                    top_w[i * k_pad + c] = w_top[i * n_k + c] if c < n_k else 0
            if n_threads > 1:
                for r in prange(n, schedule="static", num_threads=n_threads):
                    mine = scratch + per_thread * threadid()
                    bad += _predict_row(&out[r, 0], &X[r, 0], &params[0], top_w, k_pad,
                                        &sizes[0], &p_offs[0], n_layers, mine, mine + width,
                                        mine + 2 * width, places + n_in0 * threadid(), act,
                                        softmax)
            else:
                for r in range(n):
                    bad += _predict_row(&out[r, 0], &X[r, 0], &params[0], top_w, k_pad,
                                        &sizes[0], &p_offs[0], n_layers, scratch,
                                        scratch + width, scratch + 2 * width, places, act,
                                        softmax)
    finally:
        free(top_w)
        free(scratch)
        free(places)
    return bad
