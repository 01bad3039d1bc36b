"""Forward-backward and Viterbi over emitting automata in log space: the pure-Python (numpy) twin of ``_fsa``.

An automaton is a list of edges ``(from, to, label, weight)``; every edge consumes exactly one frame
and emits ``label`` (the column of the log-probability matrix it scores), ``weight`` is a
-log transition probability. A path of ``T`` edges from ``start`` to ``final`` scores
``sum_t log_probs[t, label_t] - weight_t``.

- ``forward_backward`` (one sequence, the emulator's criteria): the log of the total score of all such
  paths and the per-frame label occupancies (the posterior probability that frame ``t`` is emitted by an
  edge with label ``l``).
- ``fullsum`` (a batch over RASR's merged automaton: edges (4, E) from/to/emission/sequence, each
  sequence's states a range ``[start, end]`` with ``start`` its initial and ``end`` its only final state):
  the log totals per sequence and, on request, ``scale[b] * occupancy`` written into a (T, B, V) array
  and the per-edge occupancies summed over frames.
- ``viterbi`` (same batch layout): the best path's score, its emission labels and edges per frame.

Non-finite input, one rule for every implementation (this twin, the compiled kernel, the torch ops of
``sprint_control.torch``): a sequence with a NaN or ``+inf`` frame score within its length (any label, read
or not) or a NaN or ``-inf`` weight on one of its edges has the total NaN, no occupancy (zeros in ``out`` and
``edge_out``) and no Viterbi path; its neighbours in the batch are unaffected. ``-inf`` scores are ordinary
(probability zero). The scan is ``not (x < inf)`` over the sequence's frames, so the answer never depends on
edge order or on which states are reachable.

Same API, results and errors as the compiled ``_fsa``; the checks and the edge layout (``batch_layout``)
are shared with it.
"""

from __future__ import annotations

from typing import NamedTuple

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


# -- the batch layout, shared with the compiled kernel -------------------------------------------------------


class BatchLayout(NamedTuple):
    """Edges of a merged automaton regrouped for the recursions, all int64/float64 and contiguous.

    Sequence ``b`` owns the states ``[lo[b], lo[b] + size[b])``, starts in local state ``start[b]`` and ends
    in local state ``final[b]``. ``in_*`` lists the edges sorted by destination state (stable):
    the edges into global state ``s`` are ``in_ptr[s]:in_ptr[s+1]``, with their local source state, their
    column ``seq * V + emission`` in a frame of the (T, B, V) input, their weight and their edge index.
    ``out_*`` is the same sorted by source state, with the local destination state.
    """

    lens: np.ndarray
    lo: np.ndarray
    size: np.ndarray
    start: np.ndarray
    final: np.ndarray
    in_ptr: np.ndarray
    in_src: np.ndarray
    in_col: np.ndarray
    in_w: np.ndarray
    in_eid: np.ndarray
    out_ptr: np.ndarray
    out_dst: np.ndarray
    out_col: np.ndarray
    out_w: np.ndarray
    out_eid: np.ndarray
    max_group: int


def _int_array(name, value, shape):
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.size and arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _grouping(keys: np.ndarray, num_states: int):
    order = np.argsort(keys, kind="stable")
    ptr = np.zeros(num_states + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=num_states), out=ptr[1:])
    return order, ptr


