# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Forward-backward and Viterbi over emitting automata in log space, compiled.

Same API, results and errors as the numpy twin ``_fsa_py`` (see there for the model and the batch layout).
One kernel serves both callers: ``fullsum`` runs a batch over RASR's merged automaton, one sequence per
OpenMP thread with the GIL released, and writes ``scale[b] * occupancy`` straight into the caller's
(T, B, V) array (a torch tensor's memory, the loss gradient); ``forward_backward`` (the emulator's
criteria) is that kernel on a batch of one.

Per frame and state the recursion is one log-sum-exp over the edges into (forward) or out of (backward)
the state, grouped in advance, without a log: a state's value is kept as ``m + log(acc)`` with ``acc`` in
[0.5, 1) (``frexp`` moves the exponent of a sum into ``m``), so a log-sum-exp is ``m' = max(m + score)``
and ``acc' = sum(acc * exp(m + score - m'))``: one exp per edge but the largest, and each term is relative
to its state's own maximum, so no state far below the frame's best one is lost (no per-frame rescaling).
Scores are read in their own precision (float32 or float64); everything summed is float64. The backward
pass produces the edge occupancies as it goes, ``exp(alpha[t, from] + score + beta[t+1, to] - log Z)`` =
``acc_beta * exp(m_beta + score - m') * acc_alpha * exp(m_alpha + m' - log Z)`` from the terms of its own
log-sum-exp, so no (T, E) temporaries exist and only alpha is kept over time.
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, M_LN2, NAN, exp, frexp, isfinite, log
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

from ._fsa_py import _check, batch_layout, check_log_probs, check_outputs, not_finite

cnp.import_array()

cdef double LN2 = M_LN2

IMPLEMENTATION = "cython"

ctypedef fused real_t:
    float
    double

ctypedef fused out_t:
    float
    double


cdef struct Layout:
    Py_ssize_t T, B, V
    const int64_t* lens
    const int64_t* lo
    const int64_t* size
    const int64_t* start
    const int64_t* final
    const int64_t* in_ptr
    const int64_t* in_src
    const int64_t* in_col
    const double* in_w
    const int64_t* in_eid
    const int64_t* out_ptr
    const int64_t* out_dst
    const int64_t* out_col
    const double* out_w
    const int64_t* out_eid


cdef inline const int64_t* _i64(cnp.ndarray a):
    return <const int64_t*>cnp.PyArray_DATA(a)


cdef inline const double* _f64(cnp.ndarray a):
    return <const double*>cnp.PyArray_DATA(a)


cdef Layout _layout(object lay, tuple shape):
    cdef Layout L
    L.T, L.B, L.V = shape
    L.lens, L.lo, L.size = _i64(lay.lens), _i64(lay.lo), _i64(lay.size)
    L.start, L.final = _i64(lay.start), _i64(lay.final)
    L.in_ptr, L.in_src, L.in_col, L.in_eid = _i64(lay.in_ptr), _i64(lay.in_src), _i64(lay.in_col), _i64(lay.in_eid)
    L.in_w = _f64(lay.in_w)
    L.out_ptr, L.out_dst, L.out_col = _i64(lay.out_ptr), _i64(lay.out_dst), _i64(lay.out_col)
    L.out_eid = _i64(lay.out_eid)
    L.out_w = _f64(lay.out_w)
    return L


cdef bint _not_finite(const Layout* L, const real_t* lp, Py_ssize_t b) noexcept nogil:
    """The non-finite rule of ``_fsa_py``: a NaN or +inf score in sequence b's frames (any label), or a NaN or
    -inf weight on one of its edges. Counted without a branch per value, so the loop vectorises."""
    cdef Py_ssize_t t, v, k, t_b = L.lens[b], nv = L.V, frame = L.B * L.V
    cdef Py_ssize_t lo = L.lo[b], n = L.size[b]
    cdef const real_t* row
    cdef int bad = 0
    for t in range(t_b):
        row = lp + t * frame + b * nv
        for v in range(nv):
            bad += not (row[v] < INFINITY)
        if bad:
            return True
    for k in range(L.in_ptr[lo], L.in_ptr[lo + n]):
        bad += not (L.in_w[k] > -INFINITY)
    return bad != 0


