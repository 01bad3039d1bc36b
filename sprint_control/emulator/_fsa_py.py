"""Forward-backward over an emitting automaton in log space: the pure-Python (numpy) twin of ``_fsa``.

An automaton is a list of edges ``(from, to, label, weight)``; every edge consumes exactly one frame
and emits ``label`` (the column of the log-probability matrix it scores), ``weight`` is a
-log transition probability. A path of ``T`` edges from ``start`` to ``final`` scores
``sum_t log_probs[t, label_t] - weight_t``. ``forward_backward`` returns the log of the total score of
all such paths and the per-frame label occupancies (the posterior probability that frame ``t`` is
emitted by an edge with label ``l``). Same API, results and errors as the compiled ``_fsa``.
"""

from __future__ import annotations

import numpy as np

IMPLEMENTATION = "python"


def _check(log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final):
    log_probs = np.asarray(log_probs)
    if log_probs.ndim != 2:
        raise ValueError(f"log_probs must be a (time, label) matrix, got shape {log_probs.shape}")
    if log_probs.dtype not in (np.float32, np.float64):
        log_probs = log_probs.astype(np.float64)
    e_from = np.ascontiguousarray(edges_from, dtype=np.int64)
    e_to = np.ascontiguousarray(edges_to, dtype=np.int64)
    e_label = np.ascontiguousarray(edges_label, dtype=np.int64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    n = e_from.shape[0]
    if e_from.ndim != 1 or e_to.shape != (n,) or e_label.shape != (n,) or w.shape != (n,):
        raise ValueError("edges_from, edges_to, edges_label and weights must be 1-D of the same length")
    num_states = int(num_states)
    if not (0 <= start < num_states and 0 <= final < num_states):
        raise ValueError(f"start {start} / final {final} out of range for {num_states} states")
    if n:
        if e_from.min() < 0 or e_from.max() >= num_states or e_to.min() < 0 or e_to.max() >= num_states:
            raise ValueError(f"edge state index out of range for {num_states} states")
        if e_label.min() < 0 or e_label.max() >= log_probs.shape[1]:
            raise ValueError(f"edge label out of range: labels must be < {log_probs.shape[1]} (columns of log_probs)")
    return log_probs, num_states, e_from, e_to, e_label, w, int(start), int(final)


def _grouped_logsumexp(values: np.ndarray, order: np.ndarray, starts: np.ndarray, group_of: np.ndarray):
    """log(sum(exp(values))) per group; groups given by a sort order and the group start offsets."""
    v = values[..., order]
    m = np.maximum.reduceat(v, starts, axis=-1)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.add.reduceat(np.exp(v - m_safe[..., group_of]), starts, axis=-1)
        return np.log(s) + m_safe


def _groups(keys: np.ndarray):
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    uniq = sorted_keys[starts]
    group_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(keys)]))
    return order, starts, uniq, group_of


def forward_backward(log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final):
    """Returns ``(log_total, occupancy)``: the log total path score and a float64 (T, L) matrix of
    label occupancies, or ``(-inf, None)`` when no path of exactly T frames exists."""
    log_probs, S, e_from, e_to, e_label, w, start, final = _check(
        log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final
    )
    T, L = log_probs.shape
    E = e_from.shape[0]
    if E == 0 or T == 0:
        if T == 0 and start == final:
            return 0.0, np.zeros((0, L))
        return float("-inf"), None
    # Only the columns the edges read: (T, E) scores of each edge at each frame.
    emit = log_probs[:, e_label].astype(np.float64) - w
    to_order, to_starts, to_uniq, to_group = _groups(e_to)
    from_order, from_starts, from_uniq, from_group = _groups(e_from)
    alpha = np.full((T + 1, S), -np.inf)
    alpha[0, start] = 0.0
    for t in range(T):
        alpha[t + 1, to_uniq] = _grouped_logsumexp(alpha[t, e_from] + emit[t], to_order, to_starts, to_group)
    log_total = float(alpha[T, final])
    if not np.isfinite(log_total):
        return float("-inf"), None
    beta = np.full((T + 1, S), -np.inf)
    beta[T, final] = 0.0
    for t in range(T - 1, -1, -1):
        beta[t, from_uniq] = _grouped_logsumexp(beta[t + 1, e_to] + emit[t], from_order, from_starts, from_group)
    with np.errstate(invalid="ignore"):
        gamma = np.exp(alpha[:-1, e_from] + emit + beta[1:, e_to] - log_total)  # (T, E)
    gamma[~np.isfinite(gamma)] = 0.0
    occupancy = np.zeros((L, T))
    np.add.at(occupancy, e_label, gamma.T)
    return log_total, np.ascontiguousarray(occupancy.T)