def batch_layout(shape, seq_lengths, edges, weights, start_end_states, ranges=None) -> BatchLayout:
    """Checks a merged automaton against a (T, B, V) input and regroups its edges (see :class:`BatchLayout`).

    ``ranges`` (2, B): each sequence's lowest and highest state when they are not its start and final
    state (the single-sequence API takes any start and final state); by default ``start_end_states``.
    """
    max_time, batch, num_labels = (int(x) for x in shape)
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[0] != 4:
        raise ValueError(f"edges must have shape (4, num_edges), got {edges.shape}")
    num_edges = edges.shape[1]
    edges = _int_array("edges", edges, (4, num_edges))
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if w.shape != (num_edges,):
        raise ValueError(f"weights must have shape ({num_edges},), got {w.shape}")
    start_end = _int_array("start_end_states", start_end_states, (2, batch))
    lens = _int_array("seq_lengths", seq_lengths, (batch,))
    lo_hi = start_end if ranges is None else _int_array("ranges", ranges, (2, batch))
    lo, hi = lo_hi
    if batch:
        if lens.min() < 0 or lens.max() > max_time:
            raise ValueError(f"seq_lengths must lie in [0, {max_time}], got {lens.min()} .. {lens.max()}")
        if lo.min() < 0 or np.any(hi < lo):
            raise ValueError("each sequence's states must be a range [start, end] of non-negative states")
        if np.any(start_end < lo) or np.any(start_end > hi):
            raise ValueError("start or final state outside its sequence's states")
        order = np.argsort(lo, kind="stable")
        if np.any(lo[order][1:] <= hi[order][:-1]):
            raise ValueError("the state ranges [start, end] of two sequences overlap")
    num_states = int(hi.max()) + 1 if batch else 0
    src, dst, emission, seq = edges
    if num_edges:
        if seq.min() < 0 or seq.max() >= batch:
            raise ValueError(f"edge sequence indices must lie in [0, {batch})")
        if emission.min() < 0 or emission.max() >= num_labels:
            raise ValueError(f"edge emission indices must lie in [0, {num_labels}), got up to {emission.max()}")
        lo_e, hi_e = lo[seq], hi[seq]
        if np.any(src < lo_e) or np.any(src > hi_e) or np.any(dst < lo_e) or np.any(dst > hi_e):
            raise ValueError("an edge leaves the state range [start, end] of its sequence")
    col = seq * num_labels + emission
    in_order, in_ptr = _grouping(dst, num_states)
    out_order, out_ptr = _grouping(src, num_states)
    groups = np.concatenate([np.diff(in_ptr), np.diff(out_ptr), [1]])
    return BatchLayout(
        lens=lens,
        lo=np.ascontiguousarray(lo),
        size=np.ascontiguousarray(hi - lo + 1),
        start=np.ascontiguousarray(start_end[0] - lo),
        final=np.ascontiguousarray(start_end[1] - lo),
        in_ptr=in_ptr,
        in_src=np.ascontiguousarray((src - lo[seq])[in_order]) if num_edges else np.zeros(0, np.int64),
        in_col=np.ascontiguousarray(col[in_order]),
        in_w=np.ascontiguousarray(w[in_order]),
        in_eid=np.ascontiguousarray(in_order.astype(np.int64)),
        out_ptr=out_ptr,
        out_dst=np.ascontiguousarray((dst - lo[seq])[out_order]) if num_edges else np.zeros(0, np.int64),
        out_col=np.ascontiguousarray(col[out_order]),
        out_w=np.ascontiguousarray(w[out_order]),
        out_eid=np.ascontiguousarray(out_order.astype(np.int64)),
        max_group=int(groups.max()),
    )


def shared_layout(shape, seq_lengths, edges, weights, start_end_states) -> BatchLayout:
    """The layout of one automaton (its edges' sequence index 0, ``start_end_states`` (2, 1)) that every
    sequence of a (T, B, V) input runs through: ``batch_layout`` of the automaton with the B lengths."""
    max_time, batch, num_labels = (int(x) for x in shape)
    lens = _int_array("seq_lengths", seq_lengths, (batch,))
    if batch and (lens.min() < 0 or lens.max() > max_time):
        raise ValueError(f"seq_lengths must lie in [0, {max_time}], got {lens.min()} .. {lens.max()}")
    layout = batch_layout((max_time, 1, num_labels), [0], edges, weights, start_end_states)
    return layout._replace(lens=lens)


