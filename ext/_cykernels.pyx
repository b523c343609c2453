# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The Cython backend's kernels, compiled ahead of time (see fastmlp/backends/cython_backend.py
for the Python side, which allocates and checks, and fastmlp/backends/contract.py for the
contract). The C helpers (OpenMP's thread count, axpy, the vector sums) are in simd.h.

Every kernel is nogil and takes a fused float type, so float32 and float64 share one body.
Matrix products of the standalone kernels go to BLAS through scipy.linalg.cython_blas
(nothing to link at build time). The fused epoch does its own loops: its products are
small (64-row batches) and sparse in the first layer, where BLAS would multiply by the
zero pixels, and keeping BLAS's thread pool out of it leaves both cores to OpenMP.
A mini-batch (_batch) runs in stages, each a function of its own; they share the records
Layout (the network), Rows (the batch's input rows), Batch (the per-batch buffers) and
OptimizerStep (the optimizer's hyperparameters), passed by pointer.

Parallel loops split work so that each output element is written by one thread and summed
in a fixed order: the first layer forward and every row-wise step by rows, weight
gradients by input units, and the dense layers' matrix products in blocks of a fixed
number of units (DENSE_UNITS), so that BLAS sees the same shapes whatever the threads.
Results therefore do not depend on the thread count.

Row-major arrays are handed to the column-major BLAS as their transposes:
a row-major (r, c) matrix is a column-major (c, r) one with leading dimension c.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport M_PI, cos, exp, expf, fabs, log, log1p, rint, sqrt, sqrtf, tanh, tanhf
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport strchr
from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE,
                             PyBuffer_Release, PyObject_GetBuffer)
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from "simd.h":
    int FASTMLP_OPENMP
    int FASTMLP_VECTOR_BYTES
    int fastmlp_max_threads() nogil
    void fastmlp_set_threads(int n) nogil
    unsigned int fastmlp_flush_subnormals() nogil
    void fastmlp_restore_fp_mode(unsigned int mode) nogil
    void fastmlp_axpy_f(float* y, float a, const float* x, Py_ssize_t n) nogil
    void fastmlp_axpy_d(double* y, double a, const double* x, Py_ssize_t n) nogil
    void fastmlp_sum_rows_f(float* out, const float* init, const float* w, Py_ssize_t stride,
                            const float* x, const int* idx, Py_ssize_t n, Py_ssize_t width,
                            int by_idx) nogil
    void fastmlp_sum_rows_d(double* out, const double* init, const double* w,
                            Py_ssize_t stride, const double* x, const int* idx, Py_ssize_t n,
                            Py_ssize_t width, int by_idx) nogil
    void fastmlp_sum_rows4_f(float* out, Py_ssize_t ostride, const float* init,
                             const float* w, Py_ssize_t stride, const float* x0,
                             const float* x1, const float* x2, const float* x3,
                             Py_ssize_t n, Py_ssize_t width) nogil
    void fastmlp_sum_rows4_d(double* out, Py_ssize_t ostride, const double* init,
                             const double* w, Py_ssize_t stride, const double* x0,
                             const double* x1, const double* x2, const double* x3,
                             Py_ssize_t n, Py_ssize_t width) nogil
    void fastmlp_sum_cols4_f(float* out, Py_ssize_t ostride, const float* init,
                             Py_ssize_t istride, const float* w, Py_ssize_t stride,
                             const float* vals, const Py_ssize_t* starts, Py_ssize_t n,
                             Py_ssize_t width) nogil
    void fastmlp_sum_cols4_d(double* out, Py_ssize_t ostride, const double* init,
                             Py_ssize_t istride, const double* w, Py_ssize_t stride,
                             const double* vals, const Py_ssize_t* starts, Py_ssize_t n,
                             Py_ssize_t width) nogil
    void fastmlp_vector_sum_f(float* out, const float* w, Py_ssize_t stride, const float* x,
                              const int* idx, Py_ssize_t n) nogil
    void fastmlp_vector_sum_d(double* out, const double* w, Py_ssize_t stride,
                              const double* x, const int* idx, Py_ssize_t n) nogil

# the codes of fastmlp/backends/codes.py
cdef enum:
    IDENTITY = 0
    RELU = 1
    TANH = 2
    LOGISTIC = 3
    SOFTMAX = 4         # output functions only (codes.OUTPUTS)
    EXP = 5
    LEAKY_RELU = 6

cdef enum:
    SGD = 0
    ADAM = 1

cdef enum:
    CONSTANT = 0
    COSINE = 1
    LINEAR = 2

# codes.FLUSH_BELOW: Adam's moments of smaller magnitude are set to 0
cdef double FLUSH_BELOW = 1.1754943508222875e-38
# codes.LEAKY_SLOPE: LEAKY_RELU's slope below zero
cdef double LEAKY_SLOPE = 0.01
# the constants of dropout's generator (codes.mix64, codes.GOLDEN64)
cdef unsigned long long MIX_M1 = 0xBF58476D1CE4E5B9
cdef unsigned long long MIX_M2 = 0x94D049BB133111EB
cdef unsigned long long GOLDEN64 = 0x9E3779B97F4A7C15

# Values in a 64-byte cache line of float32 (two whole lines of float64): per-thread blocks
# and scratch are rounded up to a multiple of it, so that no two threads write one line.
cdef enum:
    ALIGN_VALUES = 16
    # units per block of a dense hidden layer's matrix products in the epoch: a fixed
    # size, not a share of the threads, so that every product has the same shape at any
    # thread count (BLAS may sum a product of another shape in another order)
    DENSE_UNITS = 64
    # rows per matrix product through the dense hidden layers in predict
    PREDICT_BLOCK = 128

OPENMP = bool(FASTMLP_OPENMP)
# bytes of one vector sum of the output layer (simd.h; fastmlp/backends/layout.py agrees)
VECTOR_BYTES = FASTMLP_VECTOR_BYTES
ACTIVATION_CODES = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "logistic": LOGISTIC,
                    "leaky_relu": LEAKY_RELU}
OUTPUT_CODES = {"softmax": SOFTMAX, "logistic": LOGISTIC, "identity": IDENTITY, "exp": EXP}
SOLVER_CODES = {"sgd": SGD, "adam": ADAM}
SCHEDULE_CODES = {"constant": CONSTANT, "cosine": COSINE, "linear": LINEAR}


def max_threads():
    """Threads a parallel region would use now (1 when built without OpenMP)."""
    return fastmlp_max_threads()


def set_max_threads(int n):
    """Threads for the following parallel regions (no effect without OpenMP)."""
    if n < 1:
        raise ValueError(f"the thread count must be at least 1, got {n}")
    fastmlp_set_threads(n)


def vector_lanes(Py_ssize_t itemsize):
    """Values in one vector sum of the output layer for floats of itemsize bytes (4 or 8)."""
    cdef float f32 = 0
    cdef double f64 = 0
    if itemsize == sizeof(float):
        return _vector_lanes(&f32)
    if itemsize == sizeof(double):
        return _vector_lanes(&f64)
    raise ValueError(f"no float type of {itemsize} bytes")


# ------------------------------------------------------------------------ records


cdef struct Layout:
    # the network: widths sizes[0..n_layers] (inputs first, classes last); each layer's
    # start in the flat parameters at p_offs[layer] (their total at p_offs[n_layers]); each
    # weight layer's (n, width) outputs in Batch.acts and gradients in Batch.deltas at
    # a_offs[layer] (NULL where nothing reads them)
    const long long* sizes
    const long long* p_offs
    const long long* a_offs
    Py_ssize_t n_layers


cdef struct Rows:
    # the batch: rows[0:n] of the sparse X, whose row j holds values[indptr[j]:indptr[j + 1]]
    # in the columns indices[...] (sorted), and its target (codes.Target): the output
    # function, and the label y[j] (SOFTMAX) or the k values t_values[j * k ...]; weights[j]
    # scales the row (NULL: every row weighs 1). values, t_values, weights are floating*.
    const long long* indptr
    const int* indices
    const void* values
    int output
    const long long* y
    const void* t_values
    const void* weights
    const long long* rows
    Py_ssize_t n


cdef struct Batch:
    # the per-batch buffers; the void pointers are floating*
    void* acts          # each weight layer's outputs, at Layout.a_offs
    void* deltas        # the loss's gradient w.r.t. them, at the same places
    double* row_loss    # (n,) each row's loss
    int* row_hit        # (n,) whether each row's arg-max is its label
    double* pen_rows    # the squared norm of each row of every W, top layer first
    void* top_w         # the top layer's W, its columns padded to k_pad (layout.padded_top)
    Py_ssize_t k_pad
    void* logit_rows    # (n, k_pad) scratch of the output layer's vector sums


cdef struct OptimizerStep:
    # codes.OptimizerStep: momentum and nesterov are SGD's, beta1, beta2 and eps Adam's;
    # lr_t is the current batch's step size (for Adam, bias-corrected)
    int solver
    double lr
    double momentum
    bint nesterov
    double beta1
    double beta2
    double eps
    double lr_t
    int schedule        # codes.SCHEDULES: the learning rate's decay before every batch
    double seen         # samples the schedule had seen before this epoch
    double horizon      # samples the schedule spans
    bint lazy           # Adam steps only the first layer's rows of the batch's inputs
    double weight_decay  # AdamW's decoupled decay (Adam only)
    double keep_t       # the current batch's factor of that decay, codes.decay_keep
    double max_norm     # each unit's incoming weights scaled back to this norm; 0: none
    double dropout      # the hidden layers' dropout rate during training; 0: none
    long long drop_seed  # the fit's key of dropout's masks
    double batch        # samples seen before the current batch (set before every batch)


cdef OptimizerStep _optimizer_step(opt) except *:
    """A codes.OptimizerStep as the record, read by position."""
    cdef OptimizerStep step
    (step.solver, step.lr, step.momentum, step.nesterov, step.beta1, step.beta2, step.eps,
     step.lr_t, step.schedule, step.seen, step.horizon, step.lazy, step.weight_decay,
     step.keep_t, step.max_norm, step.dropout, step.drop_seed, step.batch) = opt
    return step


def optimizer_step_fields(opt):
    """The record ``opt`` becomes, as a dict of its fields in their order, so that the
    contract test can hold the positional reading above against codes.OptimizerStep."""
    return _optimizer_step(opt)


cdef int _read_records(floating[::1] params, net, data, buffers, Layout* lay, Rows* x,
                       Batch* buf) except -1:
    """The records of the arrays in net (sizes, p_offs, a_offs), data (indptr, indices,
    values, target; target = (output, labels, flat values, weights) of a codes.Target)
    and buffers (acts, deltas, row_loss, row_hit, pen_rows, top_w, logit_rows);
    floats of params' type (params only picks it; ValueError for another). The records point
    into the arrays, which the caller's tuples keep alive; x's rows are left to the caller."""
    cdef const long long[::1] sizes, p_offs, a_offs, indptr, y
    cdef const int[::1] indices
    cdef const floating[::1] values, t_values, weights
    cdef floating[::1] acts, deltas, top_w, logit_rows
    cdef double[::1] row_loss, pen_rows
    cdef int[::1] row_hit
    sizes, p_offs, a_offs = net
    indptr, indices, values, target = data
    x.output, y, t_values, weights = target
    acts, deltas, row_loss, row_hit, pen_rows, top_w, logit_rows = buffers
    lay.sizes, lay.p_offs, lay.a_offs = &sizes[0], &p_offs[0], &a_offs[0]
    lay.n_layers = sizes.shape[0] - 1
    x.indptr = &indptr[0]
    x.indices = &indices[0] if indices.shape[0] > 0 else NULL
    x.values = &values[0] if values.shape[0] > 0 else NULL
    x.y = &y[0] if y.shape[0] > 0 else NULL
    x.t_values = &t_values[0] if t_values.shape[0] > 0 else NULL
    x.weights = &weights[0] if weights.shape[0] > 0 else NULL
    x.rows = NULL
    x.n = 0
    buf.acts, buf.deltas, buf.row_loss = &acts[0], &deltas[0], &row_loss[0]
    buf.row_hit, buf.pen_rows, buf.top_w = &row_hit[0], &pen_rows[0], &top_w[0]
    buf.k_pad = top_w.shape[0] // sizes[lay.n_layers - 1]
    buf.logit_rows = &logit_rows[0]
    return 0


# ------------------------------------------------------------------------ small helpers


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline void _activate(floating* z, Py_ssize_t n, int act) noexcept nogil:
    cdef Py_ssize_t c
    cdef floating zero = 0, one = 1, slope = <floating>LEAKY_SLOPE
    if act == RELU:
        # a select and a store per element, not a branch: a hidden unit's sign is a coin
        # toss, and mispredicted branches cost more than the stores (NaN stays NaN)
        for c in range(n):
            z[c] = zero if z[c] < zero else z[c]
    elif act == LEAKY_RELU:
        for c in range(n):
            z[c] = z[c] * slope if z[c] < zero else z[c]
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
    cdef floating zero = 0, one = 1, slope = <floating>LEAKY_SLOPE
    if act == RELU:
        for c in range(n):
            d[c] = zero if a[c] <= zero else d[c]
    elif act == LEAKY_RELU:
        for c in range(n):
            d[c] = d[c] * slope if a[c] <= zero else d[c]
    elif act == TANH:
        for c in range(n):
            d[c] *= one - a[c] * a[c]
    elif act == LOGISTIC:
        for c in range(n):
            d[c] *= a[c] * (one - a[c])


cdef inline void _dropout_derivative(floating* d, const floating* h, Py_ssize_t n, int act,
                                     double rate) noexcept nogil:
    # d *= the derivative of dropout after the activation, read from the outputs h that
    # _dropout_rows left: 0 where h is 0 (a dropped unit), else act'(a) at a = h (1 - rate)
    # divided by 1 - rate (numpy_backend._dropout_backward)
    cdef Py_ssize_t c
    cdef floating zero = 0, one = 1, slope = <floating>LEAKY_SLOPE
    cdef floating s = <floating>(1.0 / (1.0 - rate)), q = <floating>(1.0 - rate), g, a, v
    for c in range(n):
        v = h[c]
        g = d[c] * s if v != zero else zero
        a = v * q
        if act == RELU:
            g = zero if a <= zero else g
        elif act == LEAKY_RELU:
            g = g * slope if a <= zero else g
        elif act == TANH:
            g = g * (one - a * a)
        elif act == LOGISTIC:
            g = g * (a * (one - a))
        d[c] = g


cdef inline void _derivative(floating* d, const floating* a, Py_ssize_t n, int act,
                             double rate) noexcept nogil:
    # d *= the derivative of a hidden layer's output function: the activation's, or with
    # dropout at rate (> 0), dropout's
    if rate == 0:
        _act_derivative(d, a, n, act)
    else:
        _dropout_derivative(d, a, n, act, rate)


cdef inline unsigned long long _mix64(unsigned long long z) noexcept nogil:
    # codes.mix64: SplitMix64's finaliser
    z = (z ^ (z >> 30)) * MIX_M1
    z = (z ^ (z >> 27)) * MIX_M2
    return z ^ (z >> 31)


cdef void _dropout_rows(floating* h, Py_ssize_t n, Py_ssize_t width, Py_ssize_t layer,
                        const OptimizerStep* opt, int n_blocks) noexcept nogil:
    """Inverted dropout of a hidden layer's outputs h (n, width) row-major, in place: each
    unit kept and divided by 1 - opt.dropout, or set to 0, by codes.dropout_kept with the
    key codes.dropout_row_key (numpy_backend._dropout_forward)."""
    cdef unsigned long long threshold = <unsigned long long>rint(opt.dropout * 4294967296.0)
    cdef unsigned long long seed = <unsigned long long>opt.drop_seed
    cdef unsigned long long head = _mix64(seed ^ _mix64(<unsigned long long>opt.batch))
    cdef unsigned long long key, bits
    cdef floating scale = <floating>(1.0 / (1.0 - opt.dropout)), zero = 0
    cdef Py_ssize_t r, c
    cdef floating* o
    for r in prange(n, schedule="static", num_threads=n_blocks):
        key = _mix64(head ^ ((<unsigned long long>layer << 32) | <unsigned long long>r))
        o = h + r * width
        for c in range(width):
            bits = _mix64(key + <unsigned long long>c * GOLDEN64) >> 32
            o[c] = o[c] * scale if bits >= threshold else zero


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


cdef inline void _output_row(floating* o, floating* d, Py_ssize_t k, const Rows* x,
                             long long row, floating inv_n, double* loss,
                             int* hit) noexcept nogil:
    """One row of the output layer: the logits o replaced by the output function, the row's
    (weighted) loss and hit, and d = (output - target) * w / n, the gradient of its share
    of the batch's mean loss (n: the rows, or the sum of their weights; inv_n = 1 / n)."""
    cdef Py_ssize_t c
    cdef floating scale = inv_n, p, zero = 0, half = 0.5, one = 1
    cdef double zf, tf, w = 1.0
    cdef const floating* t
    if x.weights != NULL:
        w = (<const floating*>x.weights)[row]
        scale = inv_n * (<const floating*>x.weights)[row]
    if x.output == SOFTMAX:
        loss[0] = _softmax_row(o, o, k, x.y[row], hit)
        for c in range(k):
            d[c] = o[c] * scale
        d[x.y[row]] -= scale
    else:
        t = <const floating*>x.t_values + row * k
        loss[0] = 0.0
        hit[0] = x.output == LOGISTIC
        for c in range(k):
            zf = o[c]
            tf = t[c]
            if x.output == LOGISTIC:
                # binary cross-entropy through z: log(1 + e^z) - t z, without overflow
                loss[0] += (zf if zf > 0 else 0.0) + log1p(exp(-fabs(zf))) - tf * zf
                if (o[c] > zero) != (t[c] > half):
                    hit[0] = 0
                p = one / (one + _exp(-o[c]))
            elif x.output == EXP:
                # half the Poisson deviance: e^z - t z + t log t - t
                p = _exp(o[c])
                loss[0] += exp(zf) - tf * zf - tf + (tf * log(tf) if tf > 0 else 0.0)
            else:
                # IDENTITY: half the squared error
                p = o[c]
                loss[0] += 0.5 * (zf - tf) * (zf - tf)
            o[c] = p
            d[c] = (p - t[c]) * scale
    if x.weights != NULL:
        loss[0] *= w


cdef inline void _output_fn(floating* o, Py_ssize_t k, int output) noexcept nogil:
    # the output function in place (prediction; IDENTITY leaves the logits)
    cdef Py_ssize_t c
    cdef int hit
    if output == SOFTMAX:
        _softmax_row(o, o, k, -1, &hit)
    elif output == EXP:
        for c in range(k):
            o[c] = _exp(o[c])
    else:
        _activate(o, k, output)


cdef void _gemm(char transa, char transb, int m, int n, int k, floating alpha,
                const floating* a, int lda, const floating* b, int ldb, floating beta,
                floating* c, int ldc) noexcept nogil:
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb,
              &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb,
              &beta, c, &ldc)


cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    # n (>= 0) rounded up to a multiple of m
    return (n + m - 1) // m * m


cdef inline Py_ssize_t _vector_lanes(const floating* like) noexcept nogil:
    # values in one vector sum of the output layer (see FASTMLP_VECTOR_SUM in simd.h)
    return FASTMLP_VECTOR_BYTES // sizeof(floating)


cdef inline void _sum_rows(floating* out, const floating* init, const floating* w,
                           Py_ssize_t stride, const floating* x, const int* idx, Py_ssize_t n,
                           Py_ssize_t width, int by_idx) noexcept nogil:
    # out = init + the rows idx of w weighted by x, summed in registers (FASTMLP_SUM_ROWS)
    if floating is float:
        fastmlp_sum_rows_f(out, init, w, stride, x, idx, n, width, by_idx)
    else:
        fastmlp_sum_rows_d(out, init, w, stride, x, idx, n, width, by_idx)


cdef inline void _sum_rows4(floating* out, Py_ssize_t ostride, const floating* init,
                            const floating* w, const floating* x0, const floating* x1,
                            const floating* x2, const floating* x3, Py_ssize_t n,
                            Py_ssize_t width) noexcept nogil:
    # four rows whose n inputs are all stored, out + r * ostride = init + their inputs
    # times w (n, width): each row the sums of _sum_rows, w read once (FASTMLP_SUM_ROWS4)
    if floating is float:
        fastmlp_sum_rows4_f(out, ostride, init, w, width, x0, x1, x2, x3, n, width)
    else:
        fastmlp_sum_rows4_d(out, ostride, init, w, width, x0, x1, x2, x3, n, width)


