"""The denominator of lattice-free MMI: a label n-gram composed with a label topology, as one automaton.

``label_ngram`` estimates an n-gram (order 1 to 3) over units from unit sequences (transcripts, or
alignments turned into units by :func:`units_from_alignment`): ``P(u | h) = (c(h, u) + P(u | h')) / (c(h) +
1)``, each order interpolated with the next lower one (``h'`` drops the oldest unit; the unigram with the
uniform distribution over the units and the end of sequence), so every unit may follow every history and
every training sequence has a path. Pruning keeps the histories seen at least ``min_count`` times; a
pruned history backs off to its longest kept suffix. ``denominator_graph`` composes it with a topology, in
the layout of the full-sum kernel (every edge consumes one frame and emits the label of the state it enters;
one start, one final state; a weight is ``-log P``):

- ``"ctc"``: per n-gram state a blank state, and per (n-gram state, last unit) a label state with a loop;
  a unit after the same unit needs a blank between (CTC's rule), each unit entry pays its n-gram cost.
- ``"hmm"``: each unit ``u`` is ``states_per_unit`` left-to-right states with loops (labels
  ``u * states_per_unit + j``, the emulator's numbering), a unit's first state pays its n-gram cost;
  with ``silence`` (the last label) the last unit is silence, one state.

The end of a sequence pays ``-log P(</s> | h)``. ``initial`` is the leaky-HMM entry distribution over the
states: the state occupancy after ``100`` frames from the start under the transition weights alone (how
Kaldi's chain training estimates it), normalised.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["LabelNgram", "DenominatorGraph", "label_ngram", "denominator_graph", "units_from_alignment"]

_BOS = -1  # the sentence start in a history
TOPOLOGIES = ("ctc", "hmm")


@dataclass(frozen=True)
class LabelNgram:
    """``histories``: the kept histories (tuples of units, ``-1`` the sentence start); ``cost(h, u)`` and
    ``end_cost(h)`` are ``-log P``; ``next_state(h, u)`` the kept history after ``u``."""

    order: int
    num_units: int
    histories: tuple
    _log_p: dict
    _log_end: dict

    def cost(self, history: tuple, unit: int) -> float:
        return -float(self._log_p[history][unit])

    def end_cost(self, history: tuple) -> float:
        return -float(self._log_end[history])

    def next_state(self, history: tuple, unit: int) -> tuple:
        return _kept((history + (unit,))[-(self.order - 1):] if self.order > 1 else (), set(self.histories))


def _kept(history: tuple, kept: set) -> tuple:
    while history not in kept:
        history = history[1:]
    return history


def label_ngram(sequences: Sequence[Sequence[int]], num_units: int, *, order: int = 2,
                min_count: int = 1) -> LabelNgram:
    """An n-gram over units ``0 .. num_units - 1`` from ``sequences`` (see the module's estimate)."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if num_units < 1:
        raise ValueError(f"num_units must be at least 1, got {num_units}")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts: Counter = Counter()
    end = num_units  # the end of sequence as one more outcome
    for seq in sequences:
        seq = [int(u) for u in seq]
        if any(u < 0 or u >= num_units for u in seq):
            raise ValueError(f"a sequence holds a unit outside [0, {num_units}): {seq}")
        padded = [_BOS] * (order - 1) + seq + [end]
        for i in range(order - 1, len(padded)):
            for n in range(order):  # the n-grams of every order ending here
                counts[tuple(padded[i - n: i]), padded[i]] += 1
    history_counts: Counter = Counter()
    for (h, _), c in counts.items():
        history_counts[h] += c
    kept = {h for h, c in history_counts.items() if c >= min_count}
    kept.add(())
    kept.add((_BOS,) * (order - 1))
    log_p: dict = {}
    log_end: dict = {}
    prob_cache: dict = {}

    def prob(h: tuple) -> np.ndarray:
        if h in prob_cache:
            return np.asarray(prob_cache[h])
        if h == ():
            lower = np.full(num_units + 1, 1.0 / (num_units + 1))
        else:
            lower = prob(h[1:])
        c = np.array([counts.get((h, u), 0) for u in range(num_units + 1)], dtype=np.float64)
        p = (c + lower) / (c.sum() + 1.0)
        prob_cache[h] = p
        return np.asarray(p)

    for h in kept:
        p = prob(h)
        log_p[h] = np.log(p[:num_units])
        log_end[h] = float(np.log(p[num_units]))
    start = (_BOS,) * (order - 1)
    histories = (start,) + tuple(sorted(h for h in kept if h != start))
    return LabelNgram(order, num_units, histories, log_p, log_end)


@dataclass(frozen=True)
class DenominatorGraph:
    """One automaton for every sequence of a batch: ``edges`` (3, E) from/to/label, ``weights`` (E,) ``-log P``,
    ``start``/``final`` state, ``initial`` (num_states,) the leaky-HMM entry distribution."""

    num_states: int
    edges: np.ndarray
    weights: np.ndarray
    start: int
    final: int
    initial: np.ndarray
    num_labels: int

    def merged(self):
        """``(edges (4, E) with sequence index 0, weights, start_end_states (2, 1))`` for the kernel's shared mode."""
        e = np.vstack([self.edges, np.zeros((1, self.edges.shape[1]), np.int64)])
        return e, self.weights, np.array([[self.start], [self.final]], dtype=np.int64)


def denominator_graph(ngram: LabelNgram, *, topology: str = "ctc", blank: Optional[int] = None,
                      states_per_unit: int = 1, silence: Optional[int] = None) -> DenominatorGraph:
    """The n-gram composed with a topology (see the module); labels: CTC ``0 .. num_units`` with ``blank``
    (default ``num_units``, the emulator's), HMM ``u * states_per_unit + j`` and ``silence``."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, got {topology!r}")
    units = ngram.num_units
    if topology == "ctc":
        blank = units if blank is None else int(blank)
        labels = [u if u < blank else u + 1 for u in range(units)]  # units skip the blank's column
        num_labels = units + 1
    else:
        if states_per_unit < 1:
            raise ValueError(f"states_per_unit must be at least 1, got {states_per_unit}")
        num_labels = (units - 1) * states_per_unit + 1 if silence is not None else units * states_per_unit
        if silence is not None and silence != num_labels - 1:
            raise ValueError(f"silence must be the last label ({num_labels - 1}) with {units} units, got {silence}")
    index: dict = {"start": 0}
    edges: list = []
    ends: list = []  # (state, end cost) of states a sequence may end in

    def state(key) -> int:
        if key not in index:
            index[key] = len(index)
            todo.append(key)
        return int(index[key])

    def unit_states(u: int) -> list:
        if topology == "ctc":
            return [labels[u]]
        if silence is not None and u == units - 1:
            return [silence]
        return [u * states_per_unit + j for j in range(states_per_unit)]

    def enter(src: int, h: tuple, u: int, forbid_same: Optional[int] = None) -> None:
        if u == forbid_same:
            return
        h2 = ngram.next_state(h, u)
        edges.append((src, state(("unit", h2, u, 0)), unit_states(u)[0], ngram.cost(h, u)))

    todo: list = []
    h0 = ngram.histories[0]
    if topology == "ctc":
        edges.append((0, state(("blank", h0)), blank, 0.0))
    for u in range(units):
        enter(0, h0, u)
    while todo:
        key = todo.pop()
        s = index[key]
        if key[0] == "blank":
            h = key[1]
            edges.append((s, s, blank, 0.0))
            for u in range(units):
                enter(s, h, u)
            ends.append((s, ngram.end_cost(h)))
            continue
        _, h, u, j = key
        chain_labels = unit_states(u)
        edges.append((s, s, chain_labels[j], 0.0))
        if j + 1 < len(chain_labels):
            edges.append((s, state(("unit", h, u, j + 1)), chain_labels[j + 1], 0.0))
            continue
        ends.append((s, ngram.end_cost(h)))
        if topology == "ctc":
            edges.append((s, state(("blank", h)), blank, 0.0))
        for u2 in range(units):
            enter(s, h, u2, forbid_same=u if topology == "ctc" else None)
    final = len(index)
    end_cost = dict(ends)
    edges += [(a, final, lab, w + end_cost[b]) for (a, b, lab, w) in list(edges) if b in end_cost]
    arr = np.array([(a, b, lab) for a, b, lab, _ in edges], dtype=np.int64).T.reshape(3, -1)
    weights = np.array([w for *_, w in edges], dtype=np.float64)
    num_states = final + 1
    return DenominatorGraph(num_states, arr, weights, 0, final, _initial(num_states, arr, weights), num_labels)


def _initial(num_states: int, edges: np.ndarray, weights: np.ndarray, frames: int = 100) -> np.ndarray:
    """The state distribution after ``frames`` steps from the start under the transition weights (each state's
    outgoing weights normalised), averaged over the steps; every state gets a share."""
    src, dst = edges[0], edges[1]
    p = np.exp(-weights)
    out = np.bincount(src, weights=p, minlength=num_states)
    p = p / np.where(out[src] > 0, out[src], 1.0)
    x = np.zeros(num_states)
    x[0] = 1.0
    total = np.zeros(num_states)
    for _ in range(frames):
        x = np.bincount(dst, weights=x[src] * p, minlength=num_states).astype(np.float64)
        s = x.sum()
        if s > 0:
            x /= s
        total += x
    total += 1e-6
    return np.asarray(total / total.sum())


def units_from_alignment(alignment: Sequence[int], *, topology: str = "ctc", blank: Optional[int] = None,
                         states_per_unit: int = 1, silence: Optional[int] = None, num_units: int) -> list:
    """A frame alignment as its unit sequence: CTC drops blanks and merges repeats; HMM takes a unit at each
    entry into its first state (``silence`` counts as the unit ``num_units - 1`` when given)."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, got {topology!r}")
    out: list = []
    prev = None
    for lab in (int(x) for x in alignment):
        if topology == "ctc":
            b = num_units if blank is None else blank
            if lab != b and lab != prev:
                out.append(lab if lab < b else lab - 1)
        elif silence is not None and lab == silence:
            if lab != prev:
                out.append(num_units - 1)
        elif lab % states_per_unit == 0 and lab != prev:
            out.append(lab // states_per_unit)
        prev = lab
    return out
