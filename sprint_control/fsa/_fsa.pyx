# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Forward-backward and Viterbi over emitting automata in log space, compiled.

Same API, results and errors as the numpy twin ``_fsa_py`` (see there for the model and the batch layout).
One kernel serves both callers: ``fullsum`` runs a batch over RASR's merged automaton, one sequence per
OpenMP thread with the GIL released, and writes ``scale[b] * occupancy`` straight into the caller's
(T, B, V) array (a torch tensor's memory, the loss gradient); ``forward_backward`` (the emulator's
criteria) is that kernel on a batch of one.

Per frame and state the recursion is one sum over the edges into (forward) or out of (backward) the state,
grouped in advance, without a log or an exp per edge: every value is kept as ``a * 2**e`` with a mantissa
``a`` in [0.5, 1) and an integral exponent ``e`` held in a double (``-inf``: zero), so no state far below
the frame's best one is lost (each state has its own exponent; no per-frame rescaling). ``exp(score)`` is
split once per frame and label (``V`` exps per sequence and frame instead of one per edge) and
``exp(-weight)`` once per edge and call; an edge's term is then ``a_src * pm * wm * 2**(e_src + pe + we)``, a
state's sum is its terms scaled by ``2**(e - e_max)`` (built from the bits, as is the normalisation that
replaces ``frexp``). Scores are read in their own precision (float32 or float64); everything summed is
float64. The backward pass produces the edge occupancies as it goes, ``alpha[t, from] * term / Z`` from
the terms of its own sum, so no (T, E) temporaries exist and only alpha is kept over time.

``shared=True`` runs every sequence through one automaton (an LF-MMI denominator graph): its layout once,
its weights' factors once, the sequences in parallel over the same read-only edges.
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, M_LN2, NAN, isfinite, log
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

from ._fsa_py import (_check, batch_layout, check_layout, check_leak, check_log_probs, check_outputs,
                      not_finite, shared_layout)

cnp.import_array()

cdef double LN2 = M_LN2

IMPLEMENTATION = "cython"

ctypedef fused real_t:
    float
    double