def check_layout(layout, shape, shared=False) -> BatchLayout:
    """A layout the caller kept (``batch_layout`` or, with ``shared``, ``shared_layout`` of the same
    arguments) against the input: lengths, sequences and columns must fit it, so no kernel reads outside."""
    max_time, batch, num_labels = (int(x) for x in shape)
    if not isinstance(layout, BatchLayout):
        raise ValueError("layout must be a BatchLayout from batch_layout or shared_layout, got "
                         f"{type(layout).__name__}")
    graphs = 1 if shared else batch
    fits = layout.lens.shape == (batch,) and layout.lo.shape == (graphs,)
    if fits and batch:
        fits = int(layout.lens.max()) <= max_time and int(layout.lens.min()) >= 0
    if fits and layout.in_col.size:
        fits = int(layout.in_col.max()) < graphs * num_labels
    if not fits:
        kind = "shared_layout" if shared else "batch_layout"
        raise ValueError(f"layout does not fit log_probs of shape {tuple(shape)}: make it with {kind} of the same "
                         "arguments")
    return layout


def check_leak(leak, leak_init, shared, layout):
    """The leaky-HMM factors ``log(leak * init(s))`` per state of the shared automaton's range, or None
    without a leak. ``leak_init`` (default uniform) is normalised to a distribution."""
    leak = float(leak)
    if leak == 0.0 and leak_init is None:
        return None
    if not shared:
        raise ValueError("leak is only available with a shared automaton (shared=True)")
    if not 0.0 <= leak < 1.0:
        raise ValueError(f"leak must lie in [0, 1), got {leak}")
    size = int(layout.size[0])
    init = np.ones(size) if leak_init is None else np.asarray(leak_init, dtype=np.float64)
    if init.shape != (size,) or not np.all(np.isfinite(init)) or init.min() < 0 or init.sum() <= 0:
        raise ValueError(f"leak_init must be ({size},) non-negative weights per state of the automaton's range "
                         "[start, final], not all zero")
    with np.errstate(divide="ignore"):
        return np.log(leak) + np.log(init / init.sum())


def _replicated(batch, edges, weights, start_end_states):
    """One automaton (sequence index 0) copied for ``batch`` sequences in the merged layout."""
    edges = np.asarray(edges, dtype=np.int64)
    start_end = np.asarray(start_end_states, dtype=np.int64).reshape(2, 1)
    span = int(max(edges[:2].max() if edges.size else 0, start_end.max())) + 1
    offsets = np.arange(batch, dtype=np.int64) * span
    rep = np.tile(edges, (1, batch))
    num_edges = edges.shape[1]
    rep[:2] += np.repeat(offsets, num_edges)[None, :]
    rep[3] = np.repeat(np.arange(batch, dtype=np.int64), num_edges)
    return rep, np.tile(np.asarray(weights, dtype=np.float64), batch), start_end + offsets[None, :]


def check_outputs(log_probs, num_edges, out, scale, edge_out):
    """``out`` (T, B, V) float32/float64 C-contiguous, writable and apart from ``log_probs`` (it is written while
    ``log_probs`` is still read), ``scale`` as a float64 (B,) vector (ones by default), ``edge_out`` a
    writable float64 (E,) vector or None."""
    shape = log_probs.shape
    batch = shape[1]
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != tuple(shape) or out.dtype not in (np.float32, np.float64):
            raise ValueError(f"out must be a float32 or float64 array of shape {tuple(shape)}")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out must be C-contiguous and writable")
        if out.size and np.shares_memory(out, log_probs):
            raise ValueError("out must not share memory with log_probs (the kernel reads log_probs while it "
                             "writes out): pass a separate array")
    scale = np.ones(batch) if scale is None else np.ascontiguousarray(scale, dtype=np.float64)
    if scale.shape != (batch,):
        raise ValueError(f"scale must have shape ({batch},), got {scale.shape}")
    if edge_out is not None:
        if not isinstance(edge_out, np.ndarray) or edge_out.shape != (num_edges,) or edge_out.dtype != np.float64:
            raise ValueError(f"edge_out must be a float64 array of shape ({num_edges},)")
        if not (edge_out.flags.c_contiguous and edge_out.flags.writeable):
            raise ValueError("edge_out must be C-contiguous and writable")
        if edge_out.size and np.shares_memory(edge_out, log_probs):
            raise ValueError("edge_out must not share memory with log_probs: pass a separate array")
    return scale


