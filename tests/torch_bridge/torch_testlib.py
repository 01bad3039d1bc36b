"""Helpers for the PyTorch bridge tests: hand-built CTC automata, a float64 reference criterion and fake pools.

Everything here is an independent second implementation (plain numpy, per sequence), so the bridge's tensors and
gradients can be checked against it.
"""

from __future__ import annotations

import numpy as np


def ctc_automaton(labels, blank: int = 0):
    """A CTC topology as RASR-style automaton: (num_states, edges (3, e) from/to/emission, weights (e,)).

    State 0 is the initial state (nothing emitted yet); position p of the blank/label alternation
    (blank, y1, blank, y2, ..., blank) is state p + 1. Each frame moves along one edge and emits the label of the
    position it enters. The last state is the single final state: every edge that enters the last label or the
    trailing blank is duplicated into it, so a path that is in one of those two after its last frame ends there.
    """
    labels = list(labels)
    u = len(labels)
    npos = 2 * u + 1

    def lab(p):
        return blank if p % 2 == 0 else labels[(p - 1) // 2]

    final = npos + 1
    edges = []
    edges.append((0, 1, lab(0)))
    if u:
        edges.append((0, 2, lab(1)))
    for p in range(npos):
        edges.append((p + 1, p + 1, lab(p)))
        if p + 1 < npos:
            edges.append((p + 1, p + 2, lab(p + 1)))
        if p % 2 == 1 and p + 2 < npos and lab(p + 2) != lab(p):
            edges.append((p + 1, p + 3, lab(p + 2)))
    ends = {npos, npos - 1} if u else {npos}  # states of the trailing blank and the last label
    edges += [(a, final, e) for (a, b, e) in list(edges) if b in ends]
    arr = np.array(edges, dtype=np.uint32).T.reshape(3, -1)
    return final + 1, arr, np.zeros(arr.shape[1], dtype=np.float32)


def merge(automata):
    """Merges per-sequence (num_states, edges (3,e), weights) into the pool's batch layout (numpy)."""
    edges, weights, start_end = [], [], []
    offset = 0
    for b, (n, e, w) in enumerate(automata):
        e = e.astype(np.int64)
        edges.append(np.stack([e[0] + offset, e[1] + offset, e[2], np.full(e.shape[1], b)]))
        weights.append(w)
        start_end.append((offset, offset + n - 1))
        offset += n
    edges = np.concatenate(edges, axis=1).astype(np.uint32) if edges else np.zeros((4, 0), np.uint32)
    weights = np.concatenate(weights).astype(np.float32) if weights else np.zeros(0, np.float32)
    return edges, weights, np.array(start_end, dtype=np.uint32).T.reshape(2, -1)


def fullsum_reference(log_probs: np.ndarray, num_states: int, edges: np.ndarray, weights: np.ndarray):
    """Float64 full-sum over one sequence's automaton (start 0, final num_states-1), plain loops in prob space
    rescaled per frame. Returns (loss, occupancy (T, L)), or (inf, None) when the final state is unreachable."""
    lp = np.asarray(log_probs, dtype=np.float64)
    t_len, n_labels = lp.shape
    src, dst, emis = (edges[i].astype(np.int64) for i in range(3))
    w = np.exp(-np.asarray(weights, dtype=np.float64))
    alpha = np.zeros((t_len + 1, num_states))
    alpha[0, 0] = 1.0
    log_scale = np.zeros(t_len + 1)
    for t in range(t_len):
        p = np.exp(lp[t, emis]) * w
        for k in range(len(src)):
            alpha[t + 1, dst[k]] += alpha[t, src[k]] * p[k]
        s = alpha[t + 1].sum()
        if s == 0.0:
            return np.inf, None
        alpha[t + 1] /= s
        log_scale[t + 1] = np.log(s)
    beta = np.zeros((t_len + 1, num_states))
    beta[t_len, num_states - 1] = 1.0
    for t in range(t_len - 1, -1, -1):
        p = np.exp(lp[t, emis]) * w
        for k in range(len(src)):
            beta[t, src[k]] += beta[t + 1, dst[k]] * p[k]
        beta[t] /= np.exp(log_scale[t + 1])
    z = alpha[t_len, num_states - 1]
    if z == 0.0:
        return np.inf, None
    loss = -(np.log(z) + log_scale.sum())
    occ = np.zeros((t_len, n_labels))
    for t in range(t_len):
        p = np.exp(lp[t, emis]) * w / np.exp(log_scale[t + 1])
        for k in range(len(src)):
            occ[t, emis[k]] += alpha[t, src[k]] * p[k] * beta[t + 1, dst[k]] / z
    return loss, occ


class FakePool:
    """An in-process pool with the parent pool's two batch methods, built on a per-segment criterion.

    ``criterion(name, log_posteriors (T, L)) -> (loss, error_signal (T, L)) | (None, None)``;
    ``automaton(name) -> (num_states, edges (3, e), weights (e,))``. Records every call.
    """

    def __init__(self, criterion=None, automaton=None, dtype=np.float32):
        self.criterion = criterion
        self.automaton = automaton
        self.dtype = dtype
        self.loss_calls = []
        self.automata_calls = []

    def get_batch_loss_and_error_signal(self, log_posteriors, seq_lengths, tags):
        self.loss_calls.append((log_posteriors, np.array(seq_lengths), list(tags)))
        t_max, batch, n_labels = log_posteriors.shape
        loss = np.zeros(batch, dtype=self.dtype)
        err = np.zeros((t_max, batch, n_labels), dtype=self.dtype)
        for b in range(batch):
            t = int(seq_lengths[b])
            lb, eb = self.criterion(tags[b], log_posteriors[:t, b])
            if lb is None:
                loss[b] = np.inf
                continue
            loss[b] = lb
            err[:t, b] = eb
        # Garbage beyond the lengths: the bridge must zero it itself.
        for b in range(batch):
            err[int(seq_lengths[b]) :, b] = 7.0
        return loss, err

    def get_automata_for_batch(self, tags):
        self.automata_calls.append(list(tags))
        return merge([self.automaton(t) for t in tags])


def ctc_reference_criterion(label_of, blank: int = 0):
    """A float64 CTC criterion per segment, like RASR's through the link: given log-posteriors (T, L) it returns
    (loss, error signal w.r.t. the pre-softmax activations) = (-log p(labels), softmax - occupancy).
    ``label_of(name)`` gives the segment's label sequence."""

    def criterion(name, log_posteriors):
        lp = np.asarray(log_posteriors, dtype=np.float64)
        n, e, w = ctc_automaton(label_of(name), blank)
        loss, occ = fullsum_reference(lp, n, e, w)
        if occ is None:
            return None, None
        return loss, np.exp(lp) - occ

    return criterion


def labels_from_name(name: str):
    """Test segments are named like 'seg-1-2-2': the label sequence is in the name."""
    return [int(x) for x in name.split("-")[1:]]
