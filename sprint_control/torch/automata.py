"""RASR's merged automaton of a batch as tensors, with a per-segment LRU cache.

The automata come from a pool of Sprint children (``get_automata_for_batch``) or, without any child, from an
in-process builder with librasr's API (``build_by_segment_name``: a real ``librasr.AllophoneStateFsaBuilder`` or
``sprint_control.emulator.builder.AllophoneStateFsaBuilder``), wrapped in ``parent.BuilderAutomata``. They are
handed out as an :class:`Automaton` or, with ``weighted_fsa=True``, as i6_models' ``WeightedFsa``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch

from ..errors import ProtocolError
from ..parent.batch import merge_automata, tag_names
from ..parent.builder_source import BuilderAutomata
from .weighted_fsa import weighted_fsa_type

__all__ = ["Automaton", "AutomataCache", "automata_for_batch", "automata_source"]

log = logging.getLogger("sprint_control.torch")


class Automaton(NamedTuple):
    """RASR's automaton of one batch: all sequences merged into one state space.

    ``edges`` (4, E): from-state, to-state, emission index (label), sequence index. ``weights`` (E,) float32,
    in -log space (costs). ``start_end_states`` (2, batch): each sequence's start and its only final state.
    """

    edges: torch.Tensor
    weights: torch.Tensor
    start_end_states: torch.Tensor

    @property
    def num_states(self) -> int:
        return int(self.start_end_states[1].max().item()) + 1 if self.start_end_states.numel() else 0

    def to_weighted_fsa(self, index_dtype: torch.dtype = torch.int32) -> Any:
        """The same automaton as i6_models' ``WeightedFsa`` (see ``weighted_fsa.as_weighted_fsa``: tensors
        already in their dtype are not copied)."""
        from .weighted_fsa import as_weighted_fsa

        return as_weighted_fsa(self, index_dtype=index_dtype)


class _SeqAutomaton(NamedTuple):
    """One sequence's automaton with local state indices (start state 0, final state num_states - 1)."""

    num_states: int
    edges: np.ndarray  # (3, e) uint32: from, to, emission
    weights: np.ndarray  # (e,) float32


class AutomataCache:
    """A thread-safe LRU of per-segment automata, keyed by segment name.

    A training run asks for the same segments every epoch; with a cache, RASR is asked only for the segments
    of a batch that are not in it. ``maxsize=None`` keeps everything.
    """

    def __init__(self, maxsize: Optional[int] = 10000):
        if maxsize is not None and maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 or None, got {maxsize}")
        self.maxsize = maxsize
        self._items: OrderedDict[str, _SeqAutomaton] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, tag: str) -> bool:
        return tag in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def _get(self, tag: str) -> Optional[_SeqAutomaton]:
        with self._lock:
            item = self._items.get(tag)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(tag)
            self.hits += 1
            return item

    def _put(self, tag: str, item: _SeqAutomaton) -> None:
        if self.maxsize == 0:
            return
        with self._lock:
            self._items[tag] = item
            self._items.move_to_end(tag)
            while self.maxsize is not None and len(self._items) > self.maxsize:
                self._items.popitem(last=False)


def _split_automata(
    edges: np.ndarray, weights: np.ndarray, start_end_states: np.ndarray, batch: int
) -> list[_SeqAutomaton]:
    """Splits a merged batch automaton (pool layout) into one local automaton per sequence."""
    edges = np.asarray(edges)
    weights = np.asarray(weights, dtype=np.float32)
    start_end_states = np.asarray(start_end_states)
    if edges.ndim != 2 or edges.shape[0] != 4:
        raise ProtocolError(f"automaton edges must have shape (4, num_edges), got {edges.shape}")
    if weights.shape != (edges.shape[1],):
        raise ProtocolError(f"automaton weights must have shape ({edges.shape[1]},), got {weights.shape}")
    if start_end_states.shape != (2, batch):
        raise ProtocolError(f"start_end_states must have shape (2, {batch}), got {start_end_states.shape}")
    edges = edges.astype(np.int64, copy=False)
    start_end = start_end_states.astype(np.int64, copy=False)
    seq = edges[3]
    if edges.shape[1] and (seq.min() < 0 or seq.max() >= batch):
        raise ProtocolError(f"automaton edges name sequences outside [0, {batch})")
    out = []
    for b in range(batch):
        start, end = int(start_end[0, b]), int(start_end[1, b])
        if end < start:
            raise ProtocolError(f"sequence {b}: end state {end} lies before its start state {start}")
        sel = np.flatnonzero(seq == b)
        local = edges[:3, sel].copy()
        local[:2] -= start
        if sel.size and (local[:2].min() < 0 or local[:2].max() > end - start):
            raise ProtocolError(f"sequence {b}: an edge leaves the state range [{start}, {end}] of its sequence")
        out.append(_SeqAutomaton(end - start + 1, local.astype(np.uint32), weights[sel].copy()))
    return out