def check_log_probs(log_probs) -> np.ndarray:
    log_probs = np.asarray(log_probs)
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be a (time, batch, label) array, got shape {log_probs.shape}")
    if log_probs.dtype not in (np.float32, np.float64):
        raise ValueError(f"log_probs must be float32 or float64, got {log_probs.dtype}")
    return np.ascontiguousarray(log_probs)


# -- one sequence ------------------------------------------------------------------------------------------------


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


def _logsumexp(v: np.ndarray) -> float:
    m = v.max()
    if m == -np.inf:
        return -np.inf
    return float(m + np.log(np.exp(v - m).sum()))


def _edge_posteriors(emit, num_states, e_from, e_to, start, final, log_leak=None):
    """``(log_total, gamma (T, E))`` of one sequence: ``emit`` (T, E) are the edges' frame scores;
    ``(-inf, None)`` without a path of exactly T frames. ``log_leak`` (num_states,): the leaky HMM, before
    every frame each state also gets ``leak * init(s)`` times the total of its row (and its mirror in beta)."""
    T = emit.shape[0]
    to_order, to_starts, to_uniq, to_group = _groups(e_to)
    from_order, from_starts, from_uniq, from_group = _groups(e_from)
    alpha = np.full((T + 1, num_states), -np.inf)
    alpha[0, start] = 0.0
    for t in range(T):
        if log_leak is not None:
            alpha[t] = np.logaddexp(alpha[t], log_leak + _logsumexp(alpha[t]))
        alpha[t + 1, to_uniq] = _grouped_logsumexp(alpha[t, e_from] + emit[t], to_order, to_starts, to_group)
    log_total = float(alpha[T, final])
    if not np.isfinite(log_total):
        return float("-inf"), None
    beta = np.full((T + 1, num_states), -np.inf)
    beta[T, final] = 0.0
    for t in range(T - 1, -1, -1):
        beta[t, from_uniq] = _grouped_logsumexp(beta[t + 1, e_to] + emit[t], from_order, from_starts, from_group)
        if log_leak is not None:
            beta[t] = np.logaddexp(beta[t], _logsumexp(log_leak + beta[t]))
    with np.errstate(invalid="ignore"):
        gamma = np.exp(alpha[:-1, e_from] + emit + beta[1:, e_to] - log_total)  # (T, E)
    gamma[~np.isfinite(gamma)] = 0.0
    return log_total, gamma


def forward_backward(log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final):
    """Returns ``(log_total, occupancy)``: the log total path score and a float64 (T, L) matrix of
    label occupancies, or ``(-inf, None)`` when no path of exactly T frames exists."""
    log_probs, S, e_from, e_to, e_label, w, start, final = _check(
        log_probs, num_states, edges_from, edges_to, edges_label, weights, start, final
    )
    T, L = log_probs.shape
    E = e_from.shape[0]
    if not_finite(log_probs, w):
        return float("nan"), None
    if E == 0 or T == 0:
        if T == 0 and start == final:
            return 0.0, np.zeros((0, L))
        return float("-inf"), None
    # Only the columns the edges read: (T, E) scores of each edge at each frame.
    emit = log_probs[:, e_label].astype(np.float64) - w
    log_total, gamma = _edge_posteriors(emit, S, e_from, e_to, start, final)
    if gamma is None:
        return float("-inf"), None
    occupancy = np.zeros((L, T))
    np.add.at(occupancy, e_label, gamma.T)
    return log_total, np.ascontiguousarray(occupancy.T)


# -- a batch over the merged automaton ---------------------------------------------------------------------------