cdef inline void _sum_cols4(floating* out, Py_ssize_t ostride, const floating* init,
                            Py_ssize_t istride, const floating* w, Py_ssize_t stride,
                            const floating* vals, const Py_ssize_t* starts, Py_ssize_t n,
                            Py_ssize_t width) noexcept nogil:
    # four inputs' gradients over a batch whose rows hold all their inputs: out + r *
    # ostride = init + r * istride + sum over the rows q of vals[starts[q] + r] times row
    # q of w (FASTMLP_SUM_COLS4)
    if floating is float:
        fastmlp_sum_cols4_f(out, ostride, init, istride, w, stride, vals, starts, n, width)
    else:
        fastmlp_sum_cols4_d(out, ostride, init, istride, w, stride, vals, starts, n, width)


cdef inline void _vector_sums(floating* out, const floating* w, Py_ssize_t k_pad,
                              const floating* x, const int* idx, Py_ssize_t n) noexcept nogil:
    # out[0:k_pad] = the rows of w (n_in, k_pad) picked by idx (without idx, its first n
    # rows) weighted by x, a vector sum at a time (FASTMLP_VECTOR_SUM): the padding makes
    # k_pad a whole number of them
    cdef Py_ssize_t c = 0
    while c < k_pad:
        if floating is float:
            fastmlp_vector_sum_f(out + c, w + c, k_pad, x, idx, n)
        else:
            fastmlp_vector_sum_d(out + c, w + c, k_pad, x, idx, n)
        c = c + _vector_lanes(out)


cdef inline void _sum_bias_grad(floating* db, const floating* d, Py_ssize_t n,
                                Py_ssize_t n_out) noexcept nogil:
    # db = the sum of the rows of d (n, n_out), in row order
    cdef Py_ssize_t r, c
    for c in range(n_out):
        db[c] = 0
    for r in range(n):
        _axpy(db, 1, d + r * n_out, n_out)


# ------------------------------------------------------------------------ standalone kernels


def linear_forward(floating[:, ::1] out, const floating[:, ::1] x, const floating[:, ::1] w,
                   const floating[::1] b, int act):
    # x (N, I), w (I, O), b (O,), out (N, O): out = act(x @ w + b)
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[1], r, c
    if n == 0 or n_out == 0:
        return
    with nogil:
        if n_in > 0:
            # out^T (O, N) = w^T (O, I) @ x^T (I, N), all read in place
            _gemm(c'N', c'N', <int>n_out, <int>n, <int>n_in, 1, &w[0, 0], <int>n_out,
                  &x[0, 0], <int>n_in, 0, &out[0, 0], <int>n_out)
        # serial on purpose: an OpenMP region right after a threaded BLAS call left both
        # thread pools waiting for the same two cores, which made a 784x128 layer many
        # times slower; the elementwise pass is small next to the product
        for r in range(n):
            for c in range(n_out):
                if n_in > 0:
                    out[r, c] += b[c]
                else:
                    out[r, c] = b[c]
            _activate(&out[r, 0], n_out, act)


def activation_backward(floating[:, ::1] delta, const floating[:, ::1] a, int act):
    # delta (N, O), a (N, O): delta *= act'(z), through the activation's output a = act(z)
    cdef Py_ssize_t r
    if delta.shape[0] == 0 or delta.shape[1] == 0:
        return
    with nogil:
        for r in prange(delta.shape[0], schedule="static"):
            _act_derivative(&delta[r, 0], &a[r, 0], delta.shape[1], act)


def softmax_xent_forward(floating[:, ::1] probs, const floating[:, ::1] logits,
                         const long long[::1] y):
    # logits (N, K), probs (N, K) (may be logits), y (N,): returns (loss sum, hits)
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
    # probs (N, K), y (N,), delta (N, K): delta = (probs - onehot(y)) / N
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
    # delta (N, O), x (N, I), w (I, O), dw (I, O), db (O,), dx (N, I) or empty (skipped):
    # dw = x.T @ delta + alpha_n * w, db = delta summed over rows, dx = delta @ w.T
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
                  const OptimizerStep* opt) noexcept nogil:
    # p, g, m, v (n,): one optimizer step (for SGD, m is the velocity and v unused)
    # every constant is typed: a bare 1 in Cython is the C double 1.0, which turned the
    # float32 loop into scalar double arithmetic; and so each hyperparameter is cast to
    # floating once, here
    cdef Py_ssize_t q
    cdef floating mq, vq, vel, gq
    cdef floating one = 1
    cdef floating lr = <floating>opt.lr, momentum = <floating>opt.momentum
    cdef floating beta1 = <floating>opt.beta1, beta2 = <floating>opt.beta2
    cdef floating eps = <floating>opt.eps, lr_t = <floating>opt.lr_t
    cdef floating keep = <floating>opt.keep_t
    cdef floating c1 = one - beta1, c2 = one - beta2
    cdef floating zero = 0, tiny = <floating>FLUSH_BELOW
    if opt.solver == ADAM:
        for q in range(n):
            gq = g[q]
            mq = beta1 * m[q] + c1 * gq
            vq = beta2 * v[q] + c2 * gq * gq
            # moments below the smallest normal float32 become 0 (codes.FLUSH_BELOW): a
            # select, and NaN is kept
            mq = zero if fabs(mq) < tiny else mq
            vq = zero if vq < tiny else vq
            m[q] = mq
            v[q] = vq
            # keep: AdamW's decoupled decay, exactly 1 without it (no bit changes)
            if floating is float:
                p[q] = p[q] * keep - lr_t * mq / (sqrtf(vq) + eps)
            else:
                p[q] = p[q] * keep - lr_t * mq / (sqrt(vq) + eps)
    elif opt.nesterov:
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
                           Py_ssize_t n, const OptimizerStep* opt, int n_blocks) noexcept nogil:
    # p, g, m, v (n,): _update in contiguous blocks, one per thread, each a whole number
    # of ALIGN_VALUES long, so that threads share no cache line
    cdef Py_ssize_t k, s, e, per = _round_up((n + n_blocks - 1) // n_blocks, ALIGN_VALUES)
    for k in prange(n_blocks, schedule="static", num_threads=n_blocks):
        s = k * per
        e = s + per
        if e > n:
            e = n
        if s < e:
            _update(p + s, g + s, m + s, v + s, e - s, opt)


def sgd_update(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
               double lr, double momentum, bint nesterov):
    # param, grad, velocity (P,): SGD with (Nesterov) momentum, as scikit-learn's
    cdef OptimizerStep opt = OptimizerStep(SGD, lr, momentum, nesterov, 0, 0, 0, 0, CONSTANT,
                                           0, 1, False, 0, 1, 0, 0, 0, 0)
    if param.shape[0] == 0:
        return
    with nogil:
        _update_parallel(&param[0], &grad[0], &velocity[0], &velocity[0], param.shape[0], &opt,
                         fastmlp_max_threads())


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] m,
                floating[::1] v, double lr_t, double beta1, double beta2, double eps,
                double keep=1.0):
    # param, grad, m, v (P,): one Adam step, the bias correction folded into lr_t, each
    # parameter multiplied by keep (AdamW's decoupled decay) before it
    cdef OptimizerStep opt = OptimizerStep(ADAM, 0, 0, False, beta1, beta2, eps, lr_t,
                                           CONSTANT, 0, 1, False, 0, keep, 0, 0, 0, 0)
    if param.shape[0] == 0:
        return
    with nogil:
        _update_parallel(&param[0], &grad[0], &m[0], &v[0], param.shape[0], &opt,
                         fastmlp_max_threads())


# ------------------------------------------------------------------------ sparse rows


# X as it is stored: the training dtype, or uint8 pixels (converted value by value as
# they are compressed, so no float copy of the image is made)
ctypedef fused stored:
    float
    double
    unsigned char


def count_row_nonzeros(long long[::1] counts, const stored[:, ::1] X):
    # X (N, I0), counts (N,): the non-zeros of each row of X
    cdef Py_ssize_t r, j, c
    with nogil:
        for r in prange(X.shape[0], schedule="static"):
            c = 0
            for j in range(X.shape[1]):
                if X[r, j] != 0:
                    c = c + 1
            counts[r] = c


def fill_sparse_rows(int[::1] indices, floating[::1] values, const long long[::1] indptr,
                     const stored[:, ::1] X):
    # X (N, I0), indptr (N + 1,), indices and values (indptr[N],): X's rows compressed.
    # Without a branch: each input goes to the row's next free place, which only advances
    # past a non-zero (a branch taken at random on image data made this pass several
    # times slower); once the row's places are filled, the rest of the row is skipped.
    cdef Py_ssize_t r, j, q, end
    cdef stored xv
    with nogil:
        for r in prange(X.shape[0], schedule="static"):
            q = indptr[r]
            end = indptr[r + 1]
            for j in range(X.shape[1]):
                if q == end:
                    break
                xv = X[r, j]
                indices[q] = <int>j
                values[q] = <floating>xv
                q = q + (xv != 0)