cdef inline double _group_scores(const double* m_prev, const int64_t* other, const int64_t* col,
                                 const double* w, const real_t* row, Py_ssize_t k0, Py_ssize_t k1, double* tmp,
                                 Py_ssize_t* top) noexcept nogil:
    """``tmp[j] = m_prev[other[k]] + row[col[k]] - w[k]`` for the group's edges ``k = k0 + j``; returns their
    maximum (``-inf``: no edge comes from a reachable state) and its position in ``top``."""
    cdef Py_ssize_t k
    cdef double v, m = -INFINITY
    top[0] = 0
    for k in range(k0, k1):
        v = m_prev[other[k]]
        if v != -INFINITY:
            v = v + <double>row[col[k]] - w[k]
        tmp[k - k0] = v
        if v > m:
            m = v
            top[0] = k - k0
    return m


cdef inline double _group_terms(const double* acc_prev, const int64_t* other, Py_ssize_t k0, Py_ssize_t k1,
                                double* tmp, double m, Py_ssize_t top) noexcept nogil:
    """Turns the group's ``tmp`` into its terms ``acc_prev[other[k]] * exp(tmp[j] - m)`` (the largest one
    without an exp) and returns their sum."""
    cdef Py_ssize_t k, j
    cdef double v, total = 0.0
    for k in range(k0, k1):
        j = k - k0
        v = acc_prev[other[k]] if j == top else acc_prev[other[k]] * exp(tmp[j] - m)
        tmp[j] = v
        total += v
    return total


cdef inline double _log_sum(const double* m_prev, const double* acc_prev, const int64_t* other,
                            const int64_t* col, const double* w, const real_t* row, Py_ssize_t k0, Py_ssize_t k1,
                            double* tmp, double* m_out, double* acc_out) noexcept nogil:
    """One state's log-sum-exp over its edge group ``k0:k1`` from the previous row ``(m_prev, acc_prev)``:
    stores ``m + log(acc)`` as ``(m_out, acc_out)`` with ``acc`` in [0.5, 1) (frexp instead of a log) and
    leaves the terms ``acc_prev * exp(m_prev + score - m)`` in ``tmp``. Returns ``m`` (``-inf``: no edge
    comes from a reachable state)."""
    cdef Py_ssize_t top
    cdef int e
    cdef double m = _group_scores(m_prev, other, col, w, row, k0, k1, tmp, &top)
    if m == -INFINITY:
        m_out[0] = -INFINITY
        acc_out[0] = 0.0
        return m
    acc_out[0] = frexp(_group_terms(acc_prev, other, k0, k1, tmp, m, top), &e)
    m_out[0] = m + e * LN2
    return m


cdef double _forward(const Layout* L, const real_t* lp, Py_ssize_t b, double* am, double* aa, bint keep,
                     double* tmp) noexcept nogil:
    """alpha of sequence b as ``am + log(aa)``: all T_b + 1 rows when ``keep``, else two alternating rows.
    Returns log Z."""
    cdef Py_ssize_t n = L.size[b], lo = L.lo[b], t_b = L.lens[b], frame = L.B * L.V
    cdef Py_ssize_t t, s, k, prev, cur
    cdef const real_t* row
    for s in range(n):
        am[s] = -INFINITY
        aa[s] = 0.0
    am[L.start[b]] = 0.0
    aa[L.start[b]] = 1.0
    for t in range(t_b):
        prev, cur = (t * n, (t + 1) * n) if keep else ((t % 2) * n, ((t + 1) % 2) * n)
        row = lp + t * frame
        for s in range(n):
            _log_sum(am + prev, aa + prev, L.in_src, L.in_col, L.in_w, row, L.in_ptr[lo + s],
                     L.in_ptr[lo + s + 1], tmp, am + cur + s, aa + cur + s)
    k = (t_b * n if keep else (t_b % 2) * n) + L.final[b]
    return am[k] + log(aa[k]) if am[k] != -INFINITY else -INFINITY