def _sequence_edges(layout: BatchLayout, b: int, num_labels: int):
    """Edge indices, local from/to states, emissions and weights of sequence ``b`` (in edge order)."""
    lo, size = int(layout.lo[b]), int(layout.size[b])
    k0, k1 = layout.in_ptr[lo], layout.in_ptr[lo + size]
    eid = layout.in_eid[k0:k1]
    keep = np.argsort(eid, kind="stable")
    eid = eid[keep]
    src = layout.in_src[k0:k1][keep]
    dst = np.repeat(np.arange(size), np.diff(layout.in_ptr[lo : lo + size + 1]))[keep]
    emission = layout.in_col[k0:k1][keep] - b * num_labels
    return eid, src, dst, emission, layout.in_w[k0:k1][keep]


def not_finite(frames: np.ndarray, weights: np.ndarray) -> bool:
    """Whether a sequence's input breaks the non-finite rule: a NaN or ``+inf`` frame score, a NaN or ``-inf``
    weight (``-inf`` scores and ``+inf`` weights are ordinary: probability zero)."""
    return bool(np.any(~(frames < np.inf)) or np.any(~(weights > -np.inf)))


def _sequences(layout: BatchLayout, log_probs: np.ndarray, totals: np.ndarray):
    """Yields ``(b, eid, src, dst, emission, emit (T_b, e) float64)`` per sequence with frames and edges; a
    sequence without frames gets its total here (0 when it starts in its final state, else -inf), one that
    breaks the non-finite rule (:func:`not_finite`) NaN."""
    num_labels = log_probs.shape[2]
    for b in range(layout.lens.shape[0]):
        t_b = int(layout.lens[b])
        eid, src, dst, emission, w = _sequence_edges(layout, b, num_labels)
        if not_finite(log_probs[:t_b, b, :], w):
            totals[b] = np.nan
        elif t_b == 0:
            totals[b] = 0.0 if layout.start[b] == layout.final[b] else -np.inf
        elif eid.size:
            yield b, eid, src, dst, emission, log_probs[:t_b, b, :][:, emission].astype(np.float64) - w


def fullsum(log_probs, seq_lengths, edges, weights, start_end_states, *, out=None, scale=None, edge_out=None,
            num_threads=1, ranges=None, layout=None, shared=False, leak=0.0, leak_init=None):
    """Full-sum over a batch's merged automaton: returns the (B,) float64 log totals (``-inf`` where the
    final state cannot be reached in the sequence's frames).

    :param log_probs: (T, B, V) float32 or float64 frame scores (read where the edges point).
    :param out: a C-contiguous (T, B, V) float32/float64 array, overwritten with ``scale[b] * occupancy``
        (zero beyond each length, for unreachable sequences and for labels no edge emits); None: the
        forward pass only.
    :param scale: (B,) factors for ``out`` and ``edge_out`` (default ones; -1 gives the loss gradient).
    :param edge_out: a float64 (E,) array, overwritten with each edge's occupancy summed over frames, scaled.
    :param num_threads: sequences run in parallel on this many threads (compiled kernel; ignored here).
    :param layout: ``batch_layout`` (or ``shared_layout``) of these arguments, kept by the caller to save
        regrouping the same automaton again; checked to fit ``log_probs``, not against the other arguments.
    :param shared: ``edges``/``weights``/``start_end_states`` are one automaton (sequence index 0,
        ``start_end_states`` (2, 1)) that every sequence runs through (e.g. an LF-MMI denominator graph),
        without copying it per sequence; ``edge_out`` is then refused.
    :param leak: with ``shared``, the leaky-HMM coefficient: before each frame, every state also receives
        ``leak * leak_init(s)`` times the total of all states (Kaldi's leaky HMM; PyChain uses 1e-5).
    :param leak_init: (states of the automaton's range [start, final],) entry weights of the leak, normalised
        (default uniform; ``fsa.denominator`` estimates Kaldi's).

    A sequence with a NaN or ``+inf`` score or a NaN or ``-inf`` weight gets the total NaN and no occupancy
    (see the module's rule).
    """
    del num_threads
    log_probs = check_log_probs(log_probs)
    if shared and edge_out is not None:
        raise ValueError("edge_out is not available with a shared automaton (its edges belong to every sequence)")
    if shared:
        lay = layout if layout is not None else shared_layout(log_probs.shape, seq_lengths, edges, weights,
                                                              start_end_states)
        check_layout(lay, log_probs.shape, True)
        log_leak = check_leak(leak, leak_init, True, lay)
        scale = check_outputs(log_probs, lay.in_eid.shape[0], out, scale, edge_out)
        rep = _replicated(log_probs.shape[1], edges, weights, start_end_states)
        return _fullsum(log_probs, batch_layout(log_probs.shape, lay.lens, *rep), out, scale, None, log_leak)
    if layout is None:
        layout = batch_layout(log_probs.shape, seq_lengths, edges, weights, start_end_states, ranges)
    layout = check_layout(layout, log_probs.shape)
    check_leak(leak, leak_init, False, layout)
    scale = check_outputs(log_probs, layout.in_eid.shape[0], out, scale, edge_out)
    return _fullsum(log_probs, layout, out, scale, edge_out, None)