# ------------------------------------------------------------------------ the fused batch
#
# A mini-batch in stages: _forward_first, _forward_above (with the output head: softmax,
# loss, gradient w.r.t. the logits), _backward_above, _first_layer_step (the first layer's
# gradient fused with the optimizer's update), then _refresh_top_w and _batch_loss. Their
# parallel loops split the work as the module docstring says, n_blocks threads each.


cdef void _forward_first(const floating* params, const Layout* net, const Rows* x,
                         const Batch* buf, int act, floating inv_n,
                         int n_blocks) noexcept nogil:
    """1. The first layer: bias plus the rows of W picked by the row's non-zero inputs, then
    the activation (without hidden layers, the output head as in _forward_above)."""
    cdef const long long* indptr = x.indptr
    cdef const long long* rows = x.rows
    cdef const int* indices = x.indices
    cdef const floating* values = <const floating*>x.values
    cdef floating* acts = <floating*>buf.acts + net.a_offs[0]
    cdef floating* deltas = <floating*>buf.deltas + net.a_offs[0]
    cdef double* row_loss = buf.row_loss
    cdef int* row_hit = buf.row_hit
    cdef Py_ssize_t n = x.n, n_out = net.sizes[1], r
    cdef unsigned int mode = 0
    cdef bint hidden = net.n_layers > 1
    cdef const floating* w = params
    cdef const floating* b = params + net.sizes[0] * n_out
    cdef floating* o
    cdef long long row
    cdef Py_ssize_t n_in = net.sizes[0], quads = n // 4, g, i
    # every row of the batch holds all its inputs (dense tabular data): blocks of four
    # rows read each row of W once for the four (FASTMLP_SUM_ROWS4), the same sums
    for r in range(n):
        if indptr[rows[r] + 1] - indptr[rows[r]] != n_in:
            quads = 0
            break
    with parallel(num_threads=n_blocks):
        mode = fastmlp_flush_subnormals()
        for g in prange(quads, schedule="static"):
            _sum_rows4(acts + 4 * g * n_out, n_out, b, w, values + indptr[rows[4 * g]],
                       values + indptr[rows[4 * g + 1]], values + indptr[rows[4 * g + 2]],
                       values + indptr[rows[4 * g + 3]], n_in, n_out)
            for i in range(4 * g, 4 * g + 4):
                if hidden:
                    _activate(acts + i * n_out, n_out, act)
                else:
                    _output_row(acts + i * n_out, deltas + i * n_out, n_out, x, rows[i],
                                inv_n, &row_loss[i], &row_hit[i])
        for r in prange(4 * quads, n, schedule="static"):
            o = acts + r * n_out
            row = rows[r]
            # summed in registers, not in o (see FASTMLP_SUM_ROWS)
            _sum_rows(o, b, w, n_out, values + indptr[row], indices + indptr[row],
                      indptr[row + 1] - indptr[row], n_out, 0)
            if hidden:
                _activate(o, n_out, act)
            else:
                _output_row(o, deltas + r * n_out, n_out, x, row, inv_n, &row_loss[r],
                            &row_hit[r])
        fastmlp_restore_fp_mode(mode)


cdef void _forward_above(const floating* params, const Layout* net, const Rows* x,
                         const Batch* buf, int act, floating inv_n, int n_blocks,
                         const OptimizerStep* opt) noexcept nogil:
    """2. The layers above the first: out = b + h @ W as a sum of rows of W, zero inputs
    skipped (at the top, vector sums of the padded copy of W); at the top, softmax, loss,
    accuracy and the gradient of the mean loss w.r.t. the logits."""
    cdef const long long* sizes = net.sizes
    cdef const long long* a_offs = net.a_offs
    cdef const long long* rows = x.rows
    cdef floating* acts = <floating*>buf.acts
    cdef floating* deltas = <floating*>buf.deltas
    cdef const floating* top_w = <const floating*>buf.top_w
    cdef floating* logit_rows = <floating*>buf.logit_rows
    cdef double* row_loss = buf.row_loss
    cdef int* row_hit = buf.row_hit
    cdef Py_ssize_t n = x.n, k_pad = buf.k_pad, top = net.n_layers - 1, n_k = sizes[top + 1]
    cdef unsigned int mode = 0
    cdef Py_ssize_t layer, r, c, n_in, n_out, k
    cdef const floating* w
    cdef const floating* b
    cdef const floating* h
    cdef floating* o
    cdef floating* d
    for layer in range(1, top + 1):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w = params + net.p_offs[layer]
        b = w + n_in * n_out
        if layer < top:
            # a dense hidden layer: a matrix product per thread's block of units
            with parallel(num_threads=n_blocks):
                mode = fastmlp_flush_subnormals()
                for k in prange(_dense_blocks(n_out), schedule="static"):
                    _dense_forward(w, b, acts + a_offs[layer - 1], acts + a_offs[layer], n,
                                   n_in, n_out, _dense_unit(n_out, k),
                                   _dense_unit(n_out, k + 1), act)
                fastmlp_restore_fp_mode(mode)
            if opt != NULL and opt.dropout > 0:
                _dropout_rows(acts + a_offs[layer], n, n_out, layer, opt, n_blocks)
            continue
        with parallel(num_threads=n_blocks):
            mode = fastmlp_flush_subnormals()
            for r in prange(n, schedule="static"):
                h = acts + a_offs[layer - 1] + r * n_in
                o = acts + a_offs[layer] + r * n_out
                # the padded rows of W in vector sums (see FASTMLP_VECTOR_SUM)
                d = logit_rows + r * k_pad
                _vector_sums(d, top_w, k_pad, h, NULL, n_in)
                for c in range(n_out):
                    o[c] = b[c] + d[c]
                _output_row(o, deltas + a_offs[top] + r * n_k, n_k, x, rows[r], inv_n,
                            &row_loss[r], &row_hit[r])
            fastmlp_restore_fp_mode(mode)


cdef inline Py_ssize_t _dense_blocks(Py_ssize_t n) noexcept nogil:
    # how many blocks of DENSE_UNITS units n units make
    return (n + DENSE_UNITS - 1) // DENSE_UNITS


