"""PyTorch bridge: RASR's sequence criteria and RASR's automata inside a PyTorch training loop.

Optional: needs ``pip install sprint_control[torch]``. Nothing else in the package imports this package,
so ``import sprint_control`` works without PyTorch.

- :func:`sprint_loss` sends ``log_softmax(logits)`` to a pool of Sprint children and returns RASR's per-sequence
  loss; its backward hands RASR's error signal (the derivative of the criterion with respect to the pre-softmax
  activations) back to ``logits`` (``criterion.py``).
- :func:`automata_for_batch` fetches RASR's merged automaton of a batch as tensors, with an optional per-segment
  LRU cache (:class:`AutomataCache`), because a training run asks for the same segments every epoch
  (``automata.py``). The automata come from a pool or, without a child, from a builder with librasr's API
  (``build_by_segment_name``); ``weighted_fsa=True`` hands them out as i6_models' ``WeightedFsa``
  (``weighted_fsa.py``: :class:`WeightedFsa` where i6_models is absent, :func:`as_weighted_fsa`).
- :func:`fullsum_loss` is a batched log-space forward-backward (Baum-Welch) over such an automaton: the compiled
  kernel of ``sprint_control.fsa`` for CPU tensors, a few fused torch ops per frame on other devices
  (``fullsum.py``, ``_ops.py``); :func:`fullsum_loss_for_batch` ties both together. :func:`fullsum_viterbi` is
  the best path over the same automata (``viterbi.py``). Both take the automaton as three arrays or as one
  object (a ``WeightedFsa``, an :class:`Automaton`, a tuple).
- :func:`lfmmi_loss` is lattice-free MMI over the same kernel: the numerator per sequence, one shared
  denominator graph (``sprint_control.fsa.denominator``) for the batch (``lfmmi.py``).

``pool`` is any object with the two batch methods of :class:`sprint_control.parent.SprintPool` /
``SprintInstancePool``: ``get_batch_loss_and_error_signal(log_posteriors, seq_lengths, tags)`` and
``get_automata_for_batch(tags)``. Only numpy arrays cross into the pool; how they travel (protocol v1/v2, shared
memory) is the pool's business.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
    from torch.autograd.function import once_differentiable  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sprint_control.torch needs PyTorch (torch>=2.0); install it with: pip install sprint_control[torch]"
    ) from exc

from .automata import AutomataCache, Automaton, automata_for_batch, automata_source
from .criterion import SprintLossFunction, sprint_loss
from .fullsum import FullSumLossFunction, fullsum_loss, fullsum_loss_for_batch
from .lfmmi import denominator_loss, lfmmi_loss
from .viterbi import Viterbi, fullsum_viterbi
from .weighted_fsa import WeightedFsa, as_weighted_fsa, weighted_fsa_type

__all__ = [
    "Automaton",
    "AutomataCache",
    "SprintLossFunction",
    "FullSumLossFunction",
    "sprint_loss",
    "automata_for_batch",
    "automata_source",
    "WeightedFsa",
    "as_weighted_fsa",
    "weighted_fsa_type",
    "fullsum_loss",
    "fullsum_loss_for_batch",
    "Viterbi",
    "fullsum_viterbi",
    "lfmmi_loss",
    "denominator_loss",
]
