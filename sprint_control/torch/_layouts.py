"""A small cache of regrouped automata (``fsa.batch_layout`` / ``fsa.shared_layout``) for the full-sum paths.

A training step computes the loss of a batch once, but benchmarks, gradient checks, a shared LF-MMI
denominator and a second pass over the same batch (forward, then Viterbi or the ops path's backward) hand
the same automaton again; regrouping it costs about as much as the kernel on a small batch. Entries are
found by the automaton's content, never by identity: the key is the shapes, lengths and start/final states,
and a hit needs the edges to be equal to the kept copy; new weights on the same edges (trainable transition
costs) are applied to the kept layout without regrouping it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .. import fsa as _fsa

__all__ = ["LayoutCache", "LAYOUTS"]


class LayoutCache:
    """Up to ``maxsize`` layouts, least recently used dropped first; safe to share between threads."""

    #: automata with more edges are regrouped every time (their layout would hold ~150 bytes an edge, and the
    #: regrouping is small next to the kernel's work on them)
    max_edges = 1_000_000

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = int(maxsize)
        self.hits = self.misses = 0
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, shape, lens: np.ndarray, edges: np.ndarray, weights: np.ndarray, start_end: np.ndarray,
            shared: bool = False):
        """The layout of this automaton for a (T, B, V) input (checked and regrouped on a miss)."""
        max_time, batch, num_labels = (int(x) for x in shape)
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        make = _fsa.shared_layout if shared else _fsa.batch_layout
        if edges.ndim != 2 or edges.shape[-1] > self.max_edges:
            return make(shape, lens, edges, weights, start_end)
        key = (batch, num_labels, bool(shared), edges.shape, lens.tobytes(), start_end.tobytes())
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None and np.array_equal(entry[0], edges):
            kept_weights, layout = entry[1], entry[2]
            self.hits += 1
            if layout.lens.shape[0] and int(layout.lens.max()) > max_time:
                raise ValueError(f"seq_lengths must lie in [0, {max_time}], got up to {int(layout.lens.max())}")
            if weights.shape != kept_weights.shape:
                raise ValueError(f"weights must have shape ({edges.shape[1]},), got {weights.shape}")
            if not np.array_equal(weights, kept_weights):
                layout = layout._replace(in_w=np.ascontiguousarray(weights[layout.in_eid]),
                                         out_w=np.ascontiguousarray(weights[layout.out_eid]))
            return layout
        self.misses += 1
        layout = make(shape, lens, edges, weights, start_end)
        with self._lock:
            self._entries[key] = (np.array(edges, copy=True), weights.copy(), layout)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return layout


#: the cache the full-sum paths share
LAYOUTS = LayoutCache()