ctypedef fused out_t:
    float
    double


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    /* 2**d for an integral d (held in a double): 0 below -1022 and for -inf (the term is negligible) */
    static inline double sc_pow2(double d) {
        uint64_t bits;
        double r;
        if (!(d >= -1022.0)) return 0.0;
        if (d > 1023.0) return INFINITY;
        bits = (uint64_t)((int64_t)d + 1023) << 52;
        memcpy(&r, &bits, 8);
        return r;
    }
    /* a positive normal x as a * 2**e with a in [0.5, 1): returns a, adds e to *e (frexp without a call) */
    static inline double sc_norm(double x, double* e) {
        uint64_t bits;
        double a;
        memcpy(&bits, &x, 8);
        *e += (double)((int64_t)((bits >> 52) & 0x7ff) - 1022);
        bits = (bits & 0x800FFFFFFFFFFFFFULL) | (0x3FEULL << 52);
        memcpy(&a, &bits, 8);
        return a;
    }
    /* exp(x) as m * 2**e with m in (0.5, 2) and e integral; x = -inf: m = 1, e = -inf */
    static inline double sc_split(double x, double* e) {
        double k, y = x * 1.4426950408889634074;
        if (x == -INFINITY) { *e = -INFINITY; return 1.0; }
        k = fabs(y) < 1e15 ? (double)(int64_t)y : floor(y);
        *e = k;
        return exp((x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10);
    }
    """
    double sc_pow2(double d) noexcept nogil
    double sc_norm(double x, double* e) noexcept nogil
    double sc_split(double x, double* e) noexcept nogil


cdef struct Layout:
    Py_ssize_t T, B, V
    bint shared  # one automaton (graph 0) for every sequence
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
    # exp(-weight) = wm * 2**we of the edges in the in_/out_ order (filled per graph by the kernel)
    double* in_wm
    double* in_we
    double* out_wm
    double* out_we
    # the leaky HMM (shared mode): leak * init(s) = lk_m * 2**lk_e per state of the automaton, or NULL
    const double* lk_m
    const double* lk_e


cdef inline const int64_t* _i64(cnp.ndarray a):
    return <const int64_t*>cnp.PyArray_DATA(a)


cdef inline const double* _f64(cnp.ndarray a):
    return <const double*>cnp.PyArray_DATA(a)


cdef Layout _layout(object lay, tuple shape, bint shared=False):
    cdef Layout L
    L.T, L.B, L.V = shape
    L.shared = shared
    L.lens, L.lo, L.size = _i64(lay.lens), _i64(lay.lo), _i64(lay.size)
    L.start, L.final = _i64(lay.start), _i64(lay.final)
    L.in_ptr, L.in_src, L.in_col, L.in_eid = _i64(lay.in_ptr), _i64(lay.in_src), _i64(lay.in_col), _i64(lay.in_eid)
    L.in_w = _f64(lay.in_w)
    L.out_ptr, L.out_dst, L.out_col = _i64(lay.out_ptr), _i64(lay.out_dst), _i64(lay.out_col)
    L.out_eid = _i64(lay.out_eid)
    L.out_w = _f64(lay.out_w)
    L.in_wm = L.in_we = L.out_wm = L.out_we = NULL
    L.lk_m = L.lk_e = NULL
    return L


cdef bint _not_finite(const Layout* L, const real_t* lp, Py_ssize_t b, Py_ssize_t g) noexcept nogil:
    """The non-finite rule of ``_fsa_py``: a NaN or +inf score in sequence b's frames (any label), or a NaN or
    -inf weight on an edge of its automaton g. Counted without a branch per value, so the loop vectorises."""
    cdef Py_ssize_t t, v, k, t_b = L.lens[b], nv = L.V, frame = L.B * L.V
    cdef Py_ssize_t lo = L.lo[g], n = L.size[g]
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


cdef void _weight_factors(const Layout* L, Py_ssize_t g) noexcept nogil:
    """``exp(-weight)`` as mantissa and exponent for the edges of automaton g (in- and out-order)."""
    cdef Py_ssize_t k, lo = L.lo[g], n = L.size[g]
    for k in range(L.in_ptr[lo], L.in_ptr[lo + n]):
        L.in_wm[k] = sc_split(-L.in_w[k], L.in_we + k)
    for k in range(L.out_ptr[lo], L.out_ptr[lo + n]):
        L.out_wm[k] = sc_split(-L.out_w[k], L.out_we + k)


cdef inline void _frame_factors(const real_t* row, Py_ssize_t nv, double* pm, double* pe) noexcept nogil:
    """``exp(score)`` of one frame of one sequence as mantissa ``pm`` and exponent ``pe`` per label."""
    cdef Py_ssize_t v
    for v in range(nv):
        pm[v] = sc_split(<double>row[v], pe + v)


cdef inline double _sum_group(const double* a_prev, const double* e_prev, const int64_t* other,
                              const int64_t* col, Py_ssize_t base, const double* wm, const double* we,
                              const double* pm, const double* pe, Py_ssize_t k0, Py_ssize_t k1, double* tm,
                              double* te, double* a_out, double* e_out) noexcept nogil:
    """One state's sum over its edge group ``k0:k1`` from the previous row ``(a_prev, e_prev)``, each value
    ``a * 2**e``: the term of edge k is ``a_prev * pm * wm * 2**(e_prev + pe + we)``; its mantissa and
    exponent are left in ``tm``/``te``. Stores the sum as ``(a_out, e_out)`` with ``a`` in [0.5, 1) and
    returns its largest term's exponent (``-inf``: no edge comes from a reachable state)."""
    cdef Py_ssize_t k, j, c
    cdef double e, big = -INFINITY, total = 0.0
    for k in range(k0, k1):
        j = k - k0
        c = col[k] - base
        e = e_prev[other[k]] + pe[c] + we[k]
        tm[j] = a_prev[other[k]] * pm[c] * wm[k]
        te[j] = e
        if e > big:
            big = e
    if big == -INFINITY:
        a_out[0] = 0.0
        e_out[0] = -INFINITY
        return big
    for j in range(k1 - k0):
        total += tm[j] * sc_pow2(te[j] - big)
    e_out[0] = big
    a_out[0] = sc_norm(total, e_out)
    return big


cdef inline void _add_to(double* a, double* e, double m2, double e2) noexcept nogil:
    """``(a, e) += m2 * 2**e2``, normalised."""
    cdef double big, v
    if e2 == -INFINITY or m2 == 0.0:
        return
    if e[0] == -INFINITY:
        e[0] = e2
        a[0] = sc_norm(m2, e)
        return
    big = e[0] if e[0] > e2 else e2
    v = a[0] * sc_pow2(e[0] - big) + m2 * sc_pow2(e2 - big)
    e[0] = big
    a[0] = sc_norm(v, e)


cdef inline double _row_total(const double* a, const double* e, const double* fm, const double* fe,
                              Py_ssize_t n, double* total_e) noexcept nogil:
    """``sum_s a[s] * 2**e[s]`` (times ``fm[s] * 2**fe[s]`` where given) as mantissa, exponent in total_e."""
    cdef Py_ssize_t s
    cdef double big = -INFINITY, v, total = 0.0
    for s in range(n):
        v = e[s] + (fe[s] if fe != NULL else 0.0)
        if v > big:
            big = v
    total_e[0] = big
    if big == -INFINITY:
        return 0.0
    for s in range(n):
        v = e[s] + (fe[s] if fe != NULL else 0.0)
        total += a[s] * (fm[s] if fm != NULL else 1.0) * sc_pow2(v - big)
    return total


cdef void _leak_forward(const Layout* L, double* a, double* e, Py_ssize_t n) noexcept nogil:
    """alpha'(s) = alpha(s) + leak * init(s) * sum(alpha)."""
    cdef Py_ssize_t s
    cdef double te, ta = _row_total(a, e, NULL, NULL, n, &te)
    if te == -INFINITY:
        return
    for s in range(n):
        _add_to(a + s, e + s, L.lk_m[s] * ta, L.lk_e[s] + te)


cdef void _leak_backward(const Layout* L, double* a, double* e, Py_ssize_t n) noexcept nogil:
    """beta(s) = b(s) + sum_s' leak * init(s') * b(s')."""
    cdef Py_ssize_t s
    cdef double te, ta = _row_total(a, e, L.lk_m, L.lk_e, n, &te)
    if te == -INFINITY:
        return
    for s in range(n):
        _add_to(a + s, e + s, ta, te)


cdef double _forward(const Layout* L, const real_t* lp, Py_ssize_t b, Py_ssize_t g, double* ae, double* aa,
                     bint keep, double* tm, double* te, double* fac) noexcept nogil:
    """alpha of sequence b over automaton g as ``aa * 2**ae``: all T_b + 1 rows when ``keep``, else two
    alternating rows; the frames' factors in ``fac`` (all T_b rows of 2V when ``keep``, for the backward
    pass, else one). Returns log Z."""
    cdef double* pm
    cdef double* pe
    cdef Py_ssize_t n = L.size[g], lo = L.lo[g], t_b = L.lens[b], frame = L.B * L.V, base = g * L.V
    cdef Py_ssize_t t, s, k, prev, cur
    for s in range(n):
        ae[s] = -INFINITY
        aa[s] = 0.0
    ae[L.start[g]] = 0.0
    aa[L.start[g]] = 1.0
    for t in range(t_b):
        prev, cur = (t * n, (t + 1) * n) if keep else ((t % 2) * n, ((t + 1) % 2) * n)
        if L.lk_m != NULL:  # the leak before frame t (rows 0 .. T_b - 1; not the last one)
            _leak_forward(L, aa + prev, ae + prev, n)
        pm = fac + (t * 2 * L.V if keep else 0)
        pe = pm + L.V
        _frame_factors(lp + t * frame + b * L.V, L.V, pm, pe)
        for s in range(n):
            _sum_group(aa + prev, ae + prev, L.in_src, L.in_col, base, L.in_wm, L.in_we, pm, pe,
                       L.in_ptr[lo + s], L.in_ptr[lo + s + 1], tm, te, aa + cur + s, ae + cur + s)
    k = (t_b * n if keep else (t_b % 2) * n) + L.final[g]
    return log(aa[k]) + ae[k] * LN2 if ae[k] != -INFINITY else -INFINITY


cdef void _backward(const Layout* L, const real_t* lp, out_t* out, double* eout, double scale, Py_ssize_t b,
                    Py_ssize_t g, const double* ae, const double* aa, double az, double ez, double* be,
                    double* ba, double* tm, double* te, const double* fac) noexcept nogil:
    """beta of sequence b (as ``ba * 2**be``, two rows) down from its last frame; adds ``scale * occupancy``
    of every edge at every frame to ``out`` (frame row, column b * V + emission) and, summed over frames,
    to ``eout``. Z = ``az * 2**ez``; ``fac`` the forward pass's frame factors."""
    cdef const double* pm
    cdef const double* pe
    cdef Py_ssize_t n = L.size[g], lo = L.lo[g], t_b = L.lens[b], frame = L.B * L.V, base = g * L.V
    cdef Py_ssize_t t, s, k, k0, k1, nxt = 0, cur = n
    cdef double f, occ, e_s
    cdef out_t* row_out = NULL
    for s in range(n):
        be[s] = -INFINITY
        ba[s] = 0.0
    be[L.final[g]] = 0.0
    ba[L.final[g]] = 1.0
    for t in range(t_b - 1, -1, -1):
        pm = fac + t * 2 * L.V
        pe = pm + L.V
        if out != NULL:
            row_out = out + t * frame + b * L.V - base
        for s in range(n):
            k0, k1 = L.out_ptr[lo + s], L.out_ptr[lo + s + 1]
            # tm/te get the edges' terms, used again for the occupancies
            if _sum_group(ba + nxt, be + nxt, L.out_dst, L.out_col, base, L.out_wm, L.out_we, pm, pe, k0, k1,
                          tm, te, ba + cur + s, be + cur + s) == -INFINITY:
                continue
            e_s = ae[t * n + s]
            if e_s == -INFINITY:
                continue
            # occupancy of edge k: alpha_t(s) * term_k / Z
            f = aa[t * n + s] / az * scale
            e_s = e_s - ez
            for k in range(k0, k1):
                occ = tm[k - k0] * f * sc_pow2(e_s + te[k - k0])
                if row_out != NULL:
                    row_out[L.out_col[k]] += <out_t>occ
                if eout != NULL:
                    eout[L.out_eid[k]] += occ
        if L.lk_m != NULL:
            _leak_backward(L, ba + cur, be + cur, n)
        nxt, cur = cur, nxt


cdef double _fullsum_one(const Layout* L, const real_t* lp, out_t* out, double* eout, double scale,
                         Py_ssize_t b, double* work, Py_ssize_t max_size, Py_ssize_t max_group,
                         Py_ssize_t rows) noexcept nogil:
    """One sequence; ``work`` holds beta (two rows of exponents, two of mantissas), the per-group terms
    (mantissas, exponents), alpha (``rows`` each), then the frames' factors (mantissas and exponents of
    every frame with gradients, else of one)."""
    cdef Py_ssize_t t, k, g = 0 if L.shared else b
    cdef Py_ssize_t n = L.size[g], lo = L.lo[g]
    cdef bint grads = out != NULL or eout != NULL
    cdef double* be = work
    cdef double* ba = work + 2 * max_size
    cdef double* tm = work + 4 * max_size
    cdef double* te = tm + max_group
    cdef double* ae = te + max_group
    cdef double* aa = ae + rows
    cdef double* fac = aa + rows
    cdef double log_z, ez = 0.0, az
    if out != NULL:  # this sequence's rows of every frame: written here, by the thread that owns them
        for t in range(L.T):
            memset(out + t * L.B * L.V + b * L.V, 0, L.V * sizeof(out_t))
    if eout != NULL:
        for k in range(L.in_ptr[lo], L.in_ptr[lo + n]):
            eout[L.in_eid[k]] = 0.0
    if _not_finite(L, lp, b, g):
        return NAN
    if not L.shared:
        _weight_factors(L, g)
    log_z = _forward(L, lp, b, g, ae, aa, grads, tm, te, fac)
    if grads and isfinite(log_z):
        k = L.lens[b] * n + L.final[g]
        az = sc_norm(aa[k], &ez)
        _backward(L, lp, out, eout, scale, b, g, ae, aa, az, ae[k] + ez, be, ba, tm, te, fac)
    return log_z


cdef void _run_fullsum(const Layout* L, const real_t* lp, out_t* out, double* eout, const double* scale,
                       double* log_z, double* work, Py_ssize_t stride, Py_ssize_t max_size,
                       Py_ssize_t max_group, Py_ssize_t rows, int nthreads) noexcept nogil:
    cdef Py_ssize_t b
    if L.shared:
        _weight_factors(L, 0)
    for b in prange(L.B, schedule="dynamic", num_threads=nthreads):
        log_z[b] = _fullsum_one(L, lp, out, eout, scale[b], b, work + threadid() * stride, max_size, max_group,
                                rows)


#: edge-frames (frames x edges) of work per thread, full-sum and Viterbi (no exp: cheaper per edge):
#: below it, another thread costs more to wake (up to a scheduler time slice on a busy machine) than it saves
WORK_PER_THREAD = 1_000_000
VITERBI_WORK_PER_THREAD = 7_000_000


def _threads(num_threads, lay, per_thread, shared=False):
    """Threads for a batch: as many as asked, at most one per sequence and per ``per_thread`` edge-frames."""
    batch = lay.lens.shape[0]
    if shared:
        work = int(lay.lens.sum()) * int(lay.in_eid.shape[0])
    else:
        work = int(np.dot(lay.lens, lay.in_ptr[lay.lo + lay.size] - lay.in_ptr[lay.lo]))
    return max(1, min(int(num_threads or 1), batch, work // per_thread))


def fullsum(log_probs, seq_lengths, edges, weights, start_end_states, *, out=None, scale=None, edge_out=None,
            num_threads=1, ranges=None, layout=None, shared=False, leak=0.0, leak_init=None):
    """Full-sum over a batch's merged automaton: returns the (B,) float64 log totals (``-inf`` where the
    final state cannot be reached in the sequence's frames, NaN for non-finite input as in the twin). See
    ``_fsa_py.fullsum``; ``num_threads`` sequences run at a time, without the GIL."""
    cdef double leak_e_tmp = 0.0
    log_probs = check_log_probs(log_probs)
    if shared and edge_out is not None:
        raise ValueError("edge_out is not available with a shared automaton (its edges belong to every sequence)")
    if layout is None:
        if shared:
            layout = shared_layout(log_probs.shape, seq_lengths, edges, weights, start_end_states)
        else:
            layout = batch_layout(log_probs.shape, seq_lengths, edges, weights, start_end_states, ranges)
    lay = check_layout(layout, log_probs.shape, shared)
    log_leak = check_leak(leak, leak_init, shared, lay)
    scale = check_outputs(log_probs, lay.in_eid.shape[0], out, scale, edge_out)
    cdef Layout L = _layout(lay, log_probs.shape, shared)
    if log_leak is not None:
        leak_factors = np.empty((2, log_leak.shape[0]))
        for i in range(log_leak.shape[0]):
            leak_factors[0, i] = sc_split(log_leak[i], &leak_e_tmp)
            leak_factors[1, i] = leak_e_tmp
        L.lk_m = _f64(leak_factors[0])
        L.lk_e = _f64(leak_factors[1])
    log_z = np.full(L.B, -np.inf)
    if L.B == 0:
        return log_z
    grads = out is not None or edge_out is not None
    rows_per = (lay.lens + 1) * (lay.size[0] if shared else lay.size) if grads else 2 * lay.size
    cdef Py_ssize_t nrows = int(rows_per.max())
    cdef Py_ssize_t max_size = int(lay.size.max())
    cdef Py_ssize_t mg = lay.max_group
    cdef int nthreads = _threads(num_threads, lay, WORK_PER_THREAD, shared)
    cdef Py_ssize_t frows = max(int(lay.lens.max()), 1) if grads else 1
    cdef Py_ssize_t stride = 4 * max_size + 2 * mg + 2 * nrows + 2 * L.V * frows
    work = np.empty(nthreads * stride)
    factors = np.empty((4, lay.in_eid.shape[0]))
    L.in_wm, L.in_we = <double*>cnp.PyArray_DATA(factors[0]), <double*>cnp.PyArray_DATA(factors[1])
    L.out_wm, L.out_we = <double*>cnp.PyArray_DATA(factors[2]), <double*>cnp.PyArray_DATA(factors[3])
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
    if _not_finite(L, lp, b, b):
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