cdef void _backward(const Layout* L, const real_t* lp, out_t* out, double* eout, double scale, Py_ssize_t b,
                    const double* am, const double* aa, double log_z, double* bm, double* ba,
                    double* tmp) noexcept nogil:
    """beta of sequence b (as ``bm + log(ba)``, two rows) down from its last frame; adds ``scale * occupancy``
    of every edge at every frame to ``out`` (frame row, column seq * V + emission) and, summed over frames,
    to ``eout``."""
    cdef Py_ssize_t n = L.size[b], lo = L.lo[b], t_b = L.lens[b], frame = L.B * L.V
    cdef Py_ssize_t t, s, k, k0, k1, nxt = 0, cur = n
    cdef double m, f, occ, a
    cdef const real_t* row
    cdef out_t* g = NULL
    for s in range(n):
        bm[s] = -INFINITY
        ba[s] = 0.0
    bm[L.final[b]] = 0.0
    ba[L.final[b]] = 1.0
    for t in range(t_b - 1, -1, -1):
        row = lp + t * frame
        if out != NULL:
            g = out + t * frame
        for s in range(n):
            k0, k1 = L.out_ptr[lo + s], L.out_ptr[lo + s + 1]
            # tmp gets the terms acc * exp(m_beta + score - m) of the edges, used again for the occupancies
            m = _log_sum(bm + nxt, ba + nxt, L.out_dst, L.out_col, L.out_w, row, k0, k1, tmp, bm + cur + s,
                         ba + cur + s)
            if m == -INFINITY:
                continue
            a = am[t * n + s]
            if a == -INFINITY:
                continue
            f = aa[t * n + s] * exp(a + m - log_z) * scale
            if f == 0.0:
                continue
            for k in range(k0, k1):
                occ = tmp[k - k0] * f
                if g != NULL:
                    g[L.out_col[k]] += <out_t>occ
                if eout != NULL:
                    eout[L.out_eid[k]] += occ
        nxt, cur = cur, nxt


cdef double _fullsum_one(const Layout* L, const real_t* lp, out_t* out, double* eout, double scale,
                         Py_ssize_t b, double* work, Py_ssize_t max_size, Py_ssize_t max_group,
                         Py_ssize_t rows) noexcept nogil:
    """One sequence; ``work`` holds beta (two rows of m, two of acc), the per-group terms, then alpha (m, acc:
    ``rows`` each)."""
    cdef Py_ssize_t t, k, n = L.size[b], lo = L.lo[b]
    cdef bint grads = out != NULL or eout != NULL
    cdef double* bm = work
    cdef double* ba = work + 2 * max_size
    cdef double* tmp = work + 4 * max_size
    cdef double* am = tmp + max_group
    cdef double* aa = am + rows
    cdef double log_z
    if out != NULL:  # this sequence's rows of every frame: written here, by the thread that owns them
        for t in range(L.T):
            memset(out + t * L.B * L.V + b * L.V, 0, L.V * sizeof(out_t))
    if eout != NULL:
        for k in range(L.in_ptr[lo], L.in_ptr[lo + n]):
            eout[L.in_eid[k]] = 0.0
    if _not_finite(L, lp, b):
        return NAN
    log_z = _forward(L, lp, b, am, aa, grads, tmp)
    if grads and isfinite(log_z):
        _backward(L, lp, out, eout, scale, b, am, aa, log_z, bm, ba, tmp)
    return log_z


cdef void _run_fullsum(const Layout* L, const real_t* lp, out_t* out, double* eout, const double* scale,
                       double* log_z, double* work, Py_ssize_t stride, Py_ssize_t max_size,
                       Py_ssize_t max_group, Py_ssize_t rows, int nthreads) noexcept nogil:
    cdef Py_ssize_t b
    for b in prange(L.B, schedule="dynamic", num_threads=nthreads):
        log_z[b] = _fullsum_one(L, lp, out, eout, scale[b], b, work + threadid() * stride, max_size, max_group,
                                rows)


#: edge-frames (frames x edges) of work per thread, full-sum and Viterbi (no exp: ~7x cheaper per edge):
#: below it, another thread costs more to wake (up to a scheduler time slice on a busy machine) than it saves
WORK_PER_THREAD = 1_000_000
VITERBI_WORK_PER_THREAD = 7_000_000