cdef inline Py_ssize_t _dense_unit(Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    # where dense block k of n units starts (k = _dense_blocks(n): n)
    return k * DENSE_UNITS if k * DENSE_UNITS < n else n


cdef void _dense_forward(const floating* w, const floating* b, const floating* h,
                         floating* o, Py_ssize_t n, Py_ssize_t n_in, Py_ssize_t n_out,
                         Py_ssize_t c0, Py_ssize_t c1, int act) noexcept nogil:
    """Units c0:c1 of a dense layer for n rows: O[:, c0:c1] = act(b + H W[:, c0:c1]), H
    (n, n_in) and O (n, n_out) row-major; BLAS sees O^T = W^T H^T."""
    cdef Py_ssize_t r, c
    if c1 <= c0:
        return
    _gemm(c'N', c'N', <int>(c1 - c0), <int>n, <int>n_in, 1, w + c0, <int>n_out, h,
          <int>n_in, 0, o + c0, <int>n_out)
    for r in range(n):
        for c in range(c0, c1):
            o[r * n_out + c] += b[c]
        _activate(o + r * n_out + c0, c1 - c0, act)


cdef void _dense_backward(const floating* w, floating* dw, const floating* h, floating* dh,
                          const floating* d, Py_ssize_t n, Py_ssize_t n_in,
                          Py_ssize_t n_out, Py_ssize_t i0, Py_ssize_t i1, floating alpha_n,
                          double* pen_rows, int act, double drop) noexcept nogil:
    """For the input units i0:i1 of a dense layer (W (n_in, n_out), its input H and output
    delta D row-major): their delta dH[:, i0:i1] = D W[i0:i1, :]^T times act'(H), from
    the weights before the update; then rows i0:i1 of the weight gradient, alpha_n W +
    H[:, i0:i1]^T D, with each row's sum of squares into pen_rows."""
    cdef Py_ssize_t r, c, i, wi = i1 - i0
    if wi <= 0:
        return
    _gemm(c'T', c'N', <int>wi, <int>n, <int>n_out, 1, w + i0 * n_out, <int>n_out, d,
          <int>n_out, 0, dh + i0, <int>n_in)
    for r in range(n):
        _derivative(dh + r * n_in + i0, h + r * n_in + i0, wi, act, drop)
    for i in range(i0, i1):
        for c in range(n_out):
            dw[i * n_out + c] = alpha_n * w[i * n_out + c]
        pen_rows[i] = _dot(w + i * n_out, w + i * n_out, n_out)
    _gemm(c'N', c'T', <int>n_out, <int>wi, <int>n, 1, d, <int>n_out, h + i0, <int>n_in, 1,
          dw + i0 * n_out, <int>n_out)


cdef Py_ssize_t _backward_above(const floating* params, floating* grads, const Layout* net,
                                Py_ssize_t n, const Batch* buf, int act, floating alpha_n,
                                int n_blocks, double drop) noexcept nogil:
    """3. Backward through the layers above the first, top down: each one's input gradient,
    weight gradient (plus alpha_n W, with each row's sum of squares into pen_rows) and
    bias gradient. Returns the number of pen_rows written."""
    cdef const long long* sizes = net.sizes
    cdef const long long* a_offs = net.a_offs
    cdef floating* acts = <floating*>buf.acts
    cdef floating* deltas = <floating*>buf.deltas
    cdef double* pen_rows = buf.pen_rows
    cdef Py_ssize_t layer, r, c, i, n_in, n_out, k, pen_off = 0
    cdef unsigned int mode = 0
    cdef const floating* w
    cdef floating* dw
    cdef floating* d
    cdef floating* di
    cdef floating xv
    for layer in range(net.n_layers - 1, 0, -1):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w = params + net.p_offs[layer]
        dw = grads + net.p_offs[layer]
        if layer < net.n_layers - 1:
            # a dense hidden layer: matrix products per thread's block of input units
            with parallel(num_threads=n_blocks):
                mode = fastmlp_flush_subnormals()
                for k in prange(_dense_blocks(n_in), schedule="static"):
                    _dense_backward(w, dw, acts + a_offs[layer - 1],
                                    deltas + a_offs[layer - 1], deltas + a_offs[layer], n,
                                    n_in, n_out, _dense_unit(n_in, k), _dense_unit(n_in, k + 1),
                                    alpha_n, pen_rows + pen_off, act, drop)
                fastmlp_restore_fp_mode(mode)
            _sum_bias_grad(dw + n_in * n_out, deltas + a_offs[layer], n, n_out)
            pen_off = pen_off + n_in
            continue
        # the output layer: input gradient, from the weights before the update
        with parallel(num_threads=n_blocks):
            mode = fastmlp_flush_subnormals()
            for r in prange(n, schedule="static"):
                d = deltas + a_offs[layer] + r * n_out
                di = deltas + a_offs[layer - 1] + r * n_in
                for i in range(n_in):
                    di[i] = _dot(w + i * n_out, d, n_out)
                _derivative(di, acts + a_offs[layer - 1] + r * n_in, n_in, act, drop)
            fastmlp_restore_fp_mode(mode)
        # weight gradient by input units (rows of W), with each row's sum of squares
        with parallel(num_threads=n_blocks):
            mode = fastmlp_flush_subnormals()
            for i in prange(n_in, schedule="static"):
                for c in range(n_out):
                    dw[i * n_out + c] = alpha_n * w[i * n_out + c]
                pen_rows[pen_off + i] = _dot(w + i * n_out, w + i * n_out, n_out)
                for r in range(n):
                    xv = acts[a_offs[layer - 1] + r * n_in + i]
                    if xv != 0:
                        _axpy(dw + i * n_out, xv, deltas + a_offs[layer] + r * n_out, n_out)
            fastmlp_restore_fp_mode(mode)
        _sum_bias_grad(dw + n_in * n_out, deltas + a_offs[layer], n, n_out)
        pen_off = pen_off + n_in
    return pen_off


cdef void _first_layer_grads(const floating* params, floating* grads, const Layout* net,
                             const Rows* x, const Batch* buf, floating alpha_n,
                             double* pen_rows, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """The first layer's weight gradient for the input pixels [j0, j1) (rows j0..j1 of W,
    plus alpha_n W, and their sums of squares into pen_rows[j0:j1]): from each row of the
    batch, its non-zeros in that range (a row's indices are sorted)."""
    cdef const floating* deltas = <const floating*>buf.deltas + net.a_offs[0]
    cdef Py_ssize_t n_out = net.sizes[1], c, i
    for i in range(j0, j1):
        for c in range(n_out):
            grads[i * n_out + c] = alpha_n * params[i * n_out + c]
        pen_rows[i] = _dot(params + i * n_out, params + i * n_out, n_out)
    _scatter_rows(grads, x, deltas, n_out, j0, j1, NULL)


cdef inline void _scatter_rows(floating* grads, const Rows* x, const floating* deltas,
                               Py_ssize_t n_out, Py_ssize_t j0, Py_ssize_t j1,
                               const unsigned char* seen) noexcept nogil:
    """Adds each batch row's non-zero inputs in [j0, j1) times its deltas to their rows
    of the gradient (only the rows marked in seen[i - j0], when seen is given)."""
    cdef const long long* indptr = x.indptr
    cdef const int* indices = x.indices
    cdef const floating* values = <const floating*>x.values
    cdef Py_ssize_t r, i, q
    cdef long long row
    for r in range(x.n):
        row = x.rows[r]
        for q in range(indptr[row], indptr[row + 1]):
            i = indices[q]
            if i >= j1:
                break
            if i >= j0 and (seen == NULL or seen[i - j0]):
                _axpy(grads + i * n_out, values[q], deltas + r * n_out, n_out)


cdef void _first_layer_step(floating* params, floating* grads, floating* m, floating* v,
                            const Layout* net, const Rows* x, const Batch* buf,
                            const OptimizerStep* opt, floating alpha_n, Py_ssize_t pen_off,
                            int n_blocks) noexcept nogil:
    """4. The first layer's bias gradient, then its weight gradient by blocks of input pixels,
    a block per thread (see _first_layer_grads; its sums of squares at pen_rows[pen_off:]).
    With opt, each block then updates its rows of W and its share of everything after them
    (without, nothing is updated)."""
    cdef Py_ssize_t n_out = net.sizes[1], n_pix = net.sizes[0], total = net.p_offs[net.n_layers]
    cdef unsigned int mode = 0
    cdef Py_ssize_t tail = n_pix * n_out, per = (n_pix + n_blocks - 1) // n_blocks
    cdef Py_ssize_t tail_per = _round_up((total - tail + n_blocks - 1) // n_blocks,
                                         ALIGN_VALUES)
    cdef Py_ssize_t k, j0, j1, t0, t1, r
    cdef double* pen_rows = buf.pen_rows + pen_off
    # every row of the batch holds all its inputs (dense tabular data): each row's start,
    # for the gradient four inputs at a time (_first_layer_dense)
    cdef Py_ssize_t* starts = NULL
    if opt != NULL and not opt.lazy:
        starts = <Py_ssize_t*>malloc((x.n + 1) * sizeof(Py_ssize_t))
        for r in range(x.n):
            if starts == NULL or x.indptr[x.rows[r] + 1] - x.indptr[x.rows[r]] != n_pix:
                free(starts)
                starts = NULL
                break
            starts[r] = x.indptr[x.rows[r]]
    _sum_bias_grad(grads + tail, <const floating*>buf.deltas + net.a_offs[0], x.n, n_out)
    with parallel(num_threads=n_blocks):
        mode = fastmlp_flush_subnormals()
        for k in prange(n_blocks, schedule="static"):
            j0 = k * per
            j1 = j0 + per
            if j1 > n_pix:
                j1 = n_pix
            if starts != NULL and _first_layer_dense(params, m, v, net, x, buf, opt, alpha_n,
                                                     pen_rows, starts, j0, j1):
                pass
            elif opt != NULL and opt.lazy:
                _first_layer_lazy(params, grads, m, v, net, x, buf, opt, alpha_n, pen_rows,
                                  j0, j1)
            elif opt == NULL or not _first_layer_fused(params, m, v, net, x, buf, opt,
                                                       alpha_n, pen_rows, j0, j1):
                _first_layer_grads(params, grads, net, x, buf, alpha_n, pen_rows, j0, j1)
                if opt != NULL and j0 < j1:
                    _update(params + j0 * n_out, grads + j0 * n_out, m + j0 * n_out,
                            v + j0 * n_out, (j1 - j0) * n_out, opt)
            if opt != NULL:
                t0 = tail + k * tail_per
                t1 = t0 + tail_per
                if t1 > total:
                    t1 = total
                if t0 < t1:
                    _update(params + t0, grads + t0, m + t0, v + t0, t1 - t0, opt)
        fastmlp_restore_fp_mode(mode)
    free(starts)


cdef bint _first_layer_dense(floating* params, floating* m, floating* v, const Layout* net,
                             const Rows* x, const Batch* buf, const OptimizerStep* opt,
                             floating alpha_n, double* pen_rows, const Py_ssize_t* starts,
                             Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """_first_layer_fused for a batch whose rows all hold every input (row r's values
    from starts[r]): rows j0..j1 of W four at a time, each gradient the L2 term plus the
    rows' terms in the batch's order, summed in registers with each row of deltas loaded
    once for the four (FASTMLP_SUM_COLS4), the last rows one at a time
    (FASTMLP_SUM_ROWS); then the step. The same sums in the same order and the same step
    as _first_layer_fused, so the same bits. Returns False (and does nothing) when there
    is no memory for its buffers."""
    cdef const floating* values = <const floating*>x.values
    cdef const floating* deltas = <const floating*>buf.deltas + net.a_offs[0]
    cdef Py_ssize_t n = x.n, n_out = net.sizes[1], r, c, i, i0, whole
    cdef floating* acc
    cdef floating* column
    cdef int* batch_rows
    cdef floating* w
    if j1 <= j0:
        return True
    acc = <floating*>malloc(8 * n_out * sizeof(floating))
    column = <floating*>malloc((n + 1) * sizeof(floating))
    batch_rows = <int*>malloc((n + 1) * sizeof(int))
    if acc == NULL or column == NULL or batch_rows == NULL:
        free(acc)
        free(column)
        free(batch_rows)
        return False
    for r in range(n):
        batch_rows[r] = <int>r
    whole = j0 + (j1 - j0) // 4 * 4
    for i0 in range(j0, whole, 4):
        for i in range(i0, i0 + 4):
            w = params + i * n_out
            pen_rows[i] = _dot(w, w, n_out)
            for c in range(n_out):
                acc[(4 + i - i0) * n_out + c] = alpha_n * w[c]
        _sum_cols4(acc, n_out, acc + 4 * n_out, n_out, deltas, n_out, values + i0, starts, n,
                   n_out)
        for i in range(i0, i0 + 4):
            _update(params + i * n_out, acc + (i - i0) * n_out, m + i * n_out,
                    v + i * n_out, n_out, opt)
    for i in range(whole, j1):
        w = params + i * n_out
        pen_rows[i] = _dot(w, w, n_out)
        for c in range(n_out):
            acc[n_out + c] = alpha_n * w[c]
        for r in range(n):
            column[r] = values[starts[r] + i]
        _sum_rows(acc, acc + n_out, deltas, n_out, column, batch_rows, n, n_out, 0)
        _update(w, acc, m + i * n_out, v + i * n_out, n_out, opt)
    free(acc)
    free(column)
    free(batch_rows)
    return True


cdef bint _first_layer_fused(floating* params, floating* m, floating* v, const Layout* net,
                             const Rows* x, const Batch* buf, const OptimizerStep* opt,
                             floating alpha_n, double* pen_rows, Py_ssize_t j0,
                             Py_ssize_t j1) noexcept nogil:
    """_first_layer_grads and the step of rows j0..j1 of W, one row at a time: the batch's
    non-zero inputs in [j0, j1) grouped by pixel (a counting sort, each pixel's in the
    order of the rows), then each row's gradient summed in a buffer that stays in L1 and
    its step taken at once. The same sums in the same order and the same step, so the
    same bits, without writing the gradient to memory and reading it back. Returns False
    (and does nothing) when there is no memory for the grouping."""
    cdef const long long* indptr = x.indptr
    cdef const int* indices = x.indices
    cdef const floating* values = <const floating*>x.values
    cdef const floating* deltas = <const floating*>buf.deltas + net.a_offs[0]
    cdef Py_ssize_t n = x.n, n_out = net.sizes[1], r, c, i, q, e, n_in = j1 - j0
    cdef long long row
    cdef Py_ssize_t* starts
    cdef int* entry_rows
    cdef floating* entry_values
    cdef floating* acc
    cdef floating* w
    if n_in <= 0:
        return True
    starts = <Py_ssize_t*>calloc(n_in + 2, sizeof(Py_ssize_t))
    acc = <floating*>malloc(2 * n_out * sizeof(floating))
    if starts == NULL or acc == NULL:
        free(starts)
        free(acc)
        return False
    # pixel i's count at starts[i - j0 + 2], then summed, so that starts[i - j0 + 1] is
    # where its entries begin; placing each moves it on, to where they end
    for r in range(n):
        row = x.rows[r]
        for q in range(indptr[row], indptr[row + 1]):
            i = indices[q]
            if i >= j1:
                break
            if i >= j0:
                starts[i - j0 + 2] += 1
    for i in range(2, n_in + 2):
        starts[i] += starts[i - 1]
    entry_rows = <int*>malloc((starts[n_in + 1] + 1) * sizeof(int))
    entry_values = <floating*>malloc((starts[n_in + 1] + 1) * sizeof(floating))
    if entry_rows == NULL or entry_values == NULL:
        free(entry_rows)
        free(entry_values)
        free(starts)
        free(acc)
        return False
    for r in range(n):
        row = x.rows[r]
        for q in range(indptr[row], indptr[row + 1]):
            i = indices[q]
            if i >= j1:
                break
            if i >= j0:
                e = starts[i - j0 + 1]
                starts[i - j0 + 1] += 1
                entry_rows[e] = <int>r
                entry_values[e] = values[q]
    for i in range(j0, j1):
        w = params + i * n_out
        pen_rows[i] = _dot(w, w, n_out)
        for c in range(n_out):
            acc[n_out + c] = alpha_n * w[c]
        # that plus each entry's value times its row of deltas, in order: a panel of
        # columns in registers at a time, each term added to the running sum as the
        # scattered axpy adds it
        e = starts[i - j0]
        _sum_rows(acc, acc + n_out, deltas, n_out, entry_values + e, entry_rows + e,
                  starts[i - j0 + 1] - e, n_out, 0)
        _update(w, acc, m + i * n_out, v + i * n_out, n_out, opt)
    free(entry_rows)
    free(entry_values)
    free(starts)
    free(acc)
    return True


cdef inline double _max_norm_factor(double sumsq, double max_norm) noexcept nogil:
    # codes.max_norm_factor
    cdef double norm = sqrt(sumsq)
    return max_norm / norm if norm > max_norm else 1.0


cdef void _max_norm_columns(floating* w, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t c0,
                            Py_ssize_t c1, double max_norm) noexcept nogil:
    # columns c0:c1 (at most DENSE_UNITS) of W (n_in, n_out) row-major: each one's squares
    # summed in float64 down its rows, then the column scaled by _max_norm_factor
    cdef double acc[DENSE_UNITS]
    cdef double x
    cdef Py_ssize_t i, c
    for c in range(c1 - c0):
        acc[c] = 0.0
    for i in range(n_in):
        for c in range(c0, c1):
            x = w[i * n_out + c]
            acc[c - c0] += x * x
    for c in range(c1 - c0):
        acc[c] = _max_norm_factor(acc[c], max_norm)
    for i in range(n_in):
        for c in range(c0, c1):
            w[i * n_out + c] *= <floating>acc[c - c0]


cdef void _max_norm(floating* params, const Layout* net, double max_norm,
                    int n_blocks) noexcept nogil:
    """Every unit whose incoming weights (a column of its layer's W) are longer than
    max_norm scaled back to it (codes.OptimizerStep.max_norm), after the step; groups of
    DENSE_UNITS columns in parallel, each column summed in the order of its rows, so the
    bits do not depend on the thread count."""
    cdef Py_ssize_t layer, g, n_in, n_out, n_groups, c1
    cdef floating* w
    for layer in range(net.n_layers):
        n_in = net.sizes[layer]
        n_out = net.sizes[layer + 1]
        w = params + net.p_offs[layer]
        n_groups = (n_out + DENSE_UNITS - 1) // DENSE_UNITS
        for g in prange(n_groups, schedule="static", num_threads=n_blocks):
            c1 = (g + 1) * DENSE_UNITS
            if c1 > n_out:
                c1 = n_out
            _max_norm_columns(w, n_in, n_out, g * DENSE_UNITS, c1, max_norm)


cdef void _refresh_top_w(const floating* params, const Layout* net,
                         const Batch* buf) noexcept nogil:
    # the padded copy of the top layer's W follows the update
    cdef Py_ssize_t top = net.n_layers - 1, n_in = net.sizes[top], n_k = net.sizes[top + 1]
    cdef Py_ssize_t i, c, k_pad = buf.k_pad
    cdef const floating* w = params + net.p_offs[top]
    cdef floating* top_w = <floating*>buf.top_w
    for i in range(n_in):
        for c in range(n_k):
            top_w[i * k_pad + c] = w[i * n_k + c]


cdef double _batch_loss(const Batch* buf, Py_ssize_t n, Py_ssize_t n_pen,
                        double alpha) noexcept nogil:
    # the rows' losses summed in order, plus alpha/2 ||W||^2 from the n_pen row sums
    cdef double loss = 0.0, penalty = 0.0
    cdef Py_ssize_t r, i
    for r in range(n):
        loss += buf.row_loss[r]
    if alpha != 0:
        for i in range(n_pen):
            penalty += buf.pen_rows[i]
        loss += 0.5 * alpha * penalty
    return loss


cdef void _first_layer_lazy(floating* params, floating* grads, floating* m, floating* v,
                            const Layout* net, const Rows* x, const Batch* buf,
                            const OptimizerStep* opt, floating alpha_n, double* pen_rows,
                            Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """The lazy update of the first layer's rows j0..j1 (OptimizerStep.lazy): the
    gradient and the step of only the rows whose input pixel is non-zero in some row of
    the batch; the sums of squares of all of them (the loss is the same as without)."""
    cdef const long long* indptr = x.indptr
    cdef const int* indices = x.indices
    cdef const floating* values = <const floating*>x.values
    cdef const long long* rows = x.rows
    cdef const floating* deltas = <const floating*>buf.deltas + net.a_offs[0]
    cdef Py_ssize_t n = x.n, n_out = net.sizes[1], r, c, i, q
    cdef long long row
    cdef unsigned char* seen
    if j1 <= j0:
        return
    for i in range(j0, j1):
        pen_rows[i] = _dot(params + i * n_out, params + i * n_out, n_out)
    seen = <unsigned char*>calloc(j1 - j0, 1)
    if seen == NULL:
        # no memory for the marks: every row in range takes the step
        _first_layer_grads(params, grads, net, x, buf, alpha_n, pen_rows, j0, j1)
        _update(params + j0 * n_out, grads + j0 * n_out, m + j0 * n_out, v + j0 * n_out,
                (j1 - j0) * n_out, opt)
        return
    for r in range(n):
        row = rows[r]
        for q in range(indptr[row], indptr[row + 1]):
            i = indices[q]
            if i >= j1:
                break
            if i >= j0 and values[q] != 0 and not seen[i - j0]:
                seen[i - j0] = 1
                for c in range(n_out):
                    grads[i * n_out + c] = alpha_n * params[i * n_out + c]
    _scatter_rows(grads, x, deltas, n_out, j0, j1, seen)
    for i in range(j0, j1):
        if seen[i - j0]:
            _update(params + i * n_out, grads + i * n_out, m + i * n_out, v + i * n_out, n_out,
                    opt)
    free(seen)


cdef double _batch(floating* params, floating* grads, floating* m, floating* v,
                   const Layout* net, const Rows* x, const Batch* buf, int act, double alpha,
                   const OptimizerStep* opt, int n_blocks) noexcept nogil:
    """Forward, loss, backward and (given opt) optimizer step for the rows x.rows[0:x.n] of
    the sparse X. buf.acts/deltas hold, for each weight layer, its (n, width) outputs and
    their gradients at net.a_offs[layer]. With hidden layers, buf.top_w is the top layer's
    W with its columns padded to k_pad (layout.padded_top), kept in step with params here,
    and buf.logit_rows holds (n, k_pad) scratch. Returns the summed loss including
    alpha/2 ||W||^2; per-row correctness is left in buf.row_hit. With weights, the mean
    loss is the weighted one (a batch whose weights sum to 0 has no gradient)."""
    cdef double denom = x.n
    cdef Py_ssize_t n_pen, r
    if x.weights != NULL:
        denom = 0.0
        for r in range(x.n):
            denom += (<const floating*>x.weights)[x.rows[r]]
    cdef floating alpha_n = <floating>(alpha / denom if denom > 0 else 0.0)
    cdef floating inv_n = <floating>(1.0 / denom if denom > 0 else 0.0)
    cdef double drop = opt.dropout if opt != NULL else 0.0
    _forward_first(params, net, x, buf, act, inv_n, n_blocks)
    if drop > 0 and net.n_layers > 1:
        _dropout_rows(<floating*>buf.acts + net.a_offs[0], x.n, net.sizes[1], 0, opt, n_blocks)
    _forward_above(params, net, x, buf, act, inv_n, n_blocks, opt)
    n_pen = _backward_above(params, grads, net, x.n, buf, act, alpha_n, n_blocks, drop)
    _first_layer_step(params, grads, m, v, net, x, buf, opt, alpha_n, n_pen, n_blocks)
    n_pen = n_pen + net.sizes[0]
    if opt != NULL and opt.max_norm > 0:
        _max_norm(params, net, opt.max_norm, n_blocks)
    if opt != NULL and net.n_layers > 1:
        _refresh_top_w(params, net, buf)
    return _batch_loss(buf, x.n, n_pen, alpha)


cdef inline double _scheduled_lr(double lr, int schedule, double seen,
                                 double horizon) noexcept nogil:
    # as codes.scheduled_lr, in the same float64 operations
    cdef double frac
    if schedule == CONSTANT:
        return lr
    frac = seen / horizon
    if frac > 1.0:
        frac = 1.0
    if schedule == COSINE:
        return lr * (0.5 * (1.0 + cos(M_PI * frac)))
    return lr * (1.0 - frac)


def train_epoch(floating[::1] params, floating[::1] grads, floating[::1] m, floating[::1] v,
                net, data, const long long[::1] order, Py_ssize_t batch_size, buffers,
                int act, double alpha, opt, long long t, double loss_start=0.0):
    """One epoch; returns (loss_sum, n_correct, t). params, grads, m, v (P,) (m, v may be
    empty when unused); net = (sizes, p_offs, a_offs), data = (indptr, indices, values, y)
    and buffers as in loss_and_grad; order (n,) the rows to visit; opt a
    codes.OptimizerStep (its lr_t is set here, before every batch); loss_start the sum
    the batches' losses are added to. Arrays are checked by the caller."""
    cdef Layout lay
    cdef Rows x
    cdef Batch buf
    cdef OptimizerStep step = _optimizer_step(opt)
    cdef double base_lr = step.lr
    cdef Py_ssize_t n = order.shape[0], start, stop, r
    cdef double loss = loss_start
    cdef long long hits = 0
    cdef int n_blocks = fastmlp_max_threads()
    cdef floating* mp = &m[0] if m.shape[0] > 0 else &params[0]
    cdef floating* vp = &v[0] if v.shape[0] > 0 else &params[0]
    _read_records(params, net, data, buffers, &lay, &x, &buf)
    with nogil:
        start = 0
        while start < n:
            stop = start + batch_size
            if stop > n:
                stop = n
            step.lr = _scheduled_lr(base_lr, step.schedule, step.seen + start, step.horizon)
            step.lr_t = step.lr
            if step.solver == ADAM:
                t += 1
                step.lr_t = step.lr * sqrt(1.0 - step.beta2 ** t) / (1.0 - step.beta1 ** t)
                step.keep_t = 1.0 - step.lr * step.weight_decay  # codes.decay_keep
            step.batch = step.seen + start
            x.rows = &order[start]
            x.n = stop - start
            loss += _batch(&params[0], &grads[0], mp, vp, &lay, &x, &buf, act, alpha, &step,
                           n_blocks)
            for r in range(stop - start):
                hits += buf.row_hit[r]
            start = stop
    return loss, int(hits), int(t)


def loss_and_grad(floating[::1] params, floating[::1] grads, net, data,
                  const long long[::1] rows, buffers, int act, double alpha):
    """Gradient of the summed objective of the rows ``rows`` into grads; returns that sum.
    params, grads (P,); net = (sizes, p_offs, a_offs); data = (indptr, indices, values, y),
    the sparse X and its labels; buffers = (acts, deltas, row_loss, row_hit, pen_rows,
    top_w, logit_rows) for batches of up to len(rows) rows (see cython_backend._Buffers)."""
    cdef Layout lay
    cdef Rows x
    cdef Batch buf
    cdef double loss
    _read_records(params, net, data, buffers, &lay, &x, &buf)
    x.rows = &rows[0]
    x.n = rows.shape[0]
    with nogil:
        loss = _batch(&params[0], &grads[0], &params[0], &params[0], &lay, &x, &buf, act,
                      alpha, NULL, fastmlp_max_threads())
    return loss


# ------------------------------------------------------------------------ predict


cdef int _scan_row(const floating* x, Py_ssize_t n_in, int* nz,
                   Py_ssize_t* count) noexcept nogil:
    """The places of the row's non-zero inputs into nz (their count into count), found
    without a branch (a branch taken at random on image data costs more than the stores
    it saves); returns 0 if the row holds NaN or infinity. NaN and infinity are non-zero,
    so checking those checks the row (x - x is 0 exactly for finite x)."""
    cdef Py_ssize_t i, t, cnt = 0
    cdef floating zero = 0, xv
    cdef int finite = 1
    for i in range(n_in):
        nz[cnt] = <int>i
        cnt += x[i] != zero
    for t in range(cnt):
        xv = x[nz[t]]
        finite &= (xv - xv) == zero
    count[0] = cnt
    return finite


cdef void _output_layer_row(floating* out, const floating* h, const int* nz, Py_ssize_t n_h,
                            const floating* b, Py_ssize_t n_k, const floating* top_w,
                            Py_ssize_t k_pad, floating* logits, int output) noexcept nogil:
    # out = output(b + h @ W): vector sums of the padded rows of W (top_w) picked by the
    # layer's inputs h (n_h of them, at the places nz when given)
    cdef Py_ssize_t c
    _vector_sums(logits, top_w, k_pad, h, nz, n_h)
    for c in range(n_k):
        out[c] = b[c] + logits[c]
    _output_fn(out, n_k, output)


cdef int _row_inputs(const floating* X, const long long* indptr, const int* indices,
                     Py_ssize_t r, Py_ssize_t n_in, int* nz, const floating** x,
                     const int** idx, Py_ssize_t* count, int* by_idx) noexcept nogil:
    """Row r's non-zero inputs: x[idx[q]] for q < count (by_idx) when X is dense (N, n_in),
    the places found here into nz; x[q] in the columns idx[q] when X holds the values of
    compressed sparse rows (indptr not NULL). Returns 0 if the row holds NaN or
    infinity."""
    cdef Py_ssize_t q, q0
    cdef floating zero = 0, xv
    cdef int finite = 1
    if indptr == NULL:
        x[0] = X + r * n_in
        idx[0] = nz
        by_idx[0] = 1
        return _scan_row(x[0], n_in, nz, count)
    q0 = indptr[r]
    count[0] = indptr[r + 1] - q0
    x[0] = X + q0
    idx[0] = indices + q0
    by_idx[0] = 0
    for q in range(count[0]):
        xv = x[0][q]
        finite &= (xv - xv) == zero
    return finite


cdef void _inputs_to_output(floating* out, const floating* x, const int* idx,
                            Py_ssize_t cnt, int by_idx, const floating* b, Py_ssize_t n_k,
                            const floating* top_w, Py_ssize_t k_pad, floating* logits,
                            floating* dense, int output) noexcept nogil:
    # without hidden layers: the output layer from the row's non-zero inputs; a sparse
    # row's values go through ``dense`` (the thread's zeroed row, zeroed again after)
    cdef Py_ssize_t q
    if by_idx:
        _output_layer_row(out, x, idx, cnt, b, n_k, top_w, k_pad, logits, output)
        return
    for q in range(cnt):
        dense[idx[q]] = x[q]
    _output_layer_row(out, dense, idx, cnt, b, n_k, top_w, k_pad, logits, output)
    for q in range(cnt):
        dense[idx[q]] = 0


cdef int _predict_row(floating* out, const floating* X, const long long* indptr,
                      const int* indices, Py_ssize_t r, const floating* params,
                      const Layout* net, const floating* top_w, Py_ssize_t k_pad,
                      floating* scratch, Py_ssize_t width, int* nz, int act,
                      int output) noexcept nogil:
    """Row r's outputs (through the output function ``output``) into out, for networks
    with at most one hidden layer; returns 1 (and writes nothing) if the row holds NaN or
    infinity. top_w is the top layer's W with its columns padded to k_pad; scratch
    (width + k_pad values, then sizes[0] zeros for a sparse X) and nz (sizes[0]) are the
    thread's."""
    cdef const long long* sizes = net.sizes
    cdef Py_ssize_t cnt = 0, top = net.n_layers - 1, n_in0 = sizes[0], n_1 = sizes[1]
    cdef const floating* w = params
    cdef floating* logits = scratch + width
    cdef const floating* x
    cdef const int* idx
    cdef int by_idx
    if not _row_inputs(X, indptr, indices, r, n_in0, nz, &x, &idx, &cnt, &by_idx):
        return 1
    if top == 0:
        _inputs_to_output(out, x, idx, cnt, by_idx, w + n_in0 * n_1, n_1, top_w, k_pad,
                          logits, logits + k_pad, output)
        return 0
    _sum_rows(scratch, w + n_in0 * n_1, w, n_1, x, idx, cnt, n_1, by_idx)
    _activate(scratch, n_1, act)
    w = params + net.p_offs[1]
    _output_layer_row(out, scratch, NULL, n_1, w + n_1 * sizes[2], sizes[2], top_w, k_pad,
                      logits, output)
    return 0


cdef Py_ssize_t _predict_block(floating* out, const floating* X, const long long* indptr,
                               const int* indices, Py_ssize_t r0, Py_ssize_t n_rows,
                               const floating* params, const Layout* net,
                               const floating* top_w, Py_ssize_t k_pad, floating* scratch,
                               Py_ssize_t width, int* nz, int act,
                               int output) noexcept nogil:
    """The outputs of the n_rows (at most PREDICT_BLOCK) rows from r0 into out, for two
    hidden layers or more: each row through the first layer on its own (zero inputs
    skipped), then the block through the dense layers above it as matrix products, then
    each row through the output layer. Returns how many rows hold NaN or infinity (their
    outputs are not written). scratch holds 2 PREDICT_BLOCK width + k_pad +
    PREDICT_BLOCK values and nz sizes[0] places, the thread's."""
    cdef const long long* sizes = net.sizes
    cdef Py_ssize_t top = net.n_layers - 1, n_in0 = sizes[0], n_1 = sizes[1]
    cdef Py_ssize_t q, c, layer, li, lo, cnt = 0, bad = 0, n_k = sizes[top + 1]
    cdef floating* cur = scratch
    cdef floating* nxt = scratch + PREDICT_BLOCK * width
    cdef floating* logits = scratch + 2 * PREDICT_BLOCK * width
    cdef floating* ok = logits + k_pad
    cdef floating* tmp
    cdef const floating* w = params
    cdef const floating* x
    cdef const int* idx
    cdef int by_idx
    for q in range(n_rows):
        if _row_inputs(X, indptr, indices, r0 + q, n_in0, nz, &x, &idx, &cnt, &by_idx):
            ok[q] = 1
            _sum_rows(cur + q * n_1, w + n_in0 * n_1, w, n_1, x, idx, cnt, n_1, by_idx)
            _activate(cur + q * n_1, n_1, act)
        else:
            ok[q] = 0
            bad += 1
            for c in range(n_1):
                cur[q * n_1 + c] = 0
    for layer in range(1, top):
        # H' (n_rows, lo) = H W, row-major; BLAS sees H'^T = W^T H^T
        li = sizes[layer]
        lo = sizes[layer + 1]
        w = params + net.p_offs[layer]
        _gemm(c'N', c'N', <int>lo, <int>n_rows, <int>li, 1, w, <int>lo, cur, <int>li, 0,
              nxt, <int>lo)
        for q in range(n_rows):
            for c in range(lo):
                nxt[q * lo + c] += w[li * lo + c]
            _activate(nxt + q * lo, lo, act)
        tmp = cur
        cur = nxt
        nxt = tmp
    li = sizes[top]
    w = params + net.p_offs[top] + li * n_k
    for q in range(n_rows):
        if ok[q] != 0:
            _output_layer_row(out + (r0 + q) * n_k, cur + q * li, NULL, li, w, n_k, top_w,
                              k_pad, logits, output)
    return bad


cdef Py_ssize_t _predict_all(floating* out, const floating* X, const long long* indptr,
                             const int* indices, Py_ssize_t n, const floating* params,
                             const long long* sizes, const long long* p_offs,
                             Py_ssize_t n_layers, Py_ssize_t width, int act,
                             bint parallel_rows, int output) except -1:
    # out (n, K); X dense (n, sizes[0]), or (indptr not NULL) the values of compressed
    # sparse rows; returns the number of rows holding NaN or infinity
    cdef Py_ssize_t r, i, c, b
    cdef Py_ssize_t n_i = sizes[n_layers - 1], n_k = sizes[n_layers]
    cdef Py_ssize_t k_pad = _round_up(n_k, _vector_lanes(params))
    cdef int n_threads = fastmlp_max_threads() if parallel_rows else 1
    cdef bint blocks = n_layers > 2
    cdef Py_ssize_t n_blocks = (n + PREDICT_BLOCK - 1) // PREDICT_BLOCK
    cdef Py_ssize_t n_in0 = _round_up(sizes[0], ALIGN_VALUES)
    # each thread's scratch a whole number of cache lines, so threads share none; a
    # sparse X without hidden layers needs a zeroed row of inputs
    cdef Py_ssize_t bad = 0, per_thread = _round_up(
        (2 * PREDICT_BLOCK * width + PREDICT_BLOCK if blocks else width) + k_pad
        + (n_in0 if indptr != NULL and n_layers == 1 else 0), ALIGN_VALUES)
    cdef const floating* w_top = params + p_offs[n_layers - 1]
    cdef Layout net = Layout(sizes, p_offs, NULL, n_layers)
    cdef floating* top_w
    cdef floating* scratch
    cdef int* places
    if n == 0:
        return 0
    # the top layer's W with its columns padded to whole vectors (see FASTMLP_VECTOR_SUM)
    top_w = <floating*>malloc(n_i * k_pad * sizeof(floating))
    scratch = <floating*>calloc(n_threads * per_thread, sizeof(floating))
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
            if blocks and n_threads > 1:
                for b in prange(n_blocks, schedule="static", num_threads=n_threads):
                    bad += _predict_block(out, X, indptr, indices, b * PREDICT_BLOCK,
                                          min(PREDICT_BLOCK, n - b * PREDICT_BLOCK),
                                          params, &net, top_w, k_pad,
                                          scratch + per_thread * threadid(), width,
                                          places + n_in0 * threadid(), act, output)
            elif blocks:
                for b in range(n_blocks):
                    bad += _predict_block(out, X, indptr, indices, b * PREDICT_BLOCK,
                                          min(PREDICT_BLOCK, n - b * PREDICT_BLOCK),
                                          params, &net, top_w, k_pad, scratch, width,
                                          places, act, output)
            elif n_threads > 1:
                for r in prange(n, schedule="static", num_threads=n_threads):
                    bad += _predict_row(out + r * n_k, X, indptr, indices, r, params, &net,
                                        top_w, k_pad, scratch + per_thread * threadid(),
                                        width, places + n_in0 * threadid(), act, output)
            else:
                for r in range(n):
                    bad += _predict_row(out + r * n_k, X, indptr, indices, r, params, &net,
                                        top_w, k_pad, scratch, width, places, act, output)
    finally:
        free(top_w)
        free(scratch)
        free(places)
    return bad


cdef int _take_buffer(object obj, Py_buffer* view, bint writable, int ndim,
                      Py_ssize_t itemsize, const char* kinds, const char* name) except -1:
    """Acquire obj's C-contiguous buffer, which must have ndim dimensions and items of
    itemsize bytes whose format letter is one of kinds; released again on refusal."""
    cdef int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT
    cdef char kind
    if writable:
        flags |= PyBUF_WRITABLE
    PyObject_GetBuffer(obj, view, flags)
    kind = view.format[0]
    if kind == b'@' or kind == b'=' or kind == b'<':
        kind = view.format[1]
    if view.ndim != ndim or view.itemsize != itemsize or strchr(kinds, kind) == NULL:
        PyBuffer_Release(view)
        raise ValueError(f"{name.decode()} must be a C-contiguous {ndim}-d array of "
                         f"{itemsize}-byte items of format {kinds.decode()!r}")
    return 0


def predict_proba(out, X, params, layout, Py_ssize_t width, int act, bint parallel_rows,
                  int output=SOFTMAX):
    """The outputs of every row of X (N, I0) through the output function ``output``
    (codes.OUTPUTS; IDENTITY gives the logits) into out (N, K), rows split between
    threads when parallel_rows; float32 or float64, as params (P,). ``layout``: the layer
    sizes (L + 1) then the layers' parameter offsets (L + 1), int64; ``width`` the widest
    hidden layer. Returns the number of rows holding NaN or infinity (their outputs are
    not written).

    The arrays are taken through the buffer protocol directly, not as typed memoryviews:
    a memoryview argument costs a one-row prediction about half a microsecond."""
    cdef Py_buffer b_out, b_x, b_params, b_layout
    cdef Py_ssize_t itemsize = params.itemsize
    cdef const char* kind = b"f" if itemsize == 4 else b"d"
    cdef Py_ssize_t n, n_sizes, n_layers, held = 0
    cdef const long long* lay
    try:
        _take_buffer(params, &b_params, False, 1, itemsize, kind, b"params")
        held = 1
        _take_buffer(layout, &b_layout, False, 1, 8, b"lq", b"layout")
        held = 2
        _take_buffer(X, &b_x, False, 2, itemsize, kind, b"X")
        held = 3
        _take_buffer(out, &b_out, True, 2, itemsize, kind, b"out")
        held = 4
        lay = <const long long*> b_layout.buf
        n_sizes = b_layout.shape[0] // 2
        n_layers = n_sizes - 1
        n = b_x.shape[0]
        if (n_layers < 1 or b_layout.shape[0] != 2 * n_sizes or b_x.shape[1] != lay[0]
                or b_out.shape[0] != n or b_out.shape[1] != lay[n_layers]
                or b_params.shape[0] != lay[n_sizes + n_layers]):
            raise ValueError("predict_proba: the shapes of out, X and params do not fit "
                             "the layout")
        if n == 0:
            return 0
        if itemsize == 4:
            return _predict_all(<float*> b_out.buf, <const float*> b_x.buf, NULL, NULL, n,
                                <const float*> b_params.buf, lay, lay + n_sizes, n_layers,
                                width, act, parallel_rows, output)
        return _predict_all(<double*> b_out.buf, <const double*> b_x.buf, NULL, NULL, n,
                            <const double*> b_params.buf, lay, lay + n_sizes, n_layers,
                            width, act, parallel_rows, output)
    finally:
        if held >= 4:
            PyBuffer_Release(&b_out)
        if held >= 3:
            PyBuffer_Release(&b_x)
        if held >= 2:
            PyBuffer_Release(&b_layout)
        if held >= 1:
            PyBuffer_Release(&b_params)


def predict_proba_csr(floating[:, ::1] out, const floating[::1] values,
                      const long long[::1] indptr, const int[::1] indices,
                      const floating[::1] params, const long long[::1] layout,
                      Py_ssize_t width, int act, bint parallel_rows, int output=SOFTMAX):
    """predict_proba for X as compressed sparse rows (values, indptr (N + 1,), indices,
    checked by the caller: sparse.checked_csr)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1
    cdef Py_ssize_t n_sizes = layout.shape[0] // 2
    if n <= 0:
        return 0
    # without a stored value (every row empty) nothing is read through these
    return _predict_all(&out[0, 0], &values[0] if values.shape[0] > 0 else NULL,
                        &indptr[0], &indices[0] if indices.shape[0] > 0 else NULL, n,
                        &params[0], &layout[0], &layout[n_sizes], n_sizes - 1, width, act,
                        parallel_rows, output)
