"""Automata from an in-process builder with librasr's API, served like a pool's.

RASR's pybind11 module ``librasr`` builds automata without a Sprint child:
``librasr.AllophoneStateFsaBuilder(config).build_by_segment_name(name)`` returns one segment's
``(num_states, num_edges, edges uint32 (3*E,), weights float32 (E,))``. :class:`BuilderAutomata` wraps any object
with that method (a real librasr builder, the emulator's ``sprint_control.emulator.builder``, a stand-in) into
the pool's automaton interface, ``get_automata_for_batch(tags)`` and ``export_allophone_state_fsa(name)``, so the
torch bridge's ``automata_for_batch`` (with its cache) and RETURNN's TF full-sum take it where they take a pool.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..errors import ProtocolError
from .batch import merge_automata, tag_names

__all__ = ["BuilderAutomata", "checked_fsa_tuple"]

FsaTuple = tuple[int, int, np.ndarray, np.ndarray]


def checked_fsa_tuple(answer: Any, name: str) -> FsaTuple:
    """A builder's answer for segment ``name`` checked: ``(num_states, num_edges, edges (3*E,) or (3, E) integer,
    weights (E,))``, edges inside the states. Arrays already in uint32/float32 are passed on without a copy."""
    if not isinstance(answer, (tuple, list)) or len(answer) != 4:
        raise ProtocolError(f"the automaton builder answered {type(answer).__name__} for segment {name!r}; expected "
                            "(num_states, num_edges, edges, weights)")
    num_states, num_edges, edges, weights = answer
    num_states, num_edges = int(num_states), int(num_edges)
    edges, weights = np.asarray(edges), np.asarray(weights)
    if edges.dtype.kind not in "iu" or edges.size != 3 * num_edges or weights.shape != (num_edges,):
        raise ProtocolError(f"the automaton of segment {name!r} has edges {edges.dtype} {edges.shape} and weights "
                            f"{weights.shape} for {num_edges} edges; expected 3 * {num_edges} integers and "
                            f"({num_edges},) weights")
    if num_states < 1:
        raise ProtocolError(f"the automaton of segment {name!r} has {num_states} states; expected at least one")
    if edges.size and (int(edges.min()) < 0 or int(edges.reshape(3, -1)[:2].max()) >= num_states):
        raise ProtocolError(f"the automaton of segment {name!r} has an edge outside its {num_states} states")
    return num_states, num_edges, edges.astype(np.uint32, copy=False), weights.astype(np.float32, copy=False)


class BuilderAutomata:
    """The pool's automaton calls over an object with librasr's ``build_by_segment_name(name)``.

    ``lock`` is there because RETURNN calls ``get_automata_for_batch`` under ``pool.lock``; the builder itself is
    called under it too (librasr's builder is not documented as thread-safe). ``close()`` does nothing: there is
    no child.
    """

    def __init__(self, builder: Any):
        if not callable(getattr(builder, "build_by_segment_name", None)):
            raise TypeError(f"BuilderAutomata needs an object with build_by_segment_name(name) (librasr's "
                            f"AllophoneStateFsaBuilder API), got {type(builder).__name__}")
        self.builder = builder
        self.lock = threading.RLock()
        self.segments_built = 0

    def export_allophone_state_fsa(self, seg_name: Any) -> FsaTuple:
        """One segment's automaton, checked (what a child's instance answers)."""
        (name,) = tag_names([seg_name])
        with self.lock:
            answer = self.builder.build_by_segment_name(name)
            self.segments_built += 1
        return checked_fsa_tuple(answer, name)

    def build_segments(self, tags: Any) -> list[FsaTuple]:
        """The checked automaton of each segment, in order."""
        return [self.export_allophone_state_fsa(name) for name in tag_names(tags)]

    def get_automata_for_batch(self, tags: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch automaton in the pool's layout: ``(edges uint32 (4, E), weights float32 (E,),
        start_end_states uint32 (2, batch))``."""
        return merge_automata(self.build_segments(tags))

    def close(self) -> None:
        pass

    def __enter__(self) -> BuilderAutomata:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