def _threads(num_threads, lay, per_thread):
    """Threads for a batch: as many as asked, at most one per sequence and per ``per_thread`` edge-frames."""
    batch = lay.lens.shape[0]
    work = int(np.dot(lay.lens, lay.in_ptr[lay.lo + lay.size] - lay.in_ptr[lay.lo]))
    return max(1, min(int(num_threads or 1), batch, work // per_thread))


def fullsum(log_probs, seq_lengths, edges, weights, start_end_states, *, out=None, scale=None, edge_out=None,
            num_threads=1, ranges=None):
    """Full-sum over a batch's merged automaton: returns the (B,) float64 log totals (``-inf`` where the
    final state cannot be reached in the sequence's frames, NaN for non-finite input as in the twin). See
    ``_fsa_py.fullsum``; ``num_threads``
    sequences run at a time, without the GIL."""
    log_probs = check_log_probs(log_probs)
    lay = batch_layout(log_probs.shape, seq_lengths, edges, weights, start_end_states, ranges)
    scale = check_outputs(log_probs, lay.in_eid.shape[0], out, scale, edge_out)
    cdef Layout L = _layout(lay, log_probs.shape)
    log_z = np.full(L.B, -np.inf)
    if L.B == 0:
        return log_z
    grads = out is not None or edge_out is not None
    cdef Py_ssize_t nrows = int(((lay.lens + 1) * lay.size if grads else 2 * lay.size).max())
    cdef Py_ssize_t max_size = int(lay.size.max())
    cdef Py_ssize_t mg = lay.max_group
    cdef int nthreads = _threads(num_threads, lay, WORK_PER_THREAD)
    cdef Py_ssize_t stride = 4 * max_size + mg + 2 * nrows
    work = np.empty(nthreads * stride)
    cdef double* wp = <double*>cnp.PyArray_DATA(work)
    cdef double* zp = <double*>cnp.PyArray_DATA(log_z)
    cdef const double* sp = _f64(scale)
    cdef double* ep = <double*>cnp.PyArray_DATA(edge_out) if edge_out is not None else NULL
    cdef void* op = cnp.PyArray_DATA(out) if out is not None else NULL
    cdef bint lp32 = log_probs.dtype == np.float32
    cdef bint out32 = out is not None and out.dtype == np.float32
    cdef const void* lpp = cnp.PyArray_DATA(log_probs)
    with nogil:
        if lp32 and out32:
            _run_fullsum(&L, <const float*>lpp, <float*>op, ep, sp, zp, wp, stride, max_size, mg, nrows, nthreads)
        elif lp32:
            _run_fullsum(&L, <const float*>lpp, <double*>op, ep, sp, zp, wp, stride, max_size, mg, nrows, nthreads)
        elif out32:
            _run_fullsum(&L, <const double*>lpp, <float*>op, ep, sp, zp, wp, stride, max_size, mg, nrows, nthreads)
        else:
            _run_fullsum(&L, <const double*>lpp, <double*>op, ep, sp, zp, wp, stride, max_size, mg, nrows, nthreads)
    return log_z


def forward_backward(log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final):
    """Returns ``(log_total, occupancy)``: the log total path score and a float64 (T, L) matrix of
    label occupancies, or ``(-inf, None)`` when no path of exactly T frames exists."""
    log_probs, S, e_from, e_to, e_label, w, start, final = _check(
        log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final
    )
    T, L = log_probs.shape
    if not_finite(log_probs, w):
        return float("nan"), None
    if e_from.shape[0] == 0 or T == 0:
        if T == 0 and start == final:
            return 0.0, np.zeros((0, L))
        return float("-inf"), None
    edges = np.stack([e_from, e_to, e_label, np.zeros_like(e_from)])
    occ = np.empty((T, 1, L))
    log_z = fullsum(log_probs.reshape(T, 1, L), np.array([T]), edges, w, np.array([[start], [final]]), out=occ,
                    ranges=np.array([[0], [S - 1]]))
    if not np.isfinite(log_z[0]):
        return float("-inf"), None
    return float(log_z[0]), occ.reshape(T, L)


# -- Viterbi ---------------------------------------------------------------------------------------------------


cdef double _viterbi_one(const Layout* L, const real_t* lp, Py_ssize_t b, double* delta, int32_t* back,
                         int64_t* labels, int64_t* path) noexcept nogil:
    cdef Py_ssize_t n = L.size[b], lo = L.lo[b], t_b = L.lens[b], frame = L.B * L.V
    cdef Py_ssize_t t, s, k, arg
    cdef double v, best, score
    cdef double* prev
    cdef double* cur
    cdef const real_t* row
    if _not_finite(L, lp, b):
        return NAN
    for s in range(n):
        delta[s] = -INFINITY
    delta[L.start[b]] = 0.0
    for t in range(t_b):
        prev, cur = delta + (t % 2) * n, delta + ((t + 1) % 2) * n
        row = lp + t * frame
        for s in range(n):
            best = -INFINITY
            arg = -1
            for k in range(L.in_ptr[lo + s], L.in_ptr[lo + s + 1]):
                v = prev[L.in_src[k]]
                if v == -INFINITY:
                    continue
                v = v + <double>row[L.in_col[k]] - L.in_w[k]
                if v > best:
                    best = v
                    arg = k
            cur[s] = best
            back[t * n + s] = <int32_t>arg
    score = delta[(t_b % 2) * n + L.final[b]]
    if not isfinite(score):
        return score
    s = L.final[b]
    for t in range(t_b - 1, -1, -1):
        k = back[t * n + s]
        labels[t * L.B + b] = L.in_col[k] - b * L.V
        path[t * L.B + b] = L.in_eid[k]
        s = L.in_src[k]
    return score


cdef void _run_viterbi(const Layout* L, const real_t* lp, double* score, int64_t* labels, int64_t* path,
                       double* delta, Py_ssize_t dstride, int32_t* back, Py_ssize_t bstride,
                       int nthreads) noexcept nogil:
    cdef Py_ssize_t b
    cdef int i
    for b in prange(L.B, schedule="dynamic", num_threads=nthreads):
        i = threadid()
        score[b] = _viterbi_one(L, lp, b, delta + i * dstride, back + i * bstride, labels, path)


def viterbi(log_probs, seq_lengths, edges, weights, start_end_states, *, num_threads=1):
    """Best path per sequence over a batch's merged automaton: ``(score (B,) float64, labels (T, B) int64,
    edge_path (T, B) int64)``; see ``_fsa_py.viterbi``. ``num_threads`` sequences run at a time."""
    log_probs = check_log_probs(log_probs)
    lay = batch_layout(log_probs.shape, seq_lengths, edges, weights, start_end_states)
    cdef Layout L = _layout(lay, log_probs.shape)
    score = np.full(L.B, -np.inf)
    labels = np.full((L.T, L.B), -1, dtype=np.int64)
    path = np.full((L.T, L.B), -1, dtype=np.int64)
    if L.B == 0:
        return score, labels, path
    if int(lay.size.max()) * max(int(lay.lens.max()), 1) >= 2**31:
        raise ValueError("automaton too large for Viterbi: states x frames of one sequence must stay below 2**31")
    cdef int nthreads = _threads(num_threads, lay, VITERBI_WORK_PER_THREAD)
    cdef Py_ssize_t dstride = 2 * int(lay.size.max())
    cdef Py_ssize_t bstride = int((lay.lens * lay.size).max()) + 1
    delta = np.empty(nthreads * dstride)
    back = np.empty(nthreads * bstride, dtype=np.int32)
    cdef double* dp = <double*>cnp.PyArray_DATA(delta)
    cdef int32_t* bp = <int32_t*>cnp.PyArray_DATA(back)
    cdef double* sp = <double*>cnp.PyArray_DATA(score)
    cdef int64_t* labp = <int64_t*>cnp.PyArray_DATA(labels)
    cdef int64_t* pp = <int64_t*>cnp.PyArray_DATA(path)
    cdef const void* lpp = cnp.PyArray_DATA(log_probs)
    cdef bint lp32 = log_probs.dtype == np.float32
    with nogil:
        if lp32:
            _run_viterbi(&L, <const float*>lpp, sp, labp, pp, dp, dstride, bp, bstride, nthreads)
        else:
            _run_viterbi(&L, <const double*>lpp, sp, labp, pp, dp, dstride, bp, bstride, nthreads)
    return score, labels, path
