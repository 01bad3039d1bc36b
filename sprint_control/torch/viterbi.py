"""Viterbi over RASR's merged automata: the best path of each sequence and its frame-level alignment
(what RETURNN's FastViterbi op gives), by the compiled kernel of :mod:`sprint_control.fsa`."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import torch

from .. import fsa as _fsa
from . import triton_fullsum as _triton
from ._common import SeqLengths, seq_lengths_numpy
from ._layouts import LAYOUTS
from ._ops import non_finite_sequences
from .fullsum import compute_dtype, cpu_numpy
from .weighted_fsa import automaton_arrays

__all__ = ["Viterbi", "fullsum_viterbi"]


class Viterbi(NamedTuple):
    """``score`` (batch,) float64: the best path's ``sum_t log_probs - weight_scale * weight`` (``-inf``: no
    path); ``alignment`` (time, batch) int64: the emission label of the best path at each frame; ``edge_path``
    (time, batch) int64: the index of the edge it takes (its states are ``edges[:2, edge_path]``). Both ``-1``
    beyond each length and where there is no path."""

    score: torch.Tensor
    alignment: torch.Tensor
    edge_path: torch.Tensor


@torch.no_grad()
def fullsum_viterbi(
    log_probs: torch.Tensor,
    seq_lengths: SeqLengths,
    edges: Any,
    weights: Optional[torch.Tensor] = None,
    start_end_states: Optional[torch.Tensor] = None,
    *,
    weight_scale: float = 1.0,
    backend: str = "auto",
) -> Viterbi:
    """The best path through each sequence's automaton (same model and arguments as ``fullsum_loss``).

    Runs on the CPU (tensors elsewhere are copied there once; the results go back to ``log_probs.device``),
    sequences in parallel on ``torch.get_num_threads()`` threads. Among equally good edges into a state the one
    with the lowest index wins. Not differentiable (the alignment is a target, not a loss). ``edges`` may be the
    whole automaton (a ``WeightedFsa``, an ``Automaton``, a tuple), as in ``fullsum_loss``. ``backend``:
    ``auto`` (the Triton kernel for CUDA tensors where ``triton`` imports, else the CPU kernel), ``kernel``
    or ``triton`` (CUDA, or the CPU under ``TRITON_INTERPRET=1``; float32 scores).
    """
    if backend not in ("auto", "kernel", "triton"):
        raise ValueError(f"backend must be one of auto, kernel, triton, got {backend!r}")
    edges, weights, start_end_states = automaton_arrays(edges, weights, start_end_states, what="fullsum_viterbi")
    if log_probs.dim() != 3 or not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be a floating (time, batch, label) tensor, got {tuple(log_probs.shape)}")
    max_time, batch, _ = log_probs.shape
    lens = seq_lengths_numpy(seq_lengths, batch, max_time)
    if backend == "triton" or (backend == "auto" and log_probs.device.type == "cuda"
                               and _triton.available(log_probs.device)):
        return _triton_viterbi(log_probs, lens, edges, weights, start_end_states, weight_scale)
    x = log_probs.detach().to(device="cpu", dtype=compute_dtype(log_probs.dtype)).contiguous()
    w = cpu_numpy(torch.as_tensor(weights)).astype(np.float64)
    if weight_scale != 1.0:
        w = w * weight_scale
    score, labels, path = _fsa.viterbi(
        x.numpy(), lens, cpu_numpy(torch.as_tensor(edges)), w, cpu_numpy(torch.as_tensor(start_end_states)),
        num_threads=torch.get_num_threads(),
    )
    device = log_probs.device
    return Viterbi(torch.from_numpy(score).to(device), torch.from_numpy(labels).to(device),
                   torch.from_numpy(path).to(device))


def _triton_viterbi(log_probs, lens, edges, weights, start_end_states, weight_scale) -> Viterbi:
    """Viterbi on the device by the Triton kernel, the layout regrouped on the host; the non-finite rule as
    on the CPU (score NaN, no path)."""
    if not _triton.available(log_probs.device):
        raise ValueError("backend 'triton' needs triton and a CUDA tensor (or TRITON_INTERPRET=1 on the CPU), "
                         f"got a {log_probs.device.type} tensor")
    device = log_probs.device
    w = cpu_numpy(torch.as_tensor(weights)).astype(np.float64) * weight_scale
    e = cpu_numpy(torch.as_tensor(edges))
    layout = LAYOUTS.get(log_probs.shape, lens, e, w, cpu_numpy(torch.as_tensor(start_end_states)))
    bad = non_finite_sequences(log_probs, torch.as_tensor(lens, device=device),
                               torch.as_tensor(e[3], dtype=torch.int64, device=device),
                               torch.as_tensor(w, device=device))
    x = torch.where(bad[None, :, None], float("-inf"), log_probs.detach().to(torch.float32))
    score, labels, path = _triton.viterbi(x, layout)
    score = torch.where(bad, float("nan"), score.to(torch.float64))
    return Viterbi(score, labels, path)
