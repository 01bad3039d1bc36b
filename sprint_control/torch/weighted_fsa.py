"""``WeightedFsa`` in and out: i6_models' batch automaton type, and the one place that reads an automaton argument.

i6_models (``i6_models.parts.rasr_fsa``) holds a batch automaton as ``WeightedFsa(num_states, edges, weights,
start_end_states)``: ``num_states`` a 0-dim int32 tensor (all states of the batch), ``edges`` (4, E) int32
from/to/emission/sequence, ``weights`` (E,) float32 (-log space, already times the tdp scale) and
``start_end_states`` (2, batch) int32. That is RASR's merged layout, the one :func:`automata_for_batch` builds.

:func:`weighted_fsa_type` is i6_models' class where i6_models is installed and :class:`WeightedFsa` (a named tuple
with the same fields, ``*`` and ``.to``) otherwise; :func:`as_weighted_fsa` converts without copying tensors that
already have the right dtype; :func:`automaton_arrays` turns every automaton form ``fullsum_loss`` and
``fullsum_viterbi`` take into their three arrays.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch

__all__ = ["WeightedFsa", "as_weighted_fsa", "automaton_arrays", "weighted_fsa_type"]

_FIELDS = ("num_states", "edges", "weights", "start_end_states")


class WeightedFsa(NamedTuple):
    """A batch automaton with i6_models' fields (its ``WeightedFsa`` where that is not installed).

    ``num_states``: 0-dim int tensor, the states of the whole batch; ``edges`` (4, E): from-state, to-state,
    emission index, sequence index; ``weights`` (E,) in -log space; ``start_end_states`` (2, batch).
    """

    num_states: torch.Tensor
    edges: torch.Tensor
    weights: torch.Tensor
    start_end_states: torch.Tensor

    def __mul__(self, scale: float) -> WeightedFsa:  # type: ignore[override]  # as i6_models: scales weights
        """The same automaton with its weights times ``scale`` (a tdp scale)."""
        return self._replace(weights=self.weights * scale)

    def to(self, device: Union[str, torch.device]) -> WeightedFsa:
        """All four tensors on ``device``."""
        return WeightedFsa._make(t.to(device) for t in self)


_i6_type: Optional[type] = None


def weighted_fsa_type() -> type:
    """i6_models' ``WeightedFsa`` when ``i6_models.parts.rasr_fsa`` imports, else :class:`WeightedFsa`."""
    global _i6_type
    if _i6_type is None:
        try:
            from i6_models.parts.rasr_fsa import WeightedFsa as i6_weighted_fsa
        except ImportError:
            i6_weighted_fsa = WeightedFsa
        _i6_type = i6_weighted_fsa
    return _i6_type


def as_weighted_fsa(automaton: Any, *, index_dtype: torch.dtype = torch.int32, cls: Optional[type] = None) -> Any:
    """Any automaton with ``edges``, ``weights`` and ``start_end_states`` (an :class:`~.automata.Automaton`, a
    ``WeightedFsa`` of either kind) as a ``WeightedFsa`` of ``cls`` (default :func:`weighted_fsa_type`).

    ``edges`` and ``start_end_states`` become ``index_dtype`` (i6_models uses int32), ``weights`` float32; a
    tensor that already has its dtype is passed on as it is, not copied.
    """
    edges, weights, start_end = automaton_arrays(automaton, None, None, what="as_weighted_fsa")
    edges = torch.as_tensor(edges).to(index_dtype)
    start_end = torch.as_tensor(start_end).to(index_dtype)
    weights = torch.as_tensor(weights).to(torch.float32)
    num_states = start_end[1, -1] + 1 if start_end.shape[-1] else torch.zeros((), dtype=index_dtype)
    return (cls or weighted_fsa_type())(num_states.to(index_dtype), edges, weights, start_end)


def automaton_arrays(edges: Any, weights: Any, start_end_states: Any, *, what: str = "fullsum_loss"
                     ) -> tuple[Any, Any, Any]:
    """``(edges, weights, start_end_states)`` of an automaton argument.

    Either the three arrays themselves, or ``edges`` is the whole automaton and the other two are None: an object
    with ``edges``, ``weights`` and ``start_end_states`` attributes (``WeightedFsa`` of i6_models or ours,
    :class:`~.automata.Automaton`, the pool's ``Automata``), a 3-tuple ``(edges, weights, start_end_states)`` (what
    ``get_automata_for_batch`` returns) or a 4-tuple ``(num_states, edges, weights, start_end_states)``.
    """
    if weights is not None and start_end_states is not None:
        return edges, weights, start_end_states
    if weights is not None or start_end_states is not None:
        raise TypeError(f"{what}: give edges, weights and start_end_states, or one automaton in place of edges "
                        "(weights and start_end_states left out)")
    if all(hasattr(edges, name) for name in _FIELDS[1:]):
        return edges.edges, edges.weights, edges.start_end_states
    if isinstance(edges, (tuple, list)) and len(edges) in (3, 4):
        return tuple(edges[-3:])  # type: ignore[return-value]
    raise TypeError(f"{what}: expected an automaton (a WeightedFsa, an Automaton, (edges, weights, start_end_states) "
                    f"or (num_states, edges, weights, start_end_states)) in place of edges, got {type(edges).__name__}")