def _automaton_tensors(
    parts: Sequence[_SeqAutomaton], index_dtype: torch.dtype, device: Optional[torch.device], weighted_fsa: bool
) -> Any:
    """Merges per-sequence automata (the parent's ``merge_automata``: state offsets in batch order) into
    tensors: an :class:`Automaton`, or i6_models' ``WeightedFsa`` when ``weighted_fsa``."""
    edges, weights, start_end = merge_automata([(p.num_states, p.edges.shape[1], p.edges, p.weights) for p in parts])
    num_states = int(start_end[1, -1]) + 1 if start_end.shape[1] else 0
    if index_dtype == torch.int32 and num_states < 2**31:  # uint32 below 2**31 is int32 bit for bit: no copy
        edges, start_end = edges.view(np.int32), start_end.view(np.int32)
    else:
        edges, start_end = edges.astype(np.int64), start_end.astype(np.int64)
    tensors = (
        torch.from_numpy(edges).to(device=device, dtype=index_dtype),
        torch.from_numpy(weights).to(device=device),
        torch.from_numpy(start_end).to(device=device, dtype=index_dtype),
    )
    if weighted_fsa:
        return weighted_fsa_type()(torch.tensor(num_states, dtype=index_dtype, device=device), *tensors)
    return Automaton(*tensors)


def automata_source(pool: Any) -> Any:
    """``pool`` as a source of automata: a pool as it is; an object with librasr's ``build_by_segment_name`` but no
    ``get_automata_for_batch`` (a builder) wrapped in :class:`~sprint_control.parent.BuilderAutomata`."""
    if isinstance(pool, BuilderAutomata) or callable(getattr(pool, "get_automata_for_batch", None)):
        return pool
    if callable(getattr(pool, "build_by_segment_name", None)):
        return BuilderAutomata(pool)
    raise TypeError(f"automata come from a pool (get_automata_for_batch) or a builder with librasr's API "
                    f"(build_by_segment_name), got {type(pool).__name__}")


def _fetch(source: Any, tags: list[str]) -> list[_SeqAutomaton]:
    """Each segment's local automaton: straight from a builder, else split from the pool's batch automaton."""
    if isinstance(source, BuilderAutomata):
        return [_SeqAutomaton(n, e.reshape(3, -1), w) for n, _, e, w in source.build_segments(tags)]
    edges, weights, start_end = source.get_automata_for_batch(tags)
    return _split_automata(edges, weights, start_end, len(tags))


def automata_for_batch(
    tags: Sequence[str],
    pool: Any,
    *,
    cache: Optional[AutomataCache] = None,
    index_dtype: Optional[torch.dtype] = None,
    device: Union[torch.device, str, None] = None,
    weighted_fsa: bool = False,
) -> Any:
    """RASR's merged automaton for a batch of segments, as torch tensors.

    :param tags: one segment name per sequence.
    :param pool: anything with ``get_automata_for_batch(tags) -> (edges (4,E), weights (E,), start_end (2,B))``
        (a pool of Sprint children), or a builder with librasr's ``build_by_segment_name(name)`` (no child: a real
        ``librasr.AllophoneStateFsaBuilder``, ``sprint_control.emulator.builder.AllophoneStateFsaBuilder``).
    :param cache: an :class:`AutomataCache`; only segments missing from it are fetched from RASR.
    :param index_dtype: ``torch.int64`` or ``torch.int32`` for ``edges`` and ``start_end_states``; default int64
        for an :class:`Automaton`, int32 (i6_models' dtype) for a ``WeightedFsa``.
    :param device: where the tensors go (default CPU).
    :param weighted_fsa: return i6_models' ``WeightedFsa`` (``sprint_control.torch.WeightedFsa``, the same fields,
        where i6_models is not installed) instead of an :class:`Automaton`.
    :return: :class:`Automaton` ``(edges (4, E), weights float32 (E,), start_end_states (2, batch))``, the same
        numbers as the pool's numpy arrays (state offsets per sequence in batch order); or ``WeightedFsa
        (num_states, edges, weights, start_end_states)`` with those numbers.
    """
    if index_dtype is None:
        index_dtype = torch.int32 if weighted_fsa else torch.int64
    if index_dtype not in (torch.int64, torch.int32):
        raise TypeError(f"index_dtype must be torch.int64 or torch.int32, got {index_dtype}")
    tags = tag_names(tags)
    source = automata_source(pool)
    device = torch.device(device) if device is not None else None
    if cache is None:
        return _automaton_tensors(_fetch(source, tags), index_dtype, device, weighted_fsa)

    parts: list[Optional[_SeqAutomaton]] = [cache._get(t) for t in tags]
    missing = list(OrderedDict.fromkeys(t for t, p in zip(tags, parts) if p is None))
    if missing:
        fetched = dict(zip(missing, _fetch(source, missing)))
        for tag, part in fetched.items():
            cache._put(tag, part)
        parts = [p if p is not None else fetched[t] for t, p in zip(tags, parts)]
        log.debug("automata: %d of %d segments fetched from RASR", len(missing), len(tags))
    return _automaton_tensors(parts, index_dtype, device, weighted_fsa)  # type: ignore[arg-type]