def _fullsum(log_probs, layout, out, scale, edge_out, log_leak):
    _, batch, num_labels = log_probs.shape
    log_z = np.full(batch, -np.inf)
    if out is not None:
        out[...] = 0
    if edge_out is not None:
        edge_out[...] = 0
    for b, eid, src, dst, emission, emit in _sequences(layout, log_probs, log_z):
        t_b = emit.shape[0]
        total, gamma = _edge_posteriors(emit, int(layout.size[b]), src, dst, int(layout.start[b]),
                                        int(layout.final[b]), log_leak)
        log_z[b] = total
        if gamma is None:
            continue
        gamma *= scale[b]
        if out is not None:
            occ = np.zeros((num_labels, t_b))
            np.add.at(occ, emission, gamma.T)
            out[:t_b, b, :] = occ.T
        if edge_out is not None:
            edge_out[eid] = gamma.sum(axis=0)
    return log_z


def viterbi(log_probs, seq_lengths, edges, weights, start_end_states, *, num_threads=1):
    """Best path per sequence over a batch's merged automaton: ``(score (B,) float64, labels (T, B) int64,
    edge_path (T, B) int64)``: the best path's total score, and per frame the emission label and index of
    the edge it takes. Score ``-inf`` and labels/edges ``-1`` where no path exists and beyond each length.
    Ties go to the lowest edge index among the edges into a state. Score NaN (and no path) for a sequence
    that breaks the non-finite rule."""
    del num_threads
    log_probs = check_log_probs(log_probs)
    layout = batch_layout(log_probs.shape, seq_lengths, edges, weights, start_end_states)
    max_time, batch, num_labels = log_probs.shape
    score = np.full(batch, -np.inf)
    labels = np.full((max_time, batch), -1, dtype=np.int64)
    path = np.full((max_time, batch), -1, dtype=np.int64)
    for b, eid, src, dst, emission, emit in _sequences(layout, log_probs, score):
        t_b, size = emit.shape[0], int(layout.size[b])
        order, starts, uniq, group_of = _groups(dst)
        delta = np.full(size, -np.inf)
        delta[int(layout.start[b])] = 0.0
        back = np.zeros((t_b, size), dtype=np.int64)
        positions = np.arange(eid.size)
        for t in range(t_b):
            v = (delta[src] + emit[t])[order]
            best = np.maximum.reduceat(v, starts)
            first = np.minimum.reduceat(np.where(v == best[group_of], positions, eid.size), starts)
            delta = np.full(size, -np.inf)
            delta[uniq] = best
            back[t, uniq] = order[np.minimum(first, eid.size - 1)]
        final = int(layout.final[b])
        if not np.isfinite(delta[final]):
            continue
        score[b] = delta[final]
        state = final
        for t in range(t_b - 1, -1, -1):
            k = back[t, state]
            labels[t, b], path[t, b] = emission[k], eid[k]
            state = int(src[k])
    return score, labels, path
