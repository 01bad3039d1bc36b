# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Forward-backward over an emitting automaton in log space, compiled.

Same API, results and errors as the numpy twin ``_fsa_py`` (see there for the model): every edge
consumes one frame and emits its label; ``forward_backward`` returns the log total score of all
paths of exactly T frames from ``start`` to ``final`` and the (T, L) label occupancies. The
recursions run without the GIL, one pass over the edges per frame, in log space throughout
(no per-frame rescaling that could lose states far below the frame's best one).
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport INFINITY, exp, isfinite, log1p

from ._fsa_py import _check

cnp.import_array()

IMPLEMENTATION = "cython"

ctypedef fused real_t:
    float
    double


cdef inline double _logadd(double a, double b) noexcept nogil:
    if a == -INFINITY:
        return b
    if b == -INFINITY:
        return a
    if a > b:
        return a + log1p(exp(b - a))
    return b + log1p(exp(a - b))


cdef double _run(const real_t[:, ::1] lp, const long long[::1] ef, const long long[::1] et,
                 const long long[::1] el, const double[::1] w, double[:, ::1] alpha,
                 double[:, ::1] beta, double[:, ::1] occ, Py_ssize_t start, Py_ssize_t final) noexcept nogil:
    cdef Py_ssize_t T = lp.shape[0]
    cdef Py_ssize_t S = alpha.shape[1]
    cdef Py_ssize_t E = ef.shape[0]
    cdef Py_ssize_t t, s, e
    cdef double v, total
    for t in range(T + 1):
        for s in range(S):
            alpha[t, s] = -INFINITY
            beta[t, s] = -INFINITY
    alpha[0, start] = 0.0
    for t in range(T):
        for e in range(E):
            v = alpha[t, ef[e]]
            if v == -INFINITY:
                continue
            v = v + <double>lp[t, el[e]] - w[e]
            alpha[t + 1, et[e]] = _logadd(alpha[t + 1, et[e]], v)
    total = alpha[T, final]
    if not isfinite(total):
        return -INFINITY
    beta[T, final] = 0.0
    for t in range(T - 1, -1, -1):
        for e in range(E):
            v = beta[t + 1, et[e]]
            if v == -INFINITY:
                continue
            v = v + <double>lp[t, el[e]] - w[e]
            beta[t, ef[e]] = _logadd(beta[t, ef[e]], v)
    for t in range(T):
        for e in range(E):
            v = alpha[t, ef[e]] + beta[t + 1, et[e]]
            if v == -INFINITY:
                continue
            v = v + <double>lp[t, el[e]] - w[e] - total
            if isfinite(v):
                occ[t, el[e]] += exp(v)
    return total


def forward_backward(log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final):
    """Returns ``(log_total, occupancy)``: the log total path score and a float64 (T, L) matrix of
    label occupancies, or ``(-inf, None)`` when no path of exactly T frames exists."""
    log_probs, S, e_from, e_to, e_label, w, start, final = _check(
        log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final
    )
    log_probs = np.ascontiguousarray(log_probs)
    cdef Py_ssize_t T = log_probs.shape[0]
    cdef Py_ssize_t L = log_probs.shape[1]
    if e_from.shape[0] == 0 or T == 0:
        if T == 0 and start == final:
            return 0.0, np.zeros((0, L))
        return float("-inf"), None
    alpha = np.empty((T + 1, S))
    beta = np.empty((T + 1, S))
    occ = np.zeros((T, L))
    cdef double total
    cdef const long long[::1] ef = e_from.astype(np.longlong, copy=False)
    cdef const long long[::1] et = e_to.astype(np.longlong, copy=False)
    cdef const long long[::1] el = e_label.astype(np.longlong, copy=False)
    cdef const double[::1] wv = w
    cdef double[:, ::1] av = alpha
    cdef double[:, ::1] bv = beta
    cdef double[:, ::1] ov = occ
    cdef const float[:, ::1] lp32
    cdef const double[:, ::1] lp64
    cdef Py_ssize_t s0 = start, f0 = final
    if log_probs.dtype == np.float32:
        lp32 = log_probs
        with nogil:
            total = _run(lp32, ef, et, el, wv, av, bv, ov, s0, f0)
    else:
        lp64 = log_probs
        with nogil:
            total = _run(lp64, ef, et, el, wv, av, bv, ov, s0, f0)
    if not isfinite(total):
        return float("-inf"), None
    return float(total), occ
